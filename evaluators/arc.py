"""ARC evaluator (`arc@ARC`, docs/arc-evaluator.md): vote over augmentations, pass@k, Kaggle `submission.json`.

Every non-blank test example's prediction is cropped to its grid, the augmentation named in its
puzzle identifier is undone, and the result is recorded as one vote (with its halting confidence
sigmoid(q_halt)) for the (task, de-augmented test input) it answers. `result()` pools the votes of
all ranks, ranks the candidate grids of each test input by (vote count, mean confidence) and scores
pass@k per task.

Differences from the published evaluator, none of which change a score:
* No torch.distributed is needed in a single process; under torchrun votes go to rank 0 with
  `gather_object`.
* Crop and de-augmentation are vectorised over the whole batch (the published code crops with a
  Python loop over up to 900 cells per grid). A grid is identified by its exact bytes
  `[rows, cols] + cells` (what the published sha256 is taken over), so there are no collisions.
* Votes of tasks that are not in `test_puzzles.json` are not kept (the published code keeps them
  but never reads them).
* Every task and every test input gets a submission entry; one without predictions (or whose top
  candidate is an empty grid) gets `[[0]]`, so the file is always valid for Kaggle.
"""
from __future__ import annotations

import functools
import json
import os
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist

from dataset.common import PuzzleDatasetMetadata, write_json
from dataset.tasks.arc import COLOUR_OFFSET, GRID_SIZE, NAME_SEPARATOR, NUM_COLOURS, SEQ_LEN, parse_augmentation
from dataset.tasks.dihedral import DIHEDRAL_INVERSE, NUM_DIHEDRAL, TRANSPOSING, dihedral_transform
from utils.atomic import make_dirs
from utils.errors import ConfigError

KEY_HEADER = 2  # a grid key starts with the bytes [rows, cols]
SUBMISSION_FILE = "submission.json"  # in the evaluator's directory of each evaluation
EMPTY_SUBMISSION_GRID = [[0]]  # Kaggle needs a non-empty grid for every attempt
# What a rank sends to rank 0: (grid keys by local id, votes (n, 3), confidences (n,)).
Payload = tuple[list[bytes], np.ndarray, np.ndarray]
BUILD_HINT = ("build it with `python -m dataset.build_arc_dataset`; the ARC evaluator only works on ARC datasets "
              "(use evaluators=[] for Sudoku, Maze and other tasks)")


# ---------------------------------------------------------------------------------------------
# Grids: crop, de-augment, key
# ---------------------------------------------------------------------------------------------
def crop_shapes(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the largest top-left rectangle of colour tokens (2..11) of each 30x30 grid.

    The published crop scans rows top-down; at each row the usable width shrinks to the first
    non-colour token, and the rectangle of maximal area wins (the first one on ties, 0x0 if none).
    The usable width after row r is the running minimum of the rows' leading colour runs.
    """
    grids = tokens.reshape(-1, GRID_SIZE, GRID_SIZE)
    is_colour = (grids >= COLOUR_OFFSET) & (grids < COLOUR_OFFSET + NUM_COLOURS)
    leading = np.where(is_colour.all(axis=-1), GRID_SIZE, np.argmin(is_colour, axis=-1))
    width = np.minimum.accumulate(leading, axis=1)
    area = width * np.arange(1, GRID_SIZE + 1)
    best = np.argmax(area, axis=1)
    best_width = width[np.arange(len(grids)), best]
    found = best_width > 0
    return np.where(found, best + 1, 0), np.where(found, best_width, 0)


_IS_TRANSPOSING = np.isin(np.arange(NUM_DIHEDRAL), TRANSPOSING)  # indexed by transform id


@functools.lru_cache(maxsize=1)
def _source_table() -> np.ndarray:
    """(8, 31, 31, 900) int16: [t, r, c, k] = canvas cell that output cell k of transform t of an r x c crop reads.

    Built once (about 14 MB) by transforming the canvas cell indices of every crop size, so de-augmenting a
    batch is two gathers instead of index arithmetic on every cell. Cells past the r x c output are 0; the
    keys never include them.
    """
    canvas_cells = np.arange(SEQ_LEN, dtype=np.int16).reshape(GRID_SIZE, GRID_SIZE)
    table = np.zeros((NUM_DIHEDRAL, GRID_SIZE + 1, GRID_SIZE + 1, SEQ_LEN), dtype=np.int16)
    for t in range(NUM_DIHEDRAL):
        for r in range(1, GRID_SIZE + 1):
            for c in range(1, GRID_SIZE + 1):
                table[t, r, c, :r * c] = dihedral_transform(canvas_cells[:r, :c], t).reshape(-1)
    return table


def canonical_keys(tokens: np.ndarray, trans: np.ndarray, inverse_maps: np.ndarray) -> list[bytes]:
    """Crop each grid, undo its augmentation (inverse dihedral, inverse colour map), return its key.

    tokens (N, 900), trans (N,) augmentation ids, inverse_maps (N, 10). The key of an r x c grid is
    the bytes `[r, c] + cells` (row-major), the exact input of the published grid hash.
    """
    n = len(tokens)
    vocab = COLOUR_OFFSET + NUM_COLOURS
    # One pass to uint8: token ids past the vocabulary (or negative) are not colours either way.
    tokens = np.clip(tokens.reshape(n, SEQ_LEN), 0, vocab).astype(np.uint8)
    rows, cols = crop_shapes(tokens)
    undo = np.asarray(DIHEDRAL_INVERSE)[trans]
    # Token t of row b becomes lut[b, t]: colour tokens through the inverse colour map, others 0
    # (only cells inside the crop reach the key, and those are colour tokens).
    lut = np.zeros((n, vocab + 1), dtype=np.uint8)
    lut[:, COLOUR_OFFSET:vocab] = inverse_maps
    row_base = np.arange(n)[:, None]
    gathered = np.take(tokens, _source_table()[undo, rows, cols] + row_base * SEQ_LEN)
    cells = np.take(lut, gathered + row_base * (vocab + 1))

    out_rows, out_cols = np.where(_IS_TRANSPOSING[undo], cols, rows), np.where(_IS_TRANSPOSING[undo], rows, cols)
    keys = np.empty((n, KEY_HEADER + SEQ_LEN), dtype=np.uint8)
    keys[:, 0], keys[:, 1], keys[:, KEY_HEADER:] = out_rows, out_cols, cells
    blob, width = keys.tobytes(), KEY_HEADER + SEQ_LEN
    lengths = (KEY_HEADER + out_rows * out_cols).tolist()
    return [blob[k * width:k * width + length] for k, length in enumerate(lengths)]


def grid_key(grid: Any) -> bytes:
    """Key of a raw ARC grid (list of rows of colours)."""
    array = np.asarray(grid, dtype=np.uint8)
    if array.ndim != 2:
        raise ValueError(f"an ARC grid must be a 2-D list of colours, got shape {array.shape}")
    return bytes(array.shape) + array.tobytes()


def key_to_grid(key: bytes) -> list[list[int]]:
    rows, cols = key[0], key[1]
    cells = list(key[KEY_HEADER:])
    return [cells[r * cols:(r + 1) * cols] for r in range(rows)]


# ---------------------------------------------------------------------------------------------
# The evaluator
# ---------------------------------------------------------------------------------------------
class ARC:
    """Scores ARC test predictions by augmentation voting; see the module docstring."""

    required_outputs = {"inputs", "puzzle_identifiers", "q_halt_logits", "preds"}
    # Published: a test task without a single vote scores 0. The loop sets False under max_eval_examples, which
    # evaluates only some tasks (whole): pass@k is then over the tasks evaluated.
    scores_unseen_tasks = True

    def __init__(self, data_path: str, eval_metadata: PuzzleDatasetMetadata, submission_K: int = 2,
                 pass_Ks: Sequence[int] = (1, 2, 5, 10, 100, 1000), aggregated_voting: bool = True):
        if eval_metadata.seq_len != SEQ_LEN:
            raise ConfigError(f"The ARC evaluator needs 30x30 grids (seq_len {SEQ_LEN}); {data_path} has seq_len "
                              f"{eval_metadata.seq_len}. Use evaluators=[] for non-ARC datasets.")
        if submission_K < 1 or not pass_Ks or min(pass_Ks) < 1:
            raise ConfigError(f"ARC evaluator: submission_K ({submission_K}) and every pass_K ({list(pass_Ks)}) "
                              "must be >= 1")
        self.submission_K = submission_K
        self.pass_Ks = tuple(pass_Ks)
        self.aggregated_voting = aggregated_voting
        self.blank_identifier_id = eval_metadata.blank_identifier_id

        self.test_puzzles = _read_json(os.path.join(data_path, "test_puzzles.json"))
        self.task_names = list(self.test_puzzles)
        self._load_identifiers(_read_json(os.path.join(data_path, "identifiers.json")))
        _source_table()  # built once here rather than inside the first evaluation
        self._reset()

    def _load_identifiers(self, names: list[str]) -> None:
        """Per identifier: index of its task in test_puzzles (-1 if none), its dihedral id, inverse colour map."""
        task_index = {name: k for k, name in enumerate(self.task_names)}
        self._task_of_id = np.full(len(names), -1, dtype=np.int64)
        self._trans_of_id = np.zeros(len(names), dtype=np.int64)
        self._inverse_map_of_id = np.tile(np.arange(NUM_COLOURS, dtype=np.uint8), (len(names), 1))
        for identifier, name in enumerate(names):
            task = name.split(NAME_SEPARATOR, 1)[0]
            if identifier == self.blank_identifier_id or task not in task_index:
                continue  # only test tasks are scored
            _, self._trans_of_id[identifier], self._inverse_map_of_id[identifier] = parse_augmentation(name)
            self._task_of_id[identifier] = task_index[task]

    def _reset(self) -> None:
        self._grid_ids: dict[bytes, int] = {}  # grid key -> local id (interned: votes store ids)
        self._votes: list[np.ndarray] = []  # per batch: (n, 3) int64 (task, input id, prediction id)
        self._confidences: list[np.ndarray] = []  # per batch: (n,) float64 sigmoid(q_halt)

    def begin_eval(self) -> None:
        # Published: with aggregated_voting the votes of earlier evaluations are kept.
        if not self.aggregated_voting:
            self._reset()

    def _intern(self, keys: list[bytes]) -> np.ndarray:
        ids = self._grid_ids
        return np.array([ids.setdefault(key, len(ids)) for key in keys], dtype=np.int64)

    def update_batch(self, batch: dict[str, torch.Tensor], preds: dict[str, torch.Tensor]) -> None:
        """Record one vote per non-blank example of a test task (inputs/identifiers from `batch` or `preds`)."""
        outputs = {**batch, **preds}
        missing = self.required_outputs - outputs.keys()
        if missing:
            raise KeyError(f"ARC.update_batch needs {sorted(missing)} (have {sorted(outputs)})")
        identifiers = outputs["puzzle_identifiers"].cpu().numpy().astype(np.int64)
        if identifiers.size and (identifiers.min() < 0 or identifiers.max() >= len(self._task_of_id)):
            raise ValueError(f"puzzle identifier {identifiers.max()} is not in identifiers.json "
                             f"({len(self._task_of_id)} names): the batch comes from another dataset.")
        keep = (identifiers != self.blank_identifier_id) & (self._task_of_id[identifiers] >= 0)
        if not keep.any():
            return
        identifiers = identifiers[keep]
        # float64 on the CPU: MPS has no float64.
        confidence = torch.sigmoid(outputs["q_halt_logits"].detach().cpu().to(torch.float64)).numpy()[keep]
        trans, inverse_maps = self._trans_of_id[identifiers], self._inverse_map_of_id[identifiers]
        input_ids = self._intern(canonical_keys(outputs["inputs"].cpu().numpy()[keep], trans, inverse_maps))
        pred_ids = self._intern(canonical_keys(outputs["preds"].cpu().numpy()[keep], trans, inverse_maps))
        self._votes.append(np.stack([self._task_of_id[identifiers], input_ids, pred_ids], axis=1))
        self._confidences.append(confidence)

    def _local_payload(self) -> Payload:
        votes = np.concatenate(self._votes) if self._votes else np.zeros((0, 3), dtype=np.int64)
        confidences = np.concatenate(self._confidences) if self._confidences else np.zeros(0)
        return list(self._grid_ids), votes, confidences

    def result(self, save_path: str | None, rank: int, world_size: int, group: Any = None) -> dict | None:
        """Pool every rank's votes on rank 0, score pass@k and write `save_path/submission.json`."""
        payloads = _gather_to_main(self._local_payload(), rank, world_size, group)
        if rank != 0:
            return None
        grid_keys, votes, confidences = _merge_payloads(payloads)
        grid_ids = {key: k for k, key in enumerate(grid_keys)}
        candidates = rank_candidates(votes, confidences)

        scores = np.zeros(len(self.pass_Ks))
        submission = {}
        seen = set(votes[:, 0].tolist())
        scored = {k for k in range(len(self.task_names)) if self.scores_unseen_tasks or k in seen}
        for task_index, name in enumerate(self.task_names):
            pairs = self.test_puzzles[name]["test"]
            passed = np.zeros(len(self.pass_Ks))
            submission[name] = []
            for pair in pairs:
                input_id = grid_ids.get(grid_key(pair["input"]), -1)
                ranked = candidates.get((task_index, input_id), np.zeros(0, dtype=np.int64))
                label_id = grid_ids.get(grid_key(pair["output"]), -1)
                hits = np.flatnonzero(ranked == label_id)
                if hits.size:
                    passed += hits[0] < np.array(self.pass_Ks)
                submission[name].append(self._attempts(ranked, grid_keys))
            if task_index in scored:
                scores += passed / len(pairs)

        if save_path is not None:
            make_dirs(save_path)
            write_json(os.path.join(save_path, SUBMISSION_FILE), submission)
        num_tasks = max(len(scored), 1)
        return {f"ARC/pass@{k}": float(score / num_tasks) for k, score in zip(self.pass_Ks, scores)}

    def _attempts(self, ranked: np.ndarray, grid_keys: list[bytes]) -> dict[str, list[list[int]]]:
        """Top submission_K candidates, padded with the first (published); [[0]] where there is none."""
        grids = [key_to_grid(grid_keys[k]) for k in ranked[:self.submission_K]] or [EMPTY_SUBMISSION_GRID]
        grids += [grids[0]] * (self.submission_K - len(grids))
        return {f"attempt_{k + 1}": grid or EMPTY_SUBMISSION_GRID for k, grid in enumerate(grids)}


def rank_candidates(votes: np.ndarray, confidences: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
    """(task, input id) -> prediction ids, best first: by vote count, then mean confidence, then first vote.

    The published evaluator sorts a dict in first-vote order with a stable sort on (count, mean q)
    descending, so exact ties keep first-vote order. Confidences are summed in vote order
    (bincount adds sequentially), as its running `+=` did, so the means are bit-identical.
    """
    if len(votes) == 0:
        return {}
    # Group equal (task, input, prediction) votes; lexsort is stable, so each group keeps vote order.
    by_vote = np.lexsort((votes[:, 2], votes[:, 1], votes[:, 0]))
    sorted_votes = votes[by_vote]
    is_new = np.r_[True, np.any(sorted_votes[1:] != sorted_votes[:-1], axis=1)]
    starts = np.flatnonzero(is_new)
    unique, first = sorted_votes[starts], by_vote[starts]
    counts = np.diff(np.r_[starts, len(votes)])
    group = np.empty(len(votes), dtype=np.int64)
    group[by_vote] = np.cumsum(is_new) - 1
    mean = np.bincount(group, weights=confidences, minlength=len(unique)) / counts
    order = np.lexsort((first, -mean, -counts, unique[:, 1], unique[:, 0]))
    ranked = unique[order]
    starts = np.flatnonzero(np.r_[True, np.any(ranked[1:, :2] != ranked[:-1, :2], axis=1)])
    ends = np.r_[starts[1:], len(ranked)]
    return {(int(ranked[s, 0]), int(ranked[s, 1])): ranked[s:e, 2] for s, e in zip(starts, ends)}


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
def _read_json(path: str) -> Any:
    if not os.path.isfile(path):
        raise ConfigError(f"ARC evaluator: {path} not found; {BUILD_HINT}.")
    with open(path) as f:
        return json.load(f)


def _gather_to_main(payload: Any, rank: int, world_size: int, group: Any) -> list[Any] | None:
    """Every rank's payload on rank 0 (in rank order); a single process needs no torch.distributed."""
    if world_size <= 1:
        return [payload]
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(f"ARC.result: world_size={world_size} but torch.distributed is not initialised "
                           "(launch with torchrun, or pass world_size=1)")
    gathered = [None] * world_size if rank == 0 else None
    dist.gather_object(payload, gathered, dst=0, group=group)
    return gathered


def _merge_payloads(payloads: list[Payload]) -> Payload:
    """One grid table for all ranks; votes re-numbered into it and concatenated in rank order."""
    grid_ids: dict[bytes, int] = {}
    all_votes, all_confidences = [], []
    for keys, votes, confidences in payloads:
        remap = np.array([grid_ids.setdefault(key, len(grid_ids)) for key in keys], dtype=np.int64)
        if len(votes):
            all_votes.append(np.stack([votes[:, 0], remap[votes[:, 1]], remap[votes[:, 2]]], axis=1))
            all_confidences.append(confidences)
    votes = np.concatenate(all_votes) if all_votes else np.zeros((0, 3), dtype=np.int64)
    confidences = np.concatenate(all_confidences) if all_confidences else np.zeros(0)
    return list(grid_ids), votes, confidences
