"""New ARC tasks to a Kaggle submission: test-time adaptation of a pretrained TRM, in one command.

    python -m kaggle.adapt --tasks TASKS.json [--solutions SOL.json] --checkpoint PATH|hf://... --output-dir OUT \\
        [--num-aug N] [--epochs E] [--freeze-weights] [training key=value ...]

TRM answers only tasks whose puzzle embedding it learned. For tasks it never saw, this
1. builds a dataset from TASKS.json (Kaggle layout) with the published ARC builder: the tasks' train
   pairs, augmented, form the training split; their test inputs the test split (no solutions needed);
2. fine-tunes the checkpoint on it (`load_checkpoint`), with a puzzle-embedding table sized for the new
   tasks, every row starting at the mean of the loaded rows (`puzzle_emb_reset`), optionally training
   the puzzle embedding alone (`--freeze-weights`);
3. predicts the test inputs with the ARC evaluator's voting over the augmented copies and writes
   `OUT/submission.json` (every task and test input, two attempts each), and `OUT/metrics.json` with
   pass@k when `--solutions` are given.
Everything lands in OUT: `source/` (the inputs as given), `data/` (the dataset), `run/` (the fine-tuning
run: checkpoints, metrics.jsonl), `adapt.json` (inputs and finished stages). An interrupted command run
again continues: finished stages are reused and the fine-tuning resumes from its last checkpoint. Works
in one process (CUDA, CPU, MPS) and under `torchrun --nproc-per-node N -m kaggle.adapt ...`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from typing import TYPE_CHECKING

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dataset.build_arc_dataset import (
    ASSEMBLE_HINT,
    RECREATE_HINT,
    TRAIN,
    ArcBuildConfig,
    build_arc_dataset,
    convert_task,
    load_subset,
)
from dataset.tasks import arc
from evaluators.arc import SUBMISSION_FILE
from rundir.json_values import json_metrics
from rundir.layout import (
    CONFIG_FILE,
    EVAL_METRICS_FILE,
    METRICS_FILE,
    WEIGHTS_PATTERN,
    evaluator_dir,
    weight_steps,
)
from training.config import PretrainConfig, parse_config
from utils.atomic import make_dirs, read_json_if_present, write_atomically
from utils.cli import exit_with_message, new_parser, quoted
from utils.errors import CheckpointError, ConfigError, DatasetError, UserFacingError

if TYPE_CHECKING:  # torch is imported only when a run starts (the --help and input checks need none)
    from training.trained import Checkpoint

SUBSET = "adapt"  # the subset name the tasks are given under to the builder (its test set)
MANIFEST = "adapt.json"
# Defaults sized for a Kaggle-like budget: the published 1000 augmentations per task; 10000 epochs of the
# ~120 ARC-AGI-2 evaluation tasks at the published batch of 768 are about 5000 steps (estimated from the
# step formula, not timed: no GPU was at hand; reduce --epochs for a smaller budget).
DEFAULT_NUM_AUG = 1000
DEFAULT_EPOCHS = 10000
DEFAULT_WARMUP = 100  # the published 2000 warm-up steps would be most of a short adaptation


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser(
        __doc__.splitlines()[0], prog="python -m kaggle.adapt",
        epilog="Other arguments are training keys (key=value, as for pretrain.py),\n"
               "e.g. lr=1e-4 global_batch_size=384 device=cuda.")
    parser.add_argument("--tasks", required=True, help="the tasks: a Kaggle challenges JSON (task id -> {train, test})")
    parser.add_argument("--solutions", default=None,
                        help="their test outputs (task id -> list of grids), to report pass@k (default: none)")
    parser.add_argument("--checkpoint", required=True,
                        help=f"the pretrained ARC model: a {WEIGHTS_PATTERN} weights file with {CONFIG_FILE} beside "
                             f"it, a run directory (its newest {WEIGHTS_PATTERN}), or hf://OWNER/REPO/PATH/{WEIGHTS_PATTERN}")
    parser.add_argument("--output-dir", required=True, help="where everything is written (created; reused if rerun)")
    parser.add_argument("--num-aug", type=int, default=DEFAULT_NUM_AUG,
                        help="augmented copies per task, as the ARC builder's --num-aug")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                        help="fine-tuning epochs over the tasks")
    parser.add_argument("--freeze-weights", action="store_true",
                        help="train only the new puzzle embeddings (default: the whole network too)")
    parser.add_argument("--seed", type=int, default=42, help="the builder's augmentation seed")
    return parser


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = build_parser()
    args, keys = parser.parse_known_args(argv)
    bad = [k for k in keys if "=" not in k or k.startswith("-")]
    if bad:
        parser.error(f"unrecognised arguments {bad}: training keys are key=value")
    if args.num_aug < 0 or args.epochs < 1:
        parser.error("--num-aug must be >= 0 and --epochs >= 1")
    return args, keys


# ---------------------------------------------------------------------------------------------
# Stage 0: inputs, and what an earlier run into the same OUT did
# ---------------------------------------------------------------------------------------------
def file_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def read_manifest(out: str) -> dict | None:
    return read_json_if_present(os.path.join(out, MANIFEST))


def write_manifest(out: str, manifest: dict) -> None:
    write_atomically(os.path.join(out, MANIFEST), lambda f: json.dump(manifest, f, indent=1), mode="w")


def start_manifest(args: argparse.Namespace, keys: list[str]) -> dict:
    """What fixes this adaptation's outputs; an OUT holding another adaptation is refused, not mixed in."""
    for option, path in (("--tasks", args.tasks), ("--solutions", args.solutions)):
        if path is not None and not os.path.isfile(path):
            raise ConfigError(f"{option} {path} does not exist.")
    inputs = {"tasks": file_digest(args.tasks), "solutions": file_digest(args.solutions) if args.solutions else None,
              "checkpoint": args.checkpoint, "num_aug": args.num_aug, "epochs": args.epochs,
              "freeze_weights": args.freeze_weights, "seed": args.seed, "keys": keys}
    earlier = read_manifest(args.output_dir)
    if earlier is not None and earlier["inputs"] != inputs:
        changed = sorted(k for k in inputs if earlier["inputs"].get(k) != inputs[k])
        raise ConfigError(f"{args.output_dir} holds an adaptation with other inputs ({', '.join(changed)}): "
                          "give another --output-dir, or the same inputs to continue it.")
    if earlier is None and os.path.isdir(args.output_dir) and os.listdir(args.output_dir):
        raise ConfigError(f"{args.output_dir} is not empty and holds no {MANIFEST}: give a new or empty --output-dir "
                          "(nothing there is overwritten).")
    return earlier or {"inputs": inputs, "stages": []}


def copy_sources(args: argparse.Namespace, directory: str) -> str:
    """The inputs under the builder's Kaggle names in `directory`; returns its --input-file-prefix."""
    prefix = os.path.join(directory, "arc-agi")
    make_dirs(directory)
    for kind, path in (("challenges", args.tasks), ("solutions", args.solutions)):
        if path is not None:
            with open(path, "rb") as f:
                data = f.read()
            write_atomically(f"{prefix}_{SUBSET}_{kind}.json", lambda f, data=data: f.write(data))
    return prefix


def check_tasks(args: argparse.Namespace) -> int:
    """Read and check the tasks as the builder will (malformed JSON, a grid over 30x30, bad colours), before
    anything is written to OUT: a copy under the names it reads, in a temporary directory. Returns the examples
    one epoch draws: one augmented version of each task, as many as its train pairs."""
    with tempfile.TemporaryDirectory(prefix="adapt-check-") as scratch:
        prefix = copy_sources(args, scratch)
        try:
            subset = load_subset(prefix, SUBSET, is_test_set=True)
            per_epoch = sum(len(convert_task(task_id, task, subset.is_test_set, subset.path).pairs.get(TRAIN, []))
                            for task_id, task in subset.tasks)  # the conversion checks grid sizes and colours
        except DatasetError as err:  # name the user's files, not the scratch copies
            message = str(err)
            for hint in (ASSEMBLE_HINT, RECREATE_HINT):
                message = message.replace(hint, "fix the file (Kaggle layout: task id -> {train, test})")
            for kind, path in (("challenges", args.tasks), ("solutions", args.solutions)):
                message = message.replace(f"{prefix}_{SUBSET}_{kind}.json", str(path))
            raise ConfigError(message.replace(f"ARC subset {SUBSET!r} ", "")) from None
    if args.solutions:
        with open(args.tasks) as f:
            task_ids = set(json.load(f))
        with open(args.solutions) as f:
            stray = sorted(set(json.load(f)) - task_ids)
        if stray:
            raise ConfigError(f"{args.solutions} has solutions of tasks not in --tasks {args.tasks}: "
                              f"{', '.join(stray[:5])}{' ...' if len(stray) > 5 else ''}; give the solutions "
                              "file of these tasks")
    return per_epoch


def check_some_step_trains(args: argparse.Namespace, config: PretrainConfig, per_epoch: int) -> None:
    """Refuse epochs that draw less than one batch: not one step would train, and the submission would be the
    unadapted model's."""
    drawn, batch = args.epochs * per_epoch, config.global_batch_size
    if drawn < batch:
        raise ConfigError(f"--epochs {args.epochs} gives no fine-tuning step: the tasks have {per_epoch} train pairs, "
                          f"so {args.epochs} epochs draw {drawn} examples, less than one batch "
                          f"(global_batch_size={batch}): give --epochs {-(-batch // max(1, per_epoch))} or more, "
                          f"or global_batch_size={drawn} or less.")


def note_short_fine_tuning(config: PretrainConfig, epochs: int) -> None:
    """Say so when the lr warm-up outlasts the fine-tuning: the lr never reaches `lr`, and the few steps barely move
    the model (1 step of a 100-step warm-up trains at lr/100)."""
    from training.data import fewest_examples_per_epoch
    steps = epochs * fewest_examples_per_epoch(config.data_paths) // config.global_batch_size  # at most
    if steps < config.lr_warmup_steps:
        print(f"      note: {steps} step(s), within the lr warm-up of {config.lr_warmup_steps}: the lr never reaches "
              f"lr={config.lr:g}; give more --epochs, or lr_warmup_steps={max(1, steps // 10)}")


# ---------------------------------------------------------------------------------------------
# Stage 1-3
# ---------------------------------------------------------------------------------------------
def build_data(prefix: str, out: str, args: argparse.Namespace) -> str:
    data_dir = os.path.join(out, "data")
    build_arc_dataset(ArcBuildConfig(input_file_prefix=prefix, output_dir=data_dir, subsets=[SUBSET],
                                     test_set_name=SUBSET, num_aug=args.num_aug, seed=args.seed),
                      note_missing_solutions=False)  # no --solutions: unknown test outputs are the point
    return data_dir


def pretrained_checkpoint(checkpoint: str) -> Checkpoint:
    """The pretrained checkpoint with its training config; an error unless it is an ARC model."""
    from models.weights import weights_vocab_size
    from training.trained import open_checkpoint, read_weights
    pretrained = open_checkpoint(checkpoint)
    vocab = weights_vocab_size(read_weights(pretrained.weights))
    if vocab != arc.VOCAB_SIZE:
        raise CheckpointError(f"{pretrained.weights} is not an ARC model (its token vocabulary is {vocab}, ARC's is "
                              f"{arc.VOCAB_SIZE}): adaptation to ARC tasks needs a checkpoint trained on ARC.")
    return pretrained


def adaptation_config(args: argparse.Namespace, keys: list[str], pretrained: Checkpoint,
                      data_dir: str) -> PretrainConfig:
    """The checkpoint's own training config (its model and hyperparameters) pointed at the new tasks."""
    raw = pretrained.config.model_dump()
    raw.update(
        data_paths=[data_dir], data_paths_test=[], evaluators=[{"name": "arc@ARC"}],
        epochs=args.epochs, eval_interval=args.epochs, min_eval_interval=0, checkpoint_every_eval=True,
        load_checkpoint=pretrained.weights, puzzle_emb_reset=True, freeze_weights=args.freeze_weights,
        checkpoint_path=os.path.join(args.output_dir, "run"), project_name="kaggle-adapt", run_name="adapt",
        resume="auto", lr_warmup_steps=DEFAULT_WARMUP, generate_if_missing=None, stop_at_step=None,
        eval_save_outputs=[], pictures=False, eval_tta=0, checkpoint_best_metric=None,
    )
    try:
        overrides = OmegaConf.to_container(OmegaConf.from_dotlist(keys), resolve=True)
    except OmegaConfBaseException as err:
        raise ConfigError(f"Cannot parse the training keys {keys}: {err}") from None
    merged = OmegaConf.to_container(OmegaConf.merge(OmegaConf.create(raw), OmegaConf.create(overrides)))
    return parse_config(merged)


def final_submission(run_dir: str) -> tuple[str, int]:
    """The ARC evaluator's submission of the run's last evaluation, and its step."""
    found = sorted((step, evaluator_dir(run_dir, "ARC", step)) for step in weight_steps(run_dir)
                   if os.path.isfile(os.path.join(evaluator_dir(run_dir, "ARC", step), SUBMISSION_FILE)))
    if not found:
        raise CheckpointError(f"{run_dir} holds no ARC evaluation: the fine-tuning ended before evaluating.")
    step, path = found[-1]
    return os.path.join(path, SUBMISSION_FILE), step


def logged_scores(run_dir: str, step: int) -> dict:
    scores = {}
    with open(os.path.join(run_dir, METRICS_FILE)) as f:
        for line in f:
            record = json.loads(line)
            if record.get("step") == step:
                scores.update({k: v for k, v in record.items() if k.startswith("ARC/")})
    return scores


def write_outputs(out: str, run_dir: str, last_eval: dict | None, has_solutions: bool) -> None:
    source, step = final_submission(run_dir)
    with open(source, "rb") as f:
        submission = f.read()
    write_atomically(os.path.join(out, SUBMISSION_FILE), lambda f: f.write(submission))
    scores = {k: v for k, v in (last_eval or {}).items() if k.startswith("ARC/")}
    if not scores:  # resumed after the final evaluation: its scores are in the run's log
        scores = logged_scores(run_dir, step)
    metrics = {"step": step, **scores}
    if not has_solutions:
        metrics = {"step": step, "note": "no --solutions: pass@k not computed"}
    write_atomically(os.path.join(out, EVAL_METRICS_FILE),
                     lambda f: json.dump(json_metrics(metrics)[0], f, indent=1, allow_nan=False), mode="w")


def prepare(args: argparse.Namespace, keys: list[str]) -> tuple[dict, tuple[str, str]]:
    """Stage 1 (rank 0): check every input, then copy the tasks into OUT and build their dataset.
    Returns the manifest and the pretrained checkpoint."""
    manifest = start_manifest(args, keys)
    per_epoch = check_tasks(args)
    pretrained = pretrained_checkpoint(args.checkpoint)  # an ARC model with its config, before OUT is written to
    out = args.output_dir
    try:  # every training key, before OUT is written to either
        config = adaptation_config(args, keys, pretrained, os.path.join(out, "data"))
    except ConfigError as err:
        raise ConfigError(" ".join(line.strip() for line in str(err).splitlines())) from None
    check_some_step_trains(args, config, per_epoch)
    make_dirs(out)
    write_manifest(out, manifest)
    print(f"[1/3] Building the tasks' dataset in {quoted(os.path.join(out, 'data'))}")
    prefix = copy_sources(args, os.path.join(out, "source"))
    if "data" in manifest["stages"]:
        print("      (built by an earlier run: reused)")
    else:
        build_data(prefix, out, args)
        manifest["stages"].append("data")
        write_manifest(out, manifest)
    return manifest, pretrained


def adapt(args: argparse.Namespace, keys: list[str]) -> dict:
    """All stages, skipping those an earlier run into OUT finished; returns the metrics written (rank 0)."""
    from training.loop import train_until_stopped
    from utils.distributed import broadcast_object, destroy_distributed, init_distributed

    out = args.output_dir
    device = next((k.split("=", 1)[1] for k in keys if k.startswith("device=")), "auto")
    ctx = init_distributed(device)
    try:
        manifest, error, pretrained = None, None, None
        if ctx.is_main:  # inputs, checks and the dataset: once, before the other ranks read them
            try:
                manifest, pretrained = prepare(args, keys)
            except UserFacingError as err:
                error = err
        error, manifest = broadcast_object((error, manifest), ctx)
        if error is not None:
            raise error
        if "submission" in manifest["stages"]:
            if ctx.is_main:
                print(f"Already complete: {quoted(os.path.join(out, SUBMISSION_FILE))}")
            with open(os.path.join(out, EVAL_METRICS_FILE)) as f:
                return json.load(f)
        # Every rank resolves the checkpoint itself (a hub download lands in each machine's own cache).
        pretrained = pretrained if pretrained is not None else pretrained_checkpoint(args.checkpoint)
        config = adaptation_config(args, keys, pretrained, os.path.join(out, "data"))
        if ctx.is_main:
            print(f"[2/3] Fine-tuning {quoted(pretrained.weights)} on the tasks ({args.epochs} epochs) "
                  f"in {quoted(config.checkpoint_path)}")
            note_short_fine_tuning(config, args.epochs)
        outcome = train_until_stopped(config, ctx)
        if not ctx.is_main:
            return {}
        if not outcome.finished:  # a signal (or stop_at_step): the state is saved, as pretrain.py's stop
            print(f"Fine-tuning interrupted; rerun the same command to continue (it resumes from the state saved "
                  f"in {quoted(config.checkpoint_path)})")
            return {}
        last_eval = outcome.last_eval
        print(f"[3/3] Writing {quoted(os.path.join(out, SUBMISSION_FILE))}")
        write_outputs(out, config.checkpoint_path, last_eval, args.solutions is not None)
        manifest["stages"] = sorted(set(manifest["stages"]) | {"adapt", "submission"})
        write_manifest(out, manifest)
        with open(os.path.join(out, EVAL_METRICS_FILE)) as f:
            metrics = json.load(f)
        print(f"submission: {quoted(os.path.join(out, SUBMISSION_FILE))}")
        scores = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
        print(f"metrics: {quoted(os.path.join(out, EVAL_METRICS_FILE))}  {scores}")
        print(f"run: {quoted(config.checkpoint_path)}")
        return metrics
    finally:
        destroy_distributed(ctx)


def main(argv: list[str] | None = None) -> None:
    args, keys = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        adapt(args, keys)
    except (UserFacingError, FileNotFoundError) as err:
        exit_with_message(err)


if __name__ == "__main__":
    main()
