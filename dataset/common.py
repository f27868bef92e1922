"""On-disk puzzle dataset format (docs/data-format.md): metadata model, checks, reading and writing.

Every builder writes through `write_split` / `write_set` / `write_metadata` / `write_identifiers` into a
directory published by `atomic_output_dir` (dataset/output_dir.py: the one rule for replacing an output
directory; the layouts below say what a dataset directory may hold), and the loader reads through
`load_metadata` and `dataset.validation`, so the format is defined in exactly one place.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Callable, Iterable, Optional

import numpy as np
import pydantic

from dataset.output_dir import OutputLayout, atomic_output_dir
from dataset.tasks import GENERIC, TASKS, task_of
from utils.atomic import make_dirs, write_atomically
from utils.errors import DatasetError

# Label value that the loss ignores (PyTorch's cross-entropy default).
IGNORE_LABEL_ID = -100

# The five arrays of one set; the file of field F is `<set>__F.npy`.
ARRAY_FIELDS = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")
# Index-like arrays are int32 on disk (docs/data-format.md); token arrays may be any integer type.
INT32_FIELDS = ("puzzle_identifiers", "puzzle_indices", "group_indices")

BLANK_IDENTIFIER_NAME = "<blank>"
GENERIC_BUILDER = "python dataset/build_copy_dataset.py"  # the builder of a dataset of no task: the copy task


def build_hint(dataset_dir: str) -> str:
    """How to build the dataset a path names: its task guessed from the directory name (the README's names)."""
    name = os.path.basename(os.path.normpath(dataset_dir)).lower()
    for task in TASKS.values():
        if task.builder is not None and task.name in name:
            return f"build it with {task.build_commands(dataset_dir)} (README \"Datasets\")"
    return "build it with one of the builders in dataset/ (README \"Datasets\")"


# What a built dataset directory holds, and so what a builder may replace (dataset/output_dir.py): the two
# splits with only dataset.json and `<set>__<field>.npy` files, and identifiers.json; ARC adds test_puzzles.json.
SPLIT_FILE = re.compile(r"dataset\.json|.+__(?:" + "|".join(ARRAY_FIELDS) + r")\.npy")
DATASET_ENTRIES = OutputLayout(files=frozenset({"identifiers.json"}), dirs={"train": SPLIT_FILE, "test": SPLIT_FILE})
ARC_DATASET_ENTRIES = DATASET_ENTRIES.with_files("test_puzzles.json")


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A dataset directory, split or file that does not exist."""


def rebuild_hint(dataset_dir: str, metadata: Optional["PuzzleDatasetMetadata"] = None) -> str:
    """How to rebuild `dataset_dir`: its task's builder command, or the list of builders when the task is unknown."""
    task = GENERIC if metadata is None else TASKS[task_of(metadata.vocab_size, metadata.seq_len)]
    if task.builder is not None:
        command = task.rebuild_command(dataset_dir)
        return f"rebuild it with its builder and the options it was built with, e.g. `{command}`"
    builders = [f"`{t.builder}`" for t in TASKS.values() if t.builder is not None]
    return (f"rebuild it with the builder that wrote it and the same options ({', '.join(builders)} or "
            f"`{GENERIC_BUILDER}`, with --output-dir {dataset_dir}; see docs/builders.md)")


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
        raise DatasetNotFoundError(f"Dataset directory {dataset_dir!r} does not exist; {build_hint(dataset_dir)}.")
    if not os.path.isfile(path):
        raise DatasetNotFoundError(
            f"Dataset metadata {path!r} not found (is {dataset_dir!r} a built dataset with a "
            f"{split!r} split?); {build_hint(dataset_dir)}."
        )
    with open(path, "r") as f:
        text = f.read()
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(f"Dataset metadata {path!r} is not valid JSON ({e}); {rebuild_hint(dataset_dir)}.") from e
    try:
        return PuzzleDatasetMetadata.model_validate(raw)
    except pydantic.ValidationError as e:
        fields = sorted({".".join(map(str, err["loc"])) for err in e.errors()})
        raise DatasetError(f"Dataset metadata {path!r} has missing or invalid fields {fields}; "
                           f"{rebuild_hint(dataset_dir)}.") from e


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
        num_puzzle_identifiers=metadata.num_puzzle_identifiers,
    )


def check_index_arrays(
    where: str,
    num_examples: int,
    puzzle_identifiers: np.ndarray,
    puzzle_indices: np.ndarray,
    group_indices: np.ndarray,
    num_puzzle_identifiers: Optional[int] = None,
    file_of: Callable[[str], str] = str,
    hint: str = "Rebuild the dataset.",
) -> None:
    """Check that the offset arrays describe a valid example -> puzzle -> group nesting (vectorised).

    Shared by the writers and the loader: a broken offset array or an identifier beyond the embedding
    table would otherwise surface as an out-of-range index deep inside batch sampling or the model.
    `file_of(field)` names a field in messages (the loader gives its file path).
    """
    num_puzzles = puzzle_identifiers.shape[0]
    pi, gi, ids = (file_of(f) for f in ("puzzle_indices", "group_indices", "puzzle_identifiers"))
    problems = []
    if puzzle_indices.shape[0] != num_puzzles + 1:
        problems.append(f"{pi} has {puzzle_indices.shape[0]} entries, expected num_puzzles+1={num_puzzles + 1} "
                        f"(one more than {ids})")
    elif puzzle_indices[0] != 0 or puzzle_indices[-1] != num_examples:
        problems.append(f"{pi} must start at 0 and end at num_examples={num_examples} (the rows of the token arrays), "
                        f"got {int(puzzle_indices[0])}..{int(puzzle_indices[-1])}")
    if group_indices.shape[0] < 1 or group_indices[0] != 0 or group_indices[-1] != num_puzzles:
        problems.append(f"{gi} must start at 0 and end at num_puzzles={num_puzzles}")
    if np.any(np.diff(puzzle_indices) < 0):
        problems.append(f"{pi} must be non-decreasing")
    if np.any(np.diff(group_indices) <= 0):
        problems.append(f"{gi} must be strictly increasing (every group holds at least one puzzle)")
    if num_puzzle_identifiers is not None and num_puzzles:
        lo, hi = int(puzzle_identifiers.min()), int(puzzle_identifiers.max())
        if lo < 0 or hi >= num_puzzle_identifiers:
            problems.append(f"{ids} holds identifier {lo if lo < 0 else hi}, outside "
                            f"[0, num_puzzle_identifiers={num_puzzle_identifiers})")
    if problems:
        raise DatasetError(f"{where}: inconsistent dataset arrays: " + "; ".join(problems) + f". {hint}")


# ----------------------------------------------------------------------------------------------
# Writing files


def write_json(path: str, content: Any) -> None:
    """`content` as JSON (json's default layout) at `path`, atomically. json.dumps uses the C encoder."""
    text = json.dumps(content)
    write_atomically(path, lambda f: f.write(text), mode="w")


def save_array(path: str, array: np.ndarray) -> None:
    """`np.save` atomically (to a file object: np.save would append ".npy" to a temporary name)."""
    write_atomically(path, lambda f: np.save(f, array), needed=array.nbytes)


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
    make_dirs(split_dir(out_dir, split))
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

    make_dirs(out_dir)
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
