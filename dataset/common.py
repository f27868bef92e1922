"""On-disk puzzle dataset format (docs/data-format.md): metadata model, checks, reading and writing.

Every builder writes through `write_split` / `write_set` / `write_metadata` / `write_identifiers` into a
directory published by `atomic_output_dir`, and the loader reads through `load_metadata`, so the format is
defined in exactly one place.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Any, Collection, Iterable, Iterator, Optional

import numpy as np
import pydantic

from utils.atomic import fsync_dir, write_atomically
from utils.errors import DatasetError

# Label value that the loss ignores (PyTorch's cross-entropy default).
IGNORE_LABEL_ID = -100

# The five arrays of one set; the file of field F is `<set>__F.npy`.
ARRAY_FIELDS = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")
# Index-like arrays are int32 on disk (docs/data-format.md); token arrays may be any integer type.
INT32_FIELDS = ("puzzle_identifiers", "puzzle_indices", "group_indices")

BLANK_IDENTIFIER_NAME = "<blank>"
BUILD_HINT = "build the dataset first, e.g. `python dataset/build_sudoku_dataset.py --output-dir <dir>`"
# What a built dataset directory holds (the ARC builder adds test_puzzles.json).
DATASET_ENTRIES = frozenset({"train", "test", "identifiers.json"})


class PuzzleDatasetMetadata(pydantic.BaseModel):
    """Content of `<dir>/<split>/dataset.json`.

    Exactly the published fields: the dataset digest compares the parsed JSON, so no
    extra fields may be added here.
    """

    pad_id: int
    ignore_label_id: Optional[int]
    blank_identifier_id: int
    vocab_size: int
    seq_len: int
    num_puzzle_identifiers: int
    total_groups: int
    mean_puzzle_examples: float
    total_puzzles: int
    sets: list[str]


def split_dir(dataset_dir: str, split: str) -> str:
    """Directory of one split (`train` or `test`) of a built dataset."""
    return os.path.join(dataset_dir, split)


def array_path(dataset_dir: str, split: str, set_name: str, field: str) -> str:
    """Path of one array file, e.g. `<dir>/train/all__inputs.npy`."""
    return os.path.join(dataset_dir, split, f"{set_name}__{field}.npy")


def load_metadata(dataset_dir: str, split: str) -> PuzzleDatasetMetadata:
    """Read and validate `<dataset_dir>/<split>/dataset.json`."""
    path = os.path.join(split_dir(dataset_dir, split), "dataset.json")
    if not os.path.isdir(dataset_dir):
        raise FileNotFoundError(f"Dataset directory {dataset_dir!r} does not exist; {BUILD_HINT}.")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Dataset metadata {path!r} not found (is {dataset_dir!r} a built dataset with a "
            f"{split!r} split?); {BUILD_HINT}."
        )
    with open(path, "r") as f:
        text = f.read()
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"Dataset metadata {path!r} is not valid JSON ({e}); rebuild the dataset.") from e
    try:
        return PuzzleDatasetMetadata.model_validate(raw)
    except pydantic.ValidationError as e:
        raise ValueError(f"Dataset metadata {path!r} has missing or invalid fields; rebuild the dataset.\n{e}") from e


# ----------------------------------------------------------------------------------------------
# Checks


def _check_split_arrays(set_name: str, arrays: dict[str, np.ndarray], metadata: PuzzleDatasetMetadata) -> None:
    """Reject arrays that the loader could not read correctly (wrong keys, shapes, dtypes)."""
    where = f"write_split({set_name!r})"
    missing = [k for k in ARRAY_FIELDS if k not in arrays]
    extra = [k for k in arrays if k not in ARRAY_FIELDS]
    if missing or extra:
        raise ValueError(
            f"{where}: arrays must have exactly the keys {list(ARRAY_FIELDS)}; missing {missing}, unexpected {extra}."
        )
    if set_name not in metadata.sets:
        raise ValueError(f"write_split: set {set_name!r} is not in metadata.sets {metadata.sets}; add it there.")
    for field in ("inputs", "labels"):
        arr = arrays[field]
        if arr.ndim != 2 or arr.shape[1] != metadata.seq_len or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(
                f"{where}: {field} must be an integer array of shape (N, seq_len={metadata.seq_len}), "
                f"got dtype {arr.dtype} shape {arr.shape}."
            )
    if arrays["inputs"].shape != arrays["labels"].shape:
        raise ValueError(
            f"{where}: inputs {arrays['inputs'].shape} and labels {arrays['labels'].shape} differ in shape."
        )
    for field in INT32_FIELDS:
        arr = arrays[field]
        if arr.ndim != 1 or arr.dtype != np.int32:
            raise ValueError(
                f"{where}: {field} must be a 1-D int32 array (use .astype(np.int32)), "
                f"got dtype {arr.dtype} shape {arr.shape}."
            )
    check_index_arrays(
        where,
        num_examples=arrays["inputs"].shape[0],
        puzzle_identifiers=arrays["puzzle_identifiers"],
        puzzle_indices=arrays["puzzle_indices"],
        group_indices=arrays["group_indices"],
    )


def check_index_arrays(
    where: str,
    num_examples: int,
    puzzle_identifiers: np.ndarray,
    puzzle_indices: np.ndarray,
    group_indices: np.ndarray,
) -> None:
    """Check that the offset arrays describe a valid example -> puzzle -> group nesting.

    Shared by the writer and the loader: a broken offset array would otherwise surface as
    an out-of-range index deep inside batch sampling.
    """
    num_puzzles = puzzle_identifiers.shape[0]
    problems = []
    if puzzle_indices.shape[0] != num_puzzles + 1:
        problems.append(f"puzzle_indices has {puzzle_indices.shape[0]} entries, "
                        f"expected num_puzzles+1={num_puzzles + 1}")
    elif puzzle_indices[0] != 0 or puzzle_indices[-1] != num_examples:
        problems.append(f"puzzle_indices must start at 0 and end at num_examples={num_examples}")
    if group_indices.shape[0] < 1 or group_indices[0] != 0 or group_indices[-1] != num_puzzles:
        problems.append(f"group_indices must start at 0 and end at num_puzzles={num_puzzles}")
    if np.any(np.diff(puzzle_indices) < 0) or np.any(np.diff(group_indices) < 0):
        problems.append("puzzle_indices and group_indices must be non-decreasing")
    if problems:
        raise ValueError(f"{where}: inconsistent dataset arrays: " + "; ".join(problems) + ". Rebuild the dataset.")


# ----------------------------------------------------------------------------------------------
# Writing files


def write_json(path: str, content: Any) -> None:
    """`content` as JSON (json's default layout) at `path`, atomically. json.dumps uses the C encoder."""
    text = json.dumps(content)
    write_atomically(path, lambda f: f.write(text), mode="w")


def save_array(path: str, array: np.ndarray) -> None:
    """`np.save` atomically (to a file object: np.save would append ".npy" to a temporary name)."""
    write_atomically(path, lambda f: np.save(f, array))


def write_metadata(out_dir: str, split: str, metadata: PuzzleDatasetMetadata) -> None:
    """`<out_dir>/<split>/dataset.json`; written last, so a split without it is never read."""
    write_json(os.path.join(split_dir(out_dir, split), "dataset.json"), metadata.model_dump())


def write_split(
    out_dir: str,
    split: str,
    set_name: str,
    arrays: dict[str, np.ndarray],
    metadata: PuzzleDatasetMetadata,
) -> None:
    """Write one set of one split: the five `<set>__*.npy` files and `dataset.json`.

    Arrays are saved as given (no dtype change: the ARC builder must be byte-identical to
    the published one). Every file goes to a temp name first and is renamed into place,
    and `dataset.json` is written last, so a crash never leaves a readable half dataset.
    """
    _check_split_arrays(set_name, arrays, metadata)
    os.makedirs(split_dir(out_dir, split), exist_ok=True)
    for field in ARRAY_FIELDS:
        save_array(array_path(out_dir, split, set_name, field), arrays[field])
    write_metadata(out_dir, split, metadata)


def write_identifiers(out_dir: str, names: Iterable[str]) -> None:
    """Write `<out_dir>/identifiers.json`: index = puzzle identifier, value = its name.

    Names are streamed (the ARC builder writes a million of them); the bytes equal `json.dump(list(names))`.
    """
    names = iter(names)
    first = next(names, None)
    if first != BLANK_IDENTIFIER_NAME:
        raise ValueError(
            f"write_identifiers: identifier 0 must be named {BLANK_IDENTIFIER_NAME!r} (the blank puzzle); "
            f"got {[] if first is None else [first]}. Prepend it to the list."
        )

    def write(f) -> None:
        f.write("[" + json.dumps(first))
        for name in names:
            if not isinstance(name, str):
                raise ValueError("write_identifiers: names must be strings (index = puzzle identifier).")
            f.write(", " + json.dumps(name))
        f.write("]")

    os.makedirs(out_dir, exist_ok=True)
    write_atomically(os.path.join(out_dir, "identifiers.json"), write, mode="w")


# ----------------------------------------------------------------------------------------------
# Writing a set from puzzle and group sizes


def offsets(sizes: Iterable[int]) -> np.ndarray:
    """int32 offset array [0, s0, s0+s1, ...] from sizes (a list or any iterable)."""
    return np.concatenate([[0], np.cumsum(np.fromiter(sizes, dtype=np.int64))]).astype(np.int32)


def set_metadata(seq_len: int, vocab_size: int, num_puzzle_identifiers: int, num_examples: int, num_puzzles: int,
                 num_groups: int, pad_id: int = 0, ignore_label_id: Optional[int] = 0, blank_identifier_id: int = 0,
                 set_name: str = "all") -> PuzzleDatasetMetadata:
    """The metadata of a split holding the one set `set_name`."""
    return PuzzleDatasetMetadata(
        pad_id=pad_id,
        ignore_label_id=ignore_label_id,
        blank_identifier_id=blank_identifier_id,
        vocab_size=vocab_size,
        seq_len=seq_len,
        num_puzzle_identifiers=num_puzzle_identifiers,
        total_groups=num_groups,
        mean_puzzle_examples=num_examples / num_puzzles if num_puzzles else 0.0,
        total_puzzles=num_puzzles,
        sets=[set_name],
    )


def write_set(
    out_dir: str,
    split: str,
    inputs: np.ndarray,
    labels: np.ndarray,
    puzzle_sizes: list[int],
    group_sizes: list[int],
    puzzle_identifiers: list[int],
    vocab_size: int,
    num_puzzle_identifiers: int,
    pad_id: int = 0,
    ignore_label_id: Optional[int] = 0,
    blank_identifier_id: int = 0,
    set_name: str = "all",
) -> PuzzleDatasetMetadata:
    """Write one set `set_name` of one split from explicit arrays and puzzle/group sizes.

    `puzzle_sizes[p]` = examples of puzzle p (consecutive rows of inputs);
    `group_sizes[g]` = puzzles of group g (consecutive puzzles).
    """
    if sum(puzzle_sizes) != inputs.shape[0] or sum(group_sizes) != len(puzzle_sizes):
        raise ValueError("write_set: puzzle_sizes must sum to the rows of inputs and group_sizes to the puzzle count.")
    metadata = set_metadata(inputs.shape[1], vocab_size, num_puzzle_identifiers, inputs.shape[0], len(puzzle_sizes),
                            len(group_sizes), pad_id, ignore_label_id, blank_identifier_id, set_name)
    arrays = {
        "inputs": inputs,
        "labels": labels,
        "puzzle_identifiers": np.asarray(puzzle_identifiers, dtype=np.int32),
        "puzzle_indices": offsets(puzzle_sizes),
        "group_indices": offsets(group_sizes),
    }
    write_split(out_dir, split, set_name, arrays, metadata)
    return metadata


def write_grouped_split(out_dir: str, split: str, inputs: np.ndarray, labels: np.ndarray, group_size: int,
                        vocab_size: int) -> None:
    """One split where every example is its own puzzle (identifier 0) and groups have `group_size` puzzles.

    Rows must already be ordered group by group (original first, then its augmentations). PAD and the
    ignored label are 0, as in Sudoku and Maze.
    """
    num_puzzles = inputs.shape[0]
    if num_puzzles % group_size:
        raise ValueError(f"write_grouped_split: {num_puzzles} rows are not a multiple of the group size {group_size}.")
    write_set(
        out_dir, split, inputs, labels,
        puzzle_sizes=[1] * num_puzzles,
        group_sizes=[group_size] * (num_puzzles // group_size),
        puzzle_identifiers=[0] * num_puzzles,
        vocab_size=vocab_size,
        num_puzzle_identifiers=1,
    )


def write_grouped_dataset(output_dir: str, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                          train_group_size: int, vocab_size: int) -> None:
    """A whole dataset of one-example puzzles with the blank identifier (Sudoku, Maze), published atomically.

    `train` / `test` = (inputs, labels); train groups hold `train_group_size` consecutive rows (an original and
    its augmentations), test puzzles stand alone.
    """
    with atomic_output_dir(output_dir, DATASET_ENTRIES) as tmp:
        write_grouped_split(tmp, "train", *train, group_size=train_group_size, vocab_size=vocab_size)
        write_grouped_split(tmp, "test", *test, group_size=1, vocab_size=vocab_size)
        write_identifiers(tmp, [BLANK_IDENTIFIER_NAME])


# ----------------------------------------------------------------------------------------------
# Publishing a build directory


@contextmanager
def temporary_dir_beside(output_dir: str) -> Iterator[str]:
    """A fresh hidden directory beside `output_dir` (same filesystem, so renames are atomic).

    It is removed when the block ends, unless the block has moved it away (renamed it into place).
    """
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(output_dir))}.tmp-", dir=parent)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_output_dir(output_dir: str, allowed_entries: Optional[Collection[str]]) -> Iterator[str]:
    """Yield a fresh temp dir beside `output_dir`; on success it replaces `output_dir`, on error it is removed.

    An existing `output_dir` is only replaced when it holds nothing but `allowed_entries` (a previous
    build of the same kind), so a mistyped path never deletes unrelated files. `allowed_entries=None`:
    the caller has already decided that an existing directory may be replaced (the ARC builder's rule).
    """
    output_dir = os.path.abspath(output_dir)
    if os.path.exists(output_dir) and allowed_entries is not None:
        if not os.path.isdir(output_dir):
            raise DatasetError(f"output path {output_dir!r} exists and is not a directory; "
                               "choose another --output-dir.")
        unexpected = sorted(set(os.listdir(output_dir)) - set(allowed_entries))
        if unexpected:
            raise DatasetError(
                f"output directory {output_dir!r} exists and holds {unexpected[:5]}, which this tool did not write; "
                f"remove it or choose another --output-dir."
            )
    with temporary_dir_beside(output_dir) as tmp:
        yield tmp
        install_dir(tmp, output_dir)


def install_dir(new_dir: str, output_dir: str) -> None:
    """Rename `new_dir` to `output_dir`, moving an old build aside first and deleting it afterwards."""
    old = None
    if os.path.exists(output_dir):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.old-", dir=os.path.dirname(output_dir))
        os.rmdir(old)  # only the unique name is needed; os.replace needs the target absent
        os.replace(output_dir, old)
    os.replace(new_dir, output_dir)
    os.chmod(output_dir, 0o755)  # mkdtemp makes 0700; a dataset directory should be readable like any other
    fsync_dir(os.path.dirname(output_dir))
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
