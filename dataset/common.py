"""On-disk puzzle dataset format (SPEC section 1): metadata model, reading and writing.

Every builder writes through `write_split` / `write_identifiers` and the loader reads
through `load_metadata`, so the format is defined in exactly one place.
"""
from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np
import pydantic

# Label value that the loss ignores (PyTorch's cross-entropy default).
IGNORE_LABEL_ID = -100

# The five arrays of one set; the file of field F is `<set>__F.npy`.
ARRAY_FIELDS = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")
# Index-like arrays are int32 on disk (SPEC section 1); token arrays may be any integer type.
INT32_FIELDS = ("puzzle_identifiers", "puzzle_indices", "group_indices")

BLANK_IDENTIFIER_NAME = "<blank>"
BUILD_HINT = "build the dataset first, e.g. `python dataset/build_sudoku_dataset.py --output-dir <dir>`"


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


def _atomic_tmp_path(final_path: str) -> str:
    """Temporary name beside the final file (same filesystem, so os.replace is atomic)."""
    return f"{final_path}.tmp-{os.getpid()}"


def _write_json_atomic(path: str, content: object) -> None:
    """Write JSON to a temp file, then rename it over `path` (readers never see half a file)."""
    tmp = _atomic_tmp_path(path)
    with open(tmp, "w") as f:
        json.dump(content, f)
    os.replace(tmp, path)


def _check_split_arrays(set_name: str, arrays: dict[str, np.ndarray], metadata: PuzzleDatasetMetadata) -> None:
    """Reject arrays that the loader could not read correctly (wrong keys, shapes, dtypes)."""
    missing = [k for k in ARRAY_FIELDS if k not in arrays]
    extra = [k for k in arrays if k not in ARRAY_FIELDS]
    if missing or extra:
        raise ValueError(
            f"write_split({set_name!r}): arrays must have exactly the keys {list(ARRAY_FIELDS)}; "
            f"missing {missing}, unexpected {extra}."
        )
    if set_name not in metadata.sets:
        raise ValueError(f"write_split: set {set_name!r} is not in metadata.sets {metadata.sets}; add it there.")
    for field in ("inputs", "labels"):
        arr = arrays[field]
        if arr.ndim != 2 or arr.shape[1] != metadata.seq_len or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(
                f"write_split({set_name!r}): {field} must be an integer array of shape (N, seq_len={metadata.seq_len}), "
                f"got dtype {arr.dtype} shape {arr.shape}."
            )
    if arrays["inputs"].shape != arrays["labels"].shape:
        raise ValueError(
            f"write_split({set_name!r}): inputs {arrays['inputs'].shape} and labels {arrays['labels'].shape} differ in shape."
        )
    for field in INT32_FIELDS:
        arr = arrays[field]
        if arr.ndim != 1 or arr.dtype != np.int32:
            raise ValueError(
                f"write_split({set_name!r}): {field} must be a 1-D int32 array (use .astype(np.int32)), "
                f"got dtype {arr.dtype} shape {arr.shape}."
            )
    check_index_arrays(
        f"write_split({set_name!r})",
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
        problems.append(f"puzzle_indices has {puzzle_indices.shape[0]} entries, expected num_puzzles+1={num_puzzles + 1}")
    elif puzzle_indices[0] != 0 or puzzle_indices[-1] != num_examples:
        problems.append(f"puzzle_indices must start at 0 and end at num_examples={num_examples}")
    if group_indices.shape[0] < 1 or group_indices[0] != 0 or group_indices[-1] != num_puzzles:
        problems.append(f"group_indices must start at 0 and end at num_puzzles={num_puzzles}")
    if np.any(np.diff(puzzle_indices) < 0) or np.any(np.diff(group_indices) < 0):
        problems.append("puzzle_indices and group_indices must be non-decreasing")
    if problems:
        raise ValueError(f"{where}: inconsistent dataset arrays: " + "; ".join(problems) + ". Rebuild the dataset.")


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
    directory = split_dir(out_dir, split)
    os.makedirs(directory, exist_ok=True)

    pending = []
    for field in ARRAY_FIELDS:
        final = array_path(out_dir, split, set_name, field)
        tmp = _atomic_tmp_path(final)
        # A file object, not a path: np.save would append ".npy" to the temp name.
        with open(tmp, "wb") as f:
            np.save(f, arrays[field])
        pending.append((tmp, final))
    for tmp, final in pending:
        os.replace(tmp, final)

    _write_json_atomic(os.path.join(directory, "dataset.json"), metadata.model_dump())


def write_identifiers(out_dir: str, names: list[str]) -> None:
    """Write `<out_dir>/identifiers.json`: index = puzzle identifier, value = its name."""
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError("write_identifiers: names must be a list of strings (index = puzzle identifier).")
    if not names or names[0] != BLANK_IDENTIFIER_NAME:
        raise ValueError(
            f"write_identifiers: identifier 0 must be named {BLANK_IDENTIFIER_NAME!r} (the blank puzzle); "
            f"got {names[:1]}. Prepend it to the list."
        )
    os.makedirs(out_dir, exist_ok=True)
    _write_json_atomic(os.path.join(out_dir, "identifiers.json"), names)


# The 8 symmetries of the square, by the published ids; DIHEDRAL_INVERSE[t] undoes t.
DIHEDRAL_INVERSE = [0, 3, 2, 1, 4, 5, 6, 7]


def dihedral_transform(grid: np.ndarray, trans_id: int) -> np.ndarray:
    """0 identity, 1 rot90, 2 rot180, 3 rot270, 4 fliplr, 5 flipud, 6 transpose, 7 fliplr(rot90).

    Acts on the last two axes, so a stack of grids is transformed at once.
    """
    axes = (-2, -1)
    if trans_id == 0:
        return grid
    if trans_id in (1, 2, 3):
        return np.rot90(grid, k=trans_id, axes=axes)
    if trans_id == 4:
        return np.flip(grid, axis=-1)
    if trans_id == 5:
        return np.flip(grid, axis=-2)
    if trans_id == 6:
        return np.swapaxes(grid, -2, -1)
    if trans_id == 7:
        return np.flip(np.rot90(grid, k=1, axes=axes), axis=-1)
    raise ValueError(f"dihedral trans_id must be in 0..7, got {trans_id}")


def inverse_dihedral_transform(grid: np.ndarray, trans_id: int) -> np.ndarray:
    return dihedral_transform(grid, DIHEDRAL_INVERSE[trans_id])
