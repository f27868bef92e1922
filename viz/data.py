"""The rows a picture shows: one split of a built dataset, and the outputs an evaluation saved, matched.

A split is read as the test loader reads it (all sets concatenated in `metadata.sets` order;
docs/data-format.md). Saved outputs (`step_N_all_preds.R`, written with eval_save_outputs) are
matched to dataset examples by their inputs when they carry them, else by position.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from dataset.common import IGNORE_LABEL_ID, PuzzleDatasetMetadata, load_metadata
from dataset.tasks import task_of
from dataset.validation import open_set
from rundir.layout import EVAL_DIR_PREFIX, OUTPUTS_PATTERN, outputs_name, outputs_path, outputs_steps

OUTPUTS_HINT = ("save them in training with eval_save_outputs=[inputs,labels,puzzle_identifiers,preds], or with "
                "evaluate.py save_outputs=[inputs,labels,puzzle_identifiers,preds]")


# ---------------------------------------------------------------------------------------------
# Dataset reading
# ---------------------------------------------------------------------------------------------
def detect_task(metadata: PuzzleDatasetMetadata) -> str:
    """ARC, Sudoku or Maze by their encodings (dataset.tasks); anything else (e.g. the copy task) is generic."""
    return task_of(metadata.vocab_size, metadata.seq_len)


@dataclass
class SplitData:
    """One split of a built dataset, all sets concatenated in `metadata.sets` order (the test loader's order)."""

    dataset_dir: str
    split: str
    metadata: PuzzleDatasetMetadata
    task: str  # detected from the encoding (detect_task)
    inputs: np.ndarray
    labels: np.ndarray
    identifiers: np.ndarray  # (N,) puzzle identifier of every example
    names: Optional[list[str]]  # identifiers.json (None when absent)


def _open_set(dataset_dir: str, split: str, set_name: str, metadata: PuzzleDatasetMetadata) -> dict[str, np.ndarray]:
    """The set's arrays as the loader opens them (token arrays memory-mapped: an ARC split holds hundreds of
    thousands of rows and we show a handful), so a missing, truncated or mismatched file is named the same way."""
    arrays = open_set(dataset_dir, split, set_name, metadata, scan_values=False)
    # Per-example identifiers: each puzzle's identifier repeated over its examples.
    arrays["example_identifiers"] = np.repeat(arrays["puzzle_identifiers"], np.diff(arrays["puzzle_indices"]))
    return arrays


def _load_names(dataset_dir: str) -> Optional[list[str]]:
    path = os.path.join(dataset_dir, "identifiers.json")
    if not os.path.isfile(path):
        return None
    with open(path, "r") as f:
        return json.load(f)


def load_split(dataset_dir: str, split: str = "test") -> SplitData:
    """Read one split (errors name the missing directory or file and how to build it)."""
    metadata = load_metadata(dataset_dir, split)
    inputs, labels, identifiers = [], [], []
    for set_name in metadata.sets:
        arrays = _open_set(dataset_dir, split, set_name, metadata)
        inputs.append(arrays["inputs"])
        labels.append(arrays["labels"])
        identifiers.append(arrays["example_identifiers"])
    if len(metadata.sets) == 1:  # keep the memory map
        inputs, labels, identifiers = inputs[0], labels[0], identifiers[0]
    else:
        inputs, labels, identifiers = (np.concatenate(a) for a in (inputs, labels, identifiers))
    return SplitData(dataset_dir, split, metadata, detect_task(metadata), inputs, labels, identifiers,
                     _load_names(dataset_dir))


# ---------------------------------------------------------------------------------------------
# Saved outputs (evaluation with eval_save_outputs, or evaluate.py save_outputs=[...])
# ---------------------------------------------------------------------------------------------
def find_outputs_file(path: str) -> str:
    """A saved-outputs file; for a run directory the rank-0 file of its latest step, from training's evaluations
    or else from evaluate.py's output folders in it (`eval_step_N...`, the most recently written of the latest step)."""
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        raise FileNotFoundError(f"Outputs {path!r} not found; pass a {OUTPUTS_PATTERN} file or the run directory.")
    steps = outputs_steps(path, rank=0)
    if steps:
        return outputs_path(path, steps[-1], 0)
    found = [(step, os.path.getmtime(outputs_path(folder, step, 0)), outputs_path(folder, step, 0))
             for folder in evaluate_folders(path) for step in outputs_steps(folder, 0)]
    if not found:
        raise FileNotFoundError(f"No {outputs_name('N', 0)} file in {path!r} or in its {EVAL_DIR_PREFIX}* folders; "
                                f"{OUTPUTS_HINT}.")
    return max(found)[2]


def evaluate_folders(run_dir: str) -> list[str]:
    """evaluate.py's default output folders in a run directory (eval_step_N, eval_step_N+tta8, ...)."""
    return sorted(os.path.join(run_dir, name) for name in os.listdir(run_dir)
                  if name.startswith(EVAL_DIR_PREFIX) and os.path.isdir(os.path.join(run_dir, name)))


def _to_numpy(value: Any) -> Any:
    """Tensors -> numpy (on the CPU); anything else unchanged."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy()
    return value


def load_outputs(path: str) -> dict[str, np.ndarray]:
    """Read a torch.save'd dict of tensors (a rank's outputs file) as numpy arrays."""
    from rundir.states import safe_load  # here, not at the top: only reading a saved file needs torch (slow to import)

    file_path = find_outputs_file(path)
    raw = safe_load(file_path, what="saved outputs",
                    fix=f"Give a {outputs_name('N', 0)} file written by evaluate.py or training ({OUTPUTS_HINT}).")
    if not isinstance(raw, dict):
        raise ValueError(f"Saved outputs {file_path!r} hold a {type(raw).__name__}, expected a dict of tensors.")
    return {key: _to_numpy(value) for key, value in raw.items()}


def _check_outputs(outputs: dict, data: SplitData) -> dict[str, np.ndarray]:
    """Reject outputs that cannot belong to this dataset (missing preds, other shape, other vocabulary)."""
    outputs = {k: _to_numpy(v) for k, v in outputs.items()}
    if "preds" not in outputs:
        raise ValueError(f"The outputs hold no 'preds' (keys: {sorted(outputs)}); {OUTPUTS_HINT}.")
    preds = np.asarray(outputs["preds"])
    seq_len, vocab = data.metadata.seq_len, data.metadata.vocab_size
    where = f"the {data.split} split of {data.dataset_dir!r} (seq_len {seq_len}, vocab {vocab})"
    if preds.ndim != 2 or preds.shape[1] != seq_len:
        raise ValueError(f"The outputs do not match {where}: preds have shape {preds.shape}, expected (N, {seq_len}).")
    checked = {"preds": preds}
    for key in ("inputs", "labels", "puzzle_identifiers"):
        if key in outputs:
            value = np.asarray(outputs[key])
            if value.shape[0] != preds.shape[0]:
                raise ValueError(f"The outputs are inconsistent: {key} has {value.shape[0]} rows, "
                                 f"preds {preds.shape[0]}.")
            checked[key] = value
    inputs = checked.get("inputs")
    if inputs is not None and (inputs.shape[1:] != (seq_len,) or inputs.max(initial=0) >= vocab):
        raise ValueError(f"The outputs do not match {where}: their inputs have shape {inputs.shape} "
                         f"and tokens up to {inputs.max(initial=0)}.")
    return checked


def _restore_ignored(labels: np.ndarray, metadata: PuzzleDatasetMetadata) -> np.ndarray:
    """The loader turns ignored labels into -100; put the on-disk token back so they draw as padding."""
    fill = metadata.ignore_label_id if metadata.ignore_label_id is not None else metadata.pad_id
    return np.where(labels == IGNORE_LABEL_ID, fill, labels)


class _RowLookup:
    """Finds the dataset example whose inputs equal a given row (built once, only when needed)."""

    def __init__(self, inputs: np.ndarray):
        self._inputs = inputs
        self._index: Optional[dict[bytes, int]] = None

    def find(self, row: np.ndarray, guess: int) -> int:
        """Index of `row` in the dataset, trying `guess` (same position) first; -1 if absent."""
        row = row.astype(self._inputs.dtype)
        if guess < self._inputs.shape[0] and np.array_equal(self._inputs[guess], row):
            return guess
        if self._index is None:
            # First row found only elsewhere (e.g. outputs of another rank): index every row once.
            self._index = {}
            for i in range(self._inputs.shape[0] - 1, -1, -1):  # reversed: the first occurrence wins
                self._index[np.ascontiguousarray(self._inputs[i]).tobytes()] = i
        return self._index.get(np.ascontiguousarray(row).tobytes(), -1)


# ---------------------------------------------------------------------------------------------
# The rows to draw
# ---------------------------------------------------------------------------------------------
@dataclass
class Row:
    """One example to draw: tokens of input, label and (optionally) prediction."""

    index: int  # row in the dataset split
    identifier: int
    inputs: np.ndarray
    labels: np.ndarray
    preds: Optional[np.ndarray] = None


Leads = Optional[Callable[[str], bool]]  # puzzle name -> shown before the others (None: keep the order)


def _candidate_order(identifiers: Optional[np.ndarray], usable: np.ndarray, data: SplitData,
                     leads: Leads) -> np.ndarray:
    """Usable rows in order, those whose puzzle `leads` first (for ARC: the tasks as published)."""
    rows = np.flatnonzero(usable)
    if leads is None or identifiers is None or data.names is None:
        return rows
    names = data.names

    def first(identifier: int) -> bool:  # unnamed puzzles count as leading
        return not 0 <= identifier < len(names) or leads(names[identifier])

    leading = np.array([first(int(identifiers[r])) for r in rows], dtype=bool)
    return np.concatenate([rows[leading], rows[~leading]])


def rows_from_dataset(data: SplitData, num: int, leads: Leads = None) -> list[Row]:
    """The first `num` examples of the split (no predictions)."""
    order = _candidate_order(data.identifiers, np.ones(data.inputs.shape[0], dtype=bool), data, leads)[:num]
    return [Row(int(i), int(data.identifiers[i]), np.asarray(data.inputs[i]), np.asarray(data.labels[i]))
            for i in order]


def _rows_by_inputs(data: SplitData, outputs: dict[str, np.ndarray], num: int, leads: Leads) -> list[Row]:
    """Outputs that carry their inputs: padding rows skipped, every shown row located in the dataset."""
    inputs = outputs["inputs"]
    usable = ~(inputs == data.metadata.pad_id).all(axis=1)  # batch padding rows are all PAD
    order = _candidate_order(outputs.get("puzzle_identifiers"), usable, data, leads)[:num]
    lookup, rows = _RowLookup(data.inputs), []
    for r in order:
        index = lookup.find(inputs[r], int(r))
        if index < 0:
            raise ValueError(f"The outputs do not match the dataset: output row {r} (its inputs) is not an example "
                             f"of the {data.split} split of {data.dataset_dir!r}. Pass the dataset they were made on.")
        labels = _restore_ignored(outputs["labels"][r], data.metadata) if "labels" in outputs else data.labels[index]
        identifier = outputs["puzzle_identifiers"][r] if "puzzle_identifiers" in outputs else data.identifiers[index]
        rows.append(Row(index, int(identifier), np.asarray(inputs[r]), np.asarray(labels), outputs["preds"][r]))
    return rows


def _rows_by_order(data: SplitData, outputs: dict[str, np.ndarray], num: int, leads: Leads) -> list[Row]:
    """Outputs without inputs: row i is example i of the split (a single-process test pass, in order)."""
    preds, total = outputs["preds"], data.inputs.shape[0]
    # A single set is followed by at most one padded batch; with several sets padding sits between them.
    if preds.shape[0] < total or (len(data.metadata.sets) > 1 and preds.shape[0] != total):
        raise ValueError(f"The outputs hold {preds.shape[0]} rows but the {data.split} split of {data.dataset_dir!r} "
                         f"has {total} examples in {len(data.metadata.sets)} set(s), so rows cannot be matched by "
                         f"order; {OUTPUTS_HINT} (with inputs, rows are matched by content).")
    rows = rows_from_dataset(data, num, leads)
    saved_labels = outputs.get("labels")
    for row in rows:
        # The shown rows suffice to catch another dataset.
        if saved_labels is not None and not np.array_equal(_restore_ignored(saved_labels[row.index], data.metadata),
                                                           row.labels):
            raise ValueError(f"The outputs do not match the dataset: the labels of row {row.index} differ from "
                             f"example {row.index} of the {data.split} split of {data.dataset_dir!r}.")
        row.preds = preds[row.index]
    return rows


def select_rows(data: SplitData, outputs: Optional[dict], num: int, leads: Leads = None) -> list[Row]:
    """Up to `num` examples with their predictions when outputs are given; `leads` orders them (see Renderer)."""
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}.")
    if outputs is None:
        return rows_from_dataset(data, num, leads)
    checked = _check_outputs(outputs, data)
    select = _rows_by_inputs if "inputs" in checked else _rows_by_order
    return select(data, checked, num, leads)
