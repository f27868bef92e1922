"""Validation of a built dataset when it is opened (docs/data-format.md, "Validation when opened").

`PuzzleDataset` calls `validate_split` for every dataset path in its constructor, so a damaged or
mismatched dataset stops the program before training starts (and before a run directory exists),
with a `DatasetError` naming the file, the field, what is wrong and how to rebuild it. The checks
are cheap: the `.npy` headers (shapes, dtypes) and one vectorised pass over the memory-mapped token
arrays (their maximum, and minimum when signed), chunk by chunk so memory stays flat; the small
index arrays are read whole. `open_set` without the token scan is what the loader's worker uses.
"""
from __future__ import annotations

import os

import numpy as np

from dataset.common import (
    ARRAY_FIELDS,
    IGNORE_LABEL_ID,
    PuzzleDatasetMetadata,
    array_path,
    check_index_arrays,
    rebuild_hint,
    split_dir,
)
from utils.errors import DatasetError

TOKEN_FIELDS = ("inputs", "labels")
SCAN_CHUNK_BYTES = 4 << 20  # rows per step of the value scan: a few MiB keeps both reductions in cache


def _open_array(path: str, field: str, hint: str) -> np.ndarray:
    """One array: token arrays memory-mapped (they can be GBs), index arrays read whole."""
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: the {field} file is missing although dataset.json lists its set; {hint}.")
    try:
        return np.load(path, mmap_mode="r" if field in TOKEN_FIELDS else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DatasetError(f"{path}: the {field} array cannot be read: the file is truncated or is not a plain "
                           f".npy array ({e}); {hint}.") from e


def check_split_metadata(dataset_dir: str, split: str, meta: PuzzleDatasetMetadata) -> None:
    """The fields the loader and the model index with must be usable: sizes positive, ids inside their tables."""
    problems = [f"{name}={value} must be >= 1" for name, value in
                (("vocab_size", meta.vocab_size), ("seq_len", meta.seq_len),
                 ("num_puzzle_identifiers", meta.num_puzzle_identifiers)) if value < 1]
    if not 0 <= meta.pad_id < meta.vocab_size:
        problems.append(f"pad_id={meta.pad_id} is outside [0, vocab_size={meta.vocab_size})")
    if not 0 <= meta.blank_identifier_id < meta.num_puzzle_identifiers:
        problems.append(f"blank_identifier_id={meta.blank_identifier_id} is outside "
                        f"[0, num_puzzle_identifiers={meta.num_puzzle_identifiers})")
    if not meta.sets:
        problems.append("sets is empty")
    if problems:
        path = os.path.join(split_dir(dataset_dir, split), "dataset.json")
        raise DatasetError(f"{path}: " + "; ".join(problems) + f"; {rebuild_hint(dataset_dir, meta)}.")


def _check_shapes(arrays: dict[str, np.ndarray], paths: dict[str, str], meta: PuzzleDatasetMetadata,
                  hint: str) -> None:
    for field, arr in arrays.items():
        if arr.dtype.kind not in "iu":
            raise DatasetError(f"{paths[field]}: {field} must hold integers, got dtype {arr.dtype}; {hint}.")
        ndim = 2 if field in TOKEN_FIELDS else 1
        if arr.ndim != ndim:
            raise DatasetError(f"{paths[field]}: {field} must be a {ndim}-D array, got shape {arr.shape}; {hint}.")
    inputs, labels = arrays["inputs"], arrays["labels"]
    if inputs.shape[1] != meta.seq_len:
        raise DatasetError(f"{paths['inputs']}: inputs have shape {inputs.shape}, rows of {inputs.shape[1]} tokens, "
                           f"but dataset.json says seq_len={meta.seq_len}; {hint}.")
    if labels.shape != inputs.shape:
        raise DatasetError(f"{paths['labels']}: labels have shape {labels.shape} but inputs {inputs.shape}; "
                           f"they must match row for row; {hint}.")


def value_range(arr: np.ndarray) -> tuple[int, int]:
    """(min, max) of a 2-D integer array in one pass of chunks (the minimum of an unsigned array is not read)."""
    if arr.size == 0:
        return 0, 0
    rows = max(1, SCAN_CHUNK_BYTES // max(1, arr.shape[1] * arr.itemsize))
    signed = arr.dtype.kind == "i"
    lo, hi = 0, None
    for start in range(0, arr.shape[0], rows):
        chunk = np.asarray(arr[start:start + rows])
        top = int(chunk.max())
        hi = top if hi is None else max(hi, top)
        if signed:
            lo = min(lo, int(chunk.min()))
    return lo, hi


def _first_disallowed(arr: np.ndarray, vocab_size: int, allowed: tuple[int, ...]) -> int | None:
    """The first value outside [0, vocab_size) that is not in `allowed` (chunked; only run when the range is off)."""
    rows = max(1, SCAN_CHUNK_BYTES // max(1, arr.shape[1] * arr.itemsize))
    for start in range(0, arr.shape[0], rows):
        chunk = np.asarray(arr[start:start + rows]).astype(np.int64)
        bad = ((chunk < 0) | (chunk >= vocab_size)) & ~np.isin(chunk, allowed)
        if bad.any():
            return int(chunk[bad][0])
    return None


def _check_tokens(arrays: dict[str, np.ndarray], paths: dict[str, str], meta: PuzzleDatasetMetadata,
                  hint: str) -> None:
    """Inputs in [0, vocab_size); labels too, or ignore_label_id, or -100 (ignored by the loss)."""
    for field in TOKEN_FIELDS:
        lo, hi = value_range(arrays[field])
        if lo >= 0 and hi < meta.vocab_size:
            continue
        ignored = (meta.ignore_label_id, IGNORE_LABEL_ID)
        allowed = () if field == "inputs" else tuple(v for v in ignored if v is not None)
        bad = _first_disallowed(arrays[field], meta.vocab_size, allowed) if allowed else (lo if lo < 0 else hi)
        if bad is not None:
            also = f" (nor ignore values {list(allowed)})" if allowed else ""
            raise DatasetError(f"{paths[field]}: {field} hold token {bad}, outside [0, vocab_size={meta.vocab_size}) "
                               f"of dataset.json{also}; {hint}.")


def open_set(dataset_dir: str, split: str, set_name: str, meta: PuzzleDatasetMetadata,
             scan_values: bool = True) -> dict[str, np.ndarray]:
    """Open and check the five arrays of one set; `scan_values` adds the pass over the token values."""
    hint = rebuild_hint(dataset_dir, meta)
    paths = {field: array_path(dataset_dir, split, set_name, field) for field in ARRAY_FIELDS}
    arrays = {field: _open_array(path, field, hint) for field, path in paths.items()}
    _check_shapes(arrays, paths, meta, hint)
    check_index_arrays(
        f"dataset {dataset_dir!r} split {split!r} set {set_name!r}",
        num_examples=arrays["inputs"].shape[0],
        puzzle_identifiers=arrays["puzzle_identifiers"],
        puzzle_indices=arrays["puzzle_indices"],
        group_indices=arrays["group_indices"],
        num_puzzle_identifiers=meta.num_puzzle_identifiers,
        file_of=paths.__getitem__,
        hint=hint[0].upper() + hint[1:] + ".",
    )
    if scan_values:
        _check_tokens(arrays, paths, meta, hint)
    return arrays


def validate_split(dataset_dir: str, split: str, meta: PuzzleDatasetMetadata) -> None:
    """Every set of one split of one dataset path: metadata, shapes, dtypes, offsets, values and totals."""
    check_split_metadata(dataset_dir, split, meta)
    puzzles = groups = 0
    for set_name in meta.sets:
        arrays = open_set(dataset_dir, split, set_name, meta)
        puzzles += arrays["puzzle_identifiers"].shape[0]
        groups += arrays["group_indices"].shape[0] - 1
    if (puzzles, groups) != (meta.total_puzzles, meta.total_groups):
        path = os.path.join(split_dir(dataset_dir, split), "dataset.json")
        raise DatasetError(f"{path}: total_puzzles={meta.total_puzzles} and total_groups={meta.total_groups}, but "
                           f"the arrays of its sets hold {puzzles} puzzles in {groups} groups; "
                           f"{rebuild_hint(dataset_dir, meta)}.")
