"""ARC builder (SPEC section 2): byte-identical output to the published TRM ARC builder.

    python -m dataset.build_arc_dataset --input-file-prefix kaggle/combined/arc-agi \
        --output-dir data/arc1concept-aug-1000 --subsets training evaluation concept --test-set-name evaluation

Inputs are Kaggle-layout files `{prefix}_{subset}_challenges.json` (+ `_solutions.json`), written by
`python -m dataset.assemble_arc_data`. The published algorithm (random draws, hashing, identifier
order, padding) is reproduced exactly; what differs is only how the work is done:

* Random draws. The published builder draws from numpy's global legacy RNG one call at a time
  (`np.random.shuffle`, `randint`, `permutation`). `LegacyRandom` replays the very same stream: it
  takes raw 32-bit words from a `RandomState(seed)` (the generator `np.random.seed(seed)` sets up)
  in blocks and applies numpy's legacy bounded-integer algorithm itself, which is ~10x cheaper
  than a numpy call per draw. The global RNG is left untouched.
* Duplicate detection compares the sorted multiset of (shape, bytes) of the pairs instead of the
  published sha256 of sorted per-pair digests: equal exactly when the digests are equal.
* Augmented puzzles are stored as (transform id, colour map) and rendered group by group straight
  into the output files (a window gather from padded canvases plus a colour lookup), so memory
  stays small and the grids are never held as Python lists.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
from typing import Iterable, Optional

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from tqdm import tqdm

if __package__ in (None, ""):  # run as a script path: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dataset.common import (  # noqa: E402
    BLANK_IDENTIFIER_NAME,
    PuzzleDatasetMetadata,
    array_path,
    check_index_arrays,
    split_dir,
)

GRID_SIZE = 30  # ARC grids are at most 30x30; every example is a 30x30 canvas
SEQ_LEN = GRID_SIZE * GRID_SIZE
PAD_ID, EOS_ID, COLOUR_OFFSET = 0, 1, 2  # token = colour + 2
VOCAB_SIZE = 10 + COLOUR_OFFSET
NUM_DIHEDRAL = 8
AUGMENT_RETRIES_FACTOR = 5  # published: at most 5 * num_aug trials per puzzle
NAME_SEPARATOR = "|||"  # augmented name: f"{id}|||t{trans}|||{colour map digits}"
SET_NAME = "all"
TRAIN, TEST = "train", "test"
EXAMPLE_KINDS = ("train", "test")  # the keys of an ARC task
ASSEMBLE_HINT = "create the Kaggle-layout files with `python -m dataset.assemble_arc_data --output-dir kaggle/combined`"
# Dihedral ids that swap rows and columns (rot90, rot270, transpose, fliplr(rot90)).
TRANSPOSING = frozenset({1, 3, 6, 7})

# `dataset.common.dihedral_transform` for 2-D grids as plain slicing views: the same result (the
# tests check all 8) without np.rot90 / np.flip's per-call overhead, which dominated small grids.
_DIHEDRAL_VIEWS = (
    lambda g: g,
    lambda g: g.T[::-1],  # rot90
    lambda g: g[::-1, ::-1],  # rot180
    lambda g: g.T[:, ::-1],  # rot270
    lambda g: g[:, ::-1],  # fliplr
    lambda g: g[::-1],  # flipud
    lambda g: g.T,  # transpose
    lambda g: g.T[::-1, ::-1],  # fliplr(rot90)
)


def dihedral_view(grid: np.ndarray, trans_id: int) -> np.ndarray:
    """Dihedral transform `trans_id` (published ids) of a 2-D grid, as a view."""
    return _DIHEDRAL_VIEWS[trans_id](grid)


class ArcDataError(ValueError):
    """Bad input or options; the message says what is wrong and how to fix it."""


@dataclasses.dataclass
class ArcBuildConfig:
    """The published builder's options, with its defaults."""

    input_file_prefix: str
    output_dir: str
    subsets: list[str] = dataclasses.field(default_factory=lambda: ["training", "evaluation", "concept"])
    test_set_name: str = "evaluation"
    test_set_name2: str = "your_test_set"
    seed: int = 42
    num_aug: int = 1000
    puzzle_identifiers_start: int = 1


# ---------------------------------------------------------------------------------------------
# Random draws: numpy's legacy RandomState stream, replayed in Python
# ---------------------------------------------------------------------------------------------


class LegacyRandom:
    """Draws identical to numpy's legacy `RandomState(seed)` (= after `np.random.seed(seed)`).

    Legacy bounded integers are rejection-sampled from 32-bit MT19937 words: with
    `mask` = the smallest 2^k - 1 >= `max`, draw words until `word & mask <= max`; no word is
    drawn when `max == 0`. `randint(0, high)` uses max = high - 1 and `shuffle`/`permutation`
    swap item i with item `interval(i)` for i from n-1 down to 1. The tests check this against
    numpy itself.
    """

    _BLOCK = 1 << 16

    def __init__(self, seed: int):
        self._next_word = self._words(np.random.RandomState(seed)).__next__

    @classmethod
    def _words(cls, source: np.random.RandomState):
        """Endless raw MT19937 words; randint over the full uint32 range returns them in order."""
        while True:
            yield from source.randint(0, 1 << 32, size=cls._BLOCK, dtype=np.uint32).tolist()

    def interval(self, max_value: int) -> int:
        """Uniform integer in [0, max_value], as numpy's legacy `random_interval`."""
        if max_value == 0:
            return 0
        mask = (1 << max_value.bit_length()) - 1
        next_word = self._next_word
        while True:
            value = next_word() & mask
            if value <= max_value:
                return value

    def randint(self, high: int) -> int:
        """`np.random.randint(0, high)` for 1 <= high <= 2**32."""
        return self.interval(high - 1)

    def shuffle(self, items: list) -> None:
        """`np.random.shuffle(items)` (in place)."""
        interval = self.interval
        for i in range(len(items) - 1, 0, -1):
            j = interval(i)
            items[i], items[j] = items[j], items[i]

    def colour_map(self) -> list[int]:
        """`[0] + np.random.permutation(np.arange(1, 10))`: colour 0 (background) stays put."""
        perm = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
        next_word = self._next_word
        # Shuffle perm[1:] in place: positions 9..2 swap with 1 + interval(i - 1); masks precomputed.
        for i, max_value, mask in _PERM_STEPS:
            while True:
                j = next_word() & mask
                if j <= max_value:
                    break
            perm[i], perm[j + 1] = perm[j + 1], perm[i]
        return perm


# (position in the map, interval max, mask) of the 8 swaps of a 9-element legacy shuffle.
_PERM_STEPS = tuple((k + 1, k, (1 << k.bit_length()) - 1) for k in range(8, 0, -1))


# ---------------------------------------------------------------------------------------------
# Loading and validation
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ArcTask:
    """One ARC task ready for augmentation and writing.

    `pairs[split]` = the (input, output) uint8 grids that go to that split, in the order of the
    task's JSON keys. Member 0 of the group is the original; `aug_trans[k]` / `aug_maps[k]` describe
    member k+1.
    """

    task_id: str
    pairs: dict[str, list[tuple[np.ndarray, np.ndarray]]]
    aug_trans: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.uint8))
    aug_maps: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 10), np.uint8))

    @property
    def num_members(self) -> int:
        return 1 + len(self.aug_trans)

    def member_trans(self) -> np.ndarray:
        return np.concatenate([[0], self.aug_trans]).astype(np.intp)

    def member_maps(self) -> np.ndarray:
        return np.concatenate([np.arange(10, dtype=np.uint8)[None], self.aug_maps], axis=0)


@dataclasses.dataclass
class ArcSubset:
    name: str
    path: str
    is_test_set: bool
    tasks: list[tuple[str, dict]]  # (task id, task dict with test outputs filled), in file order


def _read_json(path: str, what: str):
    """Parse a JSON file; a missing or malformed file is an ArcDataError naming the path."""
    if not os.path.isfile(path):
        raise ArcDataError(f"{what} file {path!r} not found; {ASSEMBLE_HINT}, or fix --input-file-prefix / --subsets.")
    try:
        with open(path, "r") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ArcDataError(f"{what} file {path!r} is not valid JSON ({e}); re-create it with `python -m dataset.assemble_arc_data`.") from e
    except UnicodeDecodeError as e:
        raise ArcDataError(f"{what} file {path!r} is not UTF-8 text ({e}); re-create it with `python -m dataset.assemble_arc_data`.") from e


def grid_to_array(grid, where: str) -> np.ndarray:
    """Validate one ARC grid (rectangular, 1..30 x 1..30, integer colours 0..9) -> uint8 array."""
    if not isinstance(grid, list) or not grid or not all(isinstance(row, list) for row in grid):
        raise ArcDataError(f"{where}: a grid must be a non-empty list of rows (lists of colours); got {str(grid)[:60]!r}.")
    if any(len(row) != len(grid[0]) for row in grid) or not grid[0]:
        raise ArcDataError(f"{where}: grid rows must be non-empty and of equal length (got lengths {[len(r) for r in grid][:10]}).")
    arr = np.array(grid)
    if arr.ndim != 2 or arr.dtype.kind not in "iu":  # floats, strings, nested lists, huge ints
        raise ArcDataError(f"{where}: grid values must be integer colours 0..9.")
    rows, cols = arr.shape
    if rows > GRID_SIZE or cols > GRID_SIZE:
        raise ArcDataError(f"{where}: grid is {rows}x{cols}, larger than {GRID_SIZE}x{GRID_SIZE}; ARC grids must fit in 30x30.")
    if arr.min() < 0 or arr.max() > 9:
        bad = int(arr.max()) if arr.max() > 9 else int(arr.min())
        raise ArcDataError(f"{where}: colour {bad} is outside 0..9.")
    return arr.astype(np.uint8)


def _fill_solutions(challenges: dict, solutions, sols_path: str) -> None:
    """Put each solution grid into the matching test pair as its "output" (published behaviour)."""
    if not isinstance(solutions, dict):
        raise ArcDataError(f"{sols_path!r}: expected a JSON object task id -> list of test output grids.")
    for task_id, task in challenges.items():
        if task_id not in solutions:
            raise ArcDataError(f"{sols_path!r} has no solutions for task {task_id!r}; use the solutions file that matches the challenges.")
        sols = solutions[task_id]
        if not isinstance(sols, list) or len(sols) != len(task["test"]):
            n = len(sols) if isinstance(sols, list) else "no list of"
            raise ArcDataError(
                f"{sols_path!r}: task {task_id!r} has {n} solutions for {len(task['test'])} test inputs; "
                "use the solutions file that matches the challenges."
            )
        for pair, sol in zip(task["test"], sols):
            pair["output"] = sol


def _check_task_shape(task_id, task, path: str) -> None:
    """A task is {"train": [pairs], "test": [pairs]} with both lists non-empty."""
    if not isinstance(task_id, str) or NAME_SEPARATOR in task_id:
        raise ArcDataError(f"{path!r}: task id {task_id!r} must be a string without {NAME_SEPARATOR!r} (it separates augmentation fields).")
    if not isinstance(task, dict) or set(task) != set(EXAMPLE_KINDS):
        keys = sorted(task) if isinstance(task, dict) else type(task).__name__
        raise ArcDataError(f"{path!r}: task {task_id!r} must be an object with exactly the keys 'train' and 'test' (got {keys}).")
    for kind in EXAMPLE_KINDS:
        pairs = task[kind]
        if not isinstance(pairs, list) or not pairs or not all(isinstance(p, dict) and "input" in p for p in pairs):
            raise ArcDataError(f"{path!r}: task {task_id!r} {kind!r} must be a non-empty list of {{'input': grid, ...}} pairs.")


def load_subset(prefix: str, name: str, is_test_set: bool) -> ArcSubset:
    """Read one subset's challenges (+ solutions when present) and check every task's structure."""
    path = f"{prefix}_{name}_challenges.json"
    challenges = _read_json(path, f"ARC subset {name!r} challenges")
    if not isinstance(challenges, dict) or not challenges:
        raise ArcDataError(f"{path!r} must be a non-empty JSON object task id -> task; {ASSEMBLE_HINT}.")
    for task_id, task in challenges.items():
        _check_task_shape(task_id, task, path)

    sols_path = f"{prefix}_{name}_solutions.json"
    if os.path.isfile(sols_path):
        _fill_solutions(challenges, _read_json(sols_path, f"ARC subset {name!r} solutions"), sols_path)
    else:
        # Published behaviour: test pairs without an output get a 1x1 grid of colour 0.
        print(f"{sols_path} not found: test outputs of subset {name!r} are set to [[0]].")
        for task in challenges.values():
            for pair in task["test"]:
                pair.setdefault("output", [[0]])
    for task_id, task in challenges.items():
        for kind in EXAMPLE_KINDS:
            if not all("output" in p for p in task[kind]):
                raise ArcDataError(f"{path!r}: task {task_id!r} has {kind!r} pairs without an 'output' grid.")
    return ArcSubset(name, path, is_test_set, list(challenges.items()))


def convert_task(task_id: str, task: dict, is_test_set: bool, path: str) -> ArcTask:
    """Grids as uint8 arrays, routed to splits: "test" pairs of a test set go to `test`, all else to `train`."""
    pairs: dict[str, list] = {}
    for kind in task:  # JSON key order decides the example order within a split
        dest = TEST if (kind == "test" and is_test_set) else TRAIN
        for i, pair in enumerate(task[kind]):
            where = f"{path}: task {task_id!r} {kind} pair {i}"
            pairs.setdefault(dest, []).append(
                (grid_to_array(pair["input"], f"{where} input"), grid_to_array(pair["output"], f"{where} output"))
            )
    return ArcTask(task_id, pairs)


def validate_config(config: ArcBuildConfig) -> None:
    if not config.subsets:
        raise ArcDataError("--subsets is empty; name at least one subset, e.g. --subsets training evaluation concept.")
    if len(set(config.subsets)) != len(config.subsets):
        raise ArcDataError(f"--subsets {config.subsets} lists a subset twice; list each once.")
    if config.test_set_name not in config.subsets:
        raise ArcDataError(
            f"--test-set-name {config.test_set_name!r} is not one of --subsets {config.subsets}; "
            "the test split is made from that subset's test pairs, so add it to --subsets or pick one of them."
        )
    if config.num_aug < 0:
        raise ArcDataError(f"--num-aug must be >= 0, got {config.num_aug}.")
    if not 0 <= config.seed < 2**32:
        raise ArcDataError(f"--seed must be in 0..2**32-1 (numpy's legacy seeding), got {config.seed}.")
    if config.puzzle_identifiers_start < 1:
        raise ArcDataError(f"--puzzle-identifiers-start must be >= 1 (0 is the blank identifier), got {config.puzzle_identifiers_start}.")
    _check_output_dir(config.output_dir)


def _looks_like_dataset(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "identifiers.json")) or os.path.isfile(os.path.join(path, TRAIN, "dataset.json"))


def _check_output_dir(path: str) -> None:
    """An existing output dir is replaced only if it is empty or an earlier build (never user files)."""
    if os.path.exists(path) and not (os.path.isdir(path) and (not os.listdir(path) or _looks_like_dataset(path))):
        raise ArcDataError(
            f"--output-dir {path!r} exists and is not a built dataset; refusing to replace it. "
            "Choose a new directory or remove it."
        )


# ---------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------

# bytes.translate table for colours 0..9 (other byte values never occur in cell bytes).
_TABLE_TAIL = bytes(range(10, 256))


class _PuzzleKeys:
    """Duplicate detection for the augmentations of one task.

    The published builder keeps sha256(sorted per-pair digests of (shape, bytes) of input and
    output), over all pairs of all splits. Two augmentations collide there exactly when their
    multisets of (input shape, input bytes, output shape, output bytes) are equal, which is what
    the key below encodes (sorted, self-delimiting pair records). Per transform, the cell bytes of
    all pairs are precomputed, so one key costs one `bytes.translate` plus slicing.
    """

    def __init__(self, task: ArcTask):
        all_pairs = [pair for split_pairs in task.pairs.values() for pair in split_pairs]
        self._layouts = []
        for trans in range(NUM_DIHEDRAL):
            cells, records = [], []
            offset = 0
            for inp, out in all_pairs:
                ti, to = dihedral_view(inp, trans), dihedral_view(out, trans)
                data = ti.tobytes() + to.tobytes()
                records.append((bytes([*ti.shape, *to.shape]), offset, offset + len(data)))
                cells.append(data)
                offset += len(data)
            self._layouts.append((b"".join(cells), records))

    def key(self, trans: int, colour_map: list[int]) -> bytes:
        cells, records = self._layouts[trans]
        mapped = cells.translate(bytes(colour_map) + _TABLE_TAIL)
        return b"".join(sorted(header + mapped[start:end] for header, start, end in records))


def augment_task(task: ArcTask, num_aug: int, rng: LegacyRandom) -> bool:
    """Draw up to 5*num_aug (dihedral, colour map) trials, keep new puzzles until num_aug are kept.

    Draw order per trial as published: `randint(0, 8)`, then the colour permutation. Returns
    False when fewer than num_aug distinct augmentations exist (the group is smaller).
    """
    if num_aug <= 0:
        return True
    keys = _PuzzleKeys(task)
    seen = {keys.key(0, list(range(10)))}
    trans_kept, maps_kept = [], []
    for _trial in range(AUGMENT_RETRIES_FACTOR * num_aug):
        trans = rng.randint(NUM_DIHEDRAL)
        colour_map = rng.colour_map()
        key = keys.key(trans, colour_map)
        if key not in seen:
            seen.add(key)
            trans_kept.append(trans)
            maps_kept.append(colour_map)
        if len(trans_kept) >= num_aug:
            break
    task.aug_trans = np.array(trans_kept, dtype=np.uint8)
    task.aug_maps = np.array(maps_kept, dtype=np.uint8).reshape(-1, 10)
    return len(trans_kept) >= num_aug


# ---------------------------------------------------------------------------------------------
# Identifiers
# ---------------------------------------------------------------------------------------------

# A puzzle name packed into a uint64: task index << 40 | augmented << 39 | trans << 32 | map digits.
_AUG_FLAG = np.uint64(1 << 39)
_DIGIT_WEIGHTS = 10 ** np.arange(8, -1, -1, dtype=np.uint64)  # map[1..9] as a 9-digit number


def _member_keys(task_index: int, task: ArcTask) -> np.ndarray:
    """Packed names of a group's members; equal keys <=> equal published name strings."""
    keys = np.full(task.num_members, np.uint64(task_index) << np.uint64(40), dtype=np.uint64)
    digits = task.aug_maps[:, 1:].astype(np.uint64) @ _DIGIT_WEIGHTS
    keys[1:] |= _AUG_FLAG | (task.aug_trans.astype(np.uint64) << np.uint64(32)) | digits
    return keys


def _key_to_name(key: int, task_ids: list[str]) -> str:
    task_id = task_ids[key >> 40]
    if not key & (1 << 39):
        return task_id
    trans, digits = (key >> 32) & 0x7F, key & 0xFFFFFFFF
    return f"{task_id}{NAME_SEPARATOR}t{trans}{NAME_SEPARATOR}0{digits:09d}"


def assign_identifiers(split_tasks: dict[str, list[ArcTask]], start: int) -> tuple[dict[str, np.ndarray], list[int], list[str]]:
    """Number names in walk order (splits, groups, members), first occurrence first, from `start`.

    Returns per-split identifier arrays (one per puzzle, in write order), the packed key of each
    identifier start, start+1, ... and the task-id table the keys index.
    """
    task_index: dict[str, int] = {}
    split_keys = {}
    for split, tasks in split_tasks.items():
        parts = [_member_keys(task_index.setdefault(t.task_id, len(task_index)), t) for t in tasks]
        split_keys[split] = np.concatenate(parts) if parts else np.zeros(0, np.uint64)
    all_keys = np.concatenate(list(split_keys.values()))
    unique, first, inverse = np.unique(all_keys, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # unique keys in first-occurrence order
    ids_of_unique = np.empty(len(unique), dtype=np.int64)
    ids_of_unique[order] = start + np.arange(len(unique))
    ids = ids_of_unique[inverse.reshape(-1)].astype(np.int32)
    out, pos = {}, 0
    for split, keys in split_keys.items():
        out[split] = ids[pos:pos + len(keys)]
        pos += len(keys)
    return out, unique[order].tolist(), list(task_index)


def _write_identifiers_json(path: str, start: int, keys_in_order: list[int], task_ids: list[str]) -> None:
    """identifiers.json streamed name by name (a million names need not be held as one list)."""
    with open(path, "w") as f:
        f.write("[" + ", ".join([json.dumps(BLANK_IDENTIFIER_NAME)] * start))
        for key in keys_in_order:
            f.write(", " + json.dumps(_key_to_name(key, task_ids)))
        f.write("]")


# ---------------------------------------------------------------------------------------------
# Rendering and writing
# ---------------------------------------------------------------------------------------------


def _canvas_sources(grids: list[np.ndarray]) -> np.ndarray:
    """(8 * n, 60, 60) canvases: transformed grid (as tokens) with its EOS row/column at (30, 30).

    A 30x30 window starting at (30 - r, 30 - c) is then exactly the published padded example
    with the grid at offset (r, c): EOS below / right of the grid where that row / column exists,
    and nothing at the corner. Index = trans * n + example.
    """
    n = len(grids)
    canvas = np.zeros((NUM_DIHEDRAL * n, 2 * GRID_SIZE, 2 * GRID_SIZE), dtype=np.uint8)
    for trans in range(NUM_DIHEDRAL):
        for i, grid in enumerate(grids):
            g = dihedral_view(grid, trans)
            rows, cols = g.shape
            target = canvas[trans * n + i, GRID_SIZE:, GRID_SIZE:]
            target[:rows, :cols] = g + COLOUR_OFFSET
            if rows < GRID_SIZE:
                target[rows, :cols] = EOS_ID
            if cols < GRID_SIZE:
                target[:rows, cols] = EOS_ID
    return canvas


def _max_extent(pairs, axis: int) -> np.ndarray:
    return np.array([max(inp.shape[axis], out.shape[axis]) for inp, out in pairs], dtype=np.int64)


def render_group(task: ArcTask, split: str, rng: LegacyRandom, translate: bool) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and labels (members * n, 900) of one group in one split, drawing offsets as published.

    Per puzzle: `no_aug_id = randint(0, n)`; then, when translating, every other example draws
    `pad_r` then `pad_c` (both grids of a pair share the offset).
    """
    pairs = task.pairs[split]
    n = len(pairs)
    trans = task.member_trans()
    # Upper bounds (exclusive) of pad_r / pad_c per example; rows and columns swap under transposing ids.
    rows_high = GRID_SIZE - _max_extent(pairs, 0) + 1
    cols_high = GRID_SIZE - _max_extent(pairs, 1) + 1
    highs_plain = list(zip(rows_high.tolist(), cols_high.tolist()))
    highs_swapped = list(zip(cols_high.tolist(), rows_high.tolist()))

    starts_r, starts_c = [], []
    for t in trans.tolist():
        no_aug_id = rng.randint(n)
        highs = highs_swapped if t in TRANSPOSING else highs_plain
        for i in range(n):
            if translate and i != no_aug_id:
                r = rng.randint(highs[i][0])
                c = rng.randint(highs[i][1])
            else:
                r = c = 0
            starts_r.append(GRID_SIZE - r)
            starts_c.append(GRID_SIZE - c)
    slots = (trans[:, None] * n + np.arange(n)[None, :]).reshape(-1)
    starts_r = np.array(starts_r, dtype=np.intp)
    starts_c = np.array(starts_c, dtype=np.intp)

    # Token lookup per member: PAD and EOS stay, colour c -> map[c] + 2.
    luts = np.concatenate(
        [np.tile(np.array([PAD_ID, EOS_ID], np.uint8), (task.num_members, 1)), task.member_maps() + COLOUR_OFFSET], axis=1
    )
    results = []
    for side in range(2):
        canvases = _canvas_sources([pair[side] for pair in pairs])
        windows = sliding_window_view(canvases, (GRID_SIZE, GRID_SIZE), axis=(1, 2))
        shifted = windows[slots, starts_r, starts_c].reshape(-1, SEQ_LEN)
        tokens = np.empty_like(shifted)
        for m in range(task.num_members):
            np.take(luts[m], shifted[m * n:(m + 1) * n], out=tokens[m * n:(m + 1) * n])
        results.append(tokens)
    return results[0], results[1]


def _write_npy_header(f, dtype, shape: tuple[int, ...]) -> None:
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(f, header)


def _offsets(sizes: Iterable[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(np.fromiter(sizes, dtype=np.int64))]).astype(np.int32)


def write_split_streamed(
    out_dir: str, split: str, tasks: list[ArcTask], identifiers: np.ndarray, num_identifiers: int, rng: LegacyRandom,
    progress: bool = True,
) -> PuzzleDatasetMetadata:
    """Write one split group by group: token rows go straight to the .npy files."""
    directory = split_dir(out_dir, split)
    os.makedirs(directory, exist_ok=True)
    puzzle_sizes = [len(t.pairs[split]) for t in tasks for _ in range(t.num_members)]
    num_examples = sum(puzzle_sizes)
    translate = split == TRAIN  # translation augmentation only in train (published)

    with open(array_path(out_dir, split, SET_NAME, "inputs"), "wb") as f_in, \
            open(array_path(out_dir, split, SET_NAME, "labels"), "wb") as f_lab:
        for f in (f_in, f_lab):
            _write_npy_header(f, np.uint8, (num_examples, SEQ_LEN))
        for task in tqdm(tasks, desc=f"write {split}", unit="group", leave=False, disable=not progress):
            inputs, labels = render_group(task, split, rng, translate)
            f_in.write(inputs.data)
            f_lab.write(labels.data)

    arrays = {
        "puzzle_identifiers": identifiers.astype(np.int32),
        "puzzle_indices": _offsets(puzzle_sizes),
        "group_indices": _offsets(t.num_members for t in tasks),
    }
    check_index_arrays(f"ARC {split} split", num_examples, **arrays)
    for field, arr in arrays.items():
        with open(array_path(out_dir, split, SET_NAME, field), "wb") as f:
            np.save(f, arr)

    metadata = PuzzleDatasetMetadata(
        pad_id=PAD_ID,
        ignore_label_id=PAD_ID,
        blank_identifier_id=0,
        vocab_size=VOCAB_SIZE,
        seq_len=SEQ_LEN,
        num_puzzle_identifiers=num_identifiers,
        total_groups=len(tasks),
        mean_puzzle_examples=num_examples / len(puzzle_sizes),
        total_puzzles=len(puzzle_sizes),
        sets=[SET_NAME],
    )
    with open(os.path.join(directory, "dataset.json"), "w") as f:
        json.dump(metadata.model_dump(), f)
    return metadata


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------


def _install_output(tmp_dir: str, output_dir: str) -> None:
    """Move the finished build into place, replacing an earlier build only after it is complete."""
    if os.path.exists(output_dir):
        _check_output_dir(output_dir)
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.old-", dir=os.path.dirname(tmp_dir))
        os.replace(output_dir, os.path.join(old, "d"))
        os.replace(tmp_dir, output_dir)
        shutil.rmtree(old)
    else:
        os.replace(tmp_dir, output_dir)


def build_arc_dataset(config: ArcBuildConfig, progress: bool = True) -> dict[str, PuzzleDatasetMetadata]:
    """Build the dataset into `config.output_dir` (all or nothing); returns the split metadata."""
    validate_config(config)
    test_sets = {config.test_set_name, config.test_set_name2}
    # Read and check every subset before drawing anything or creating any directory.
    subsets = [load_subset(config.input_file_prefix, name, name in test_sets) for name in config.subsets]
    converted = [[convert_task(tid, task, s.is_test_set, s.path) for tid, task in s.tasks] for s in subsets]

    rng = LegacyRandom(config.seed)
    split_tasks: dict[str, list[ArcTask]] = {TRAIN: [], TEST: []}
    test_puzzles: dict[str, dict] = {}
    short = []
    for subset, tasks in zip(subsets, converted):
        order = list(range(len(tasks)))
        rng.shuffle(order)  # same draws as the published shuffle of the (id, task) list
        for idx in tqdm(order, desc=f"augment {subset.name}", unit="puzzle", leave=False, disable=not progress):
            task = tasks[idx]
            if not augment_task(task, config.num_aug, rng):
                short.append((task.task_id, task.num_members))
            for split in task.pairs:
                split_tasks[split].append(task)
            if subset.is_test_set:
                task_id, raw = subset.tasks[idx]
                test_puzzles[task_id] = raw
    if short:
        print(f"{len(short)} puzzles have fewer than {config.num_aug} distinct augmentations "
              f"(group sizes incl. original, first few: {short[:5]}).")
    split_tasks = {split: tasks for split, tasks in split_tasks.items() if tasks}

    identifiers, keys_in_order, task_ids = assign_identifiers(split_tasks, config.puzzle_identifiers_start)
    num_identifiers = config.puzzle_identifiers_start + len(keys_in_order)

    parent = os.path.dirname(os.path.abspath(config.output_dir))
    os.makedirs(parent, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(config.output_dir))}.tmp-", dir=parent)
    try:
        metadata = {}
        for split, tasks in split_tasks.items():
            metadata[split] = write_split_streamed(tmp_dir, split, tasks, identifiers[split], num_identifiers, rng, progress)
        _write_identifiers_json(os.path.join(tmp_dir, "identifiers.json"), config.puzzle_identifiers_start, keys_in_order, task_ids)
        with open(os.path.join(tmp_dir, "test_puzzles.json"), "w") as f:
            f.write(json.dumps(test_puzzles))  # dumps uses the C encoder; json.dump does not
        _install_output(tmp_dir, os.path.abspath(config.output_dir))
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return metadata


def parse_args(argv: Optional[list[str]] = None) -> ArcBuildConfig:
    defaults = ArcBuildConfig(input_file_prefix="", output_dir="")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-file-prefix", required=True, help="e.g. kaggle/combined/arc-agi")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--subsets", nargs="+", default=defaults.subsets)
    parser.add_argument("--test-set-name", default=defaults.test_set_name)
    parser.add_argument("--test-set-name2", default=defaults.test_set_name2)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--num-aug", type=int, default=defaults.num_aug)
    parser.add_argument("--puzzle-identifiers-start", type=int, default=defaults.puzzle_identifiers_start)
    args = parser.parse_args(argv)
    return ArcBuildConfig(**vars(args))


def main(argv: Optional[list[str]] = None) -> None:
    config = parse_args(argv)
    try:
        metadata = build_arc_dataset(config)
    except ArcDataError as e:
        sys.exit(f"error: {e}")
    for split, meta in metadata.items():
        print(f"{split}: {meta.total_groups} groups, {meta.total_puzzles} puzzles, "
              f"{meta.mean_puzzle_examples:.2f} examples per puzzle")
    print(f"{metadata[TRAIN].num_puzzle_identifiers} puzzle identifiers (incl. blank); wrote {config.output_dir}")


if __name__ == "__main__":
    main()
