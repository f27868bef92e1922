"""ARC encoding (docs/builders.md, "ARC"): every example is a 30x30 canvas of tokens.

PAD 0, EOS 1 (the row below and the column right of the grid), colour c -> c + 2. Augmented puzzle
names are `f"{task}|||t{trans}|||{colour map digits}"`. Besides the constants, this module holds what
the ARC builder does to a task after reading it, exactly as published: augmentation (dihedral transform
and colour permutation, duplicates dropped), puzzle naming and numbering, and rendering to token rows.
`parse_augmentation` inverts the naming for the evaluator. The task's face is `TASK`.
"""
from __future__ import annotations

import dataclasses
import os
import shlex

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from dataset.legacy_random import LegacyRandom
from dataset.tasks.dihedral import NUM_DIHEDRAL, TRANSPOSING, dihedral_transform
from dataset.tasks.task import Task

GRID_SIZE = 30  # ARC grids are at most 30x30
SEQ_LEN = GRID_SIZE * GRID_SIZE
PAD_ID = 0
EOS_ID = 1
COLOUR_OFFSET = 2  # token = colour + 2
NUM_COLOURS = 10
VOCAB_SIZE = NUM_COLOURS + COLOUR_OFFSET
NAME_SEPARATOR = "|||"
SET_NAME = "all"
# Standard ARC colours 0..9, as in the ARC task viewer.
PALETTE = ("#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00",
           "#AAAAAA", "#F012BE", "#FF851B", "#7FDBFF", "#870C25")
AUGMENT_RETRIES_FACTOR = 5  # published: at most 5 * num_aug trials per puzzle
BUILDER = "python -m dataset.build_arc_dataset"
BUILDER_OPTIONS = "--input-file-prefix kaggle/combined/arc-agi"  # the files assemble_arc_data writes
ASSEMBLE_COMMAND = "python -m dataset.assemble_arc_data --output-dir kaggle/combined"


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
    aug_maps: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, NUM_COLOURS), np.uint8))

    @property
    def num_members(self) -> int:
        return 1 + len(self.aug_trans)

    def member_trans(self) -> np.ndarray:
        return np.concatenate([[0], self.aug_trans]).astype(np.intp)

    def member_maps(self) -> np.ndarray:
        return np.concatenate([np.arange(NUM_COLOURS, dtype=np.uint8)[None], self.aug_maps], axis=0)


# ---------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------

# bytes.translate table for colours 0..9 (other byte values never occur in cell bytes).
_TABLE_TAIL = bytes(range(NUM_COLOURS, 256))


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
                ti, to = dihedral_transform(inp, trans), dihedral_transform(out, trans)
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
    seen = {keys.key(0, list(range(NUM_COLOURS)))}
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
    task.aug_maps = np.array(maps_kept, dtype=np.uint8).reshape(-1, NUM_COLOURS)
    return len(trans_kept) >= num_aug


# ---------------------------------------------------------------------------------------------
# Names and identifiers
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


def key_to_name(key: int, task_ids: list[str]) -> str:
    """The published name of a packed key (see `assign_identifiers`)."""
    task_id = task_ids[key >> 40]
    if not key & (1 << 39):
        return task_id
    trans, digits = (key >> 32) & 0x7F, key & 0xFFFFFFFF
    return f"{task_id}{NAME_SEPARATOR}t{trans}{NAME_SEPARATOR}0{digits:09d}"


def assign_identifiers(split_tasks: dict[str, list[ArcTask]],
                       start: int) -> tuple[dict[str, np.ndarray], list[int], list[str]]:
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


def parse_augmentation(name: str) -> tuple[str, int, np.ndarray]:
    """`task|||t{trans}|||{digits}` -> (task, trans id, inverse colour map); a plain name is the identity.

    The colour map sends colour c to digits[c]; its inverse is the argsort of the digits.
    """
    if NAME_SEPARATOR not in name:
        return name, 0, np.arange(NUM_COLOURS, dtype=np.uint8)
    parts = name.split(NAME_SEPARATOR)
    trans_field, digits = parts[-2], parts[-1]
    valid_trans = len(trans_field) == 2 and trans_field[0] == "t" and trans_field[1] in "01234567"
    valid_map = len(digits) == NUM_COLOURS and sorted(digits) == list("0123456789")
    if len(parts) != 3 or not valid_trans or not valid_map:
        raise ValueError(f"Puzzle identifier {name!r} is not 'task|||t<0-7>|||<permutation of 0-9>'; "
                         "identifiers.json does not come from the ARC builder.")
    colour_map = np.array([int(d) for d in digits])
    return parts[0], int(trans_field[1]), np.argsort(colour_map).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Rendering
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
            g = dihedral_transform(grid, trans)
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
    specials = np.tile(np.array([PAD_ID, EOS_ID], np.uint8), (task.num_members, 1))
    luts = np.concatenate([specials, task.member_maps() + COLOUR_OFFSET], axis=1)
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


# ---------------------------------------------------------------------------------------------
# The task's face
# ---------------------------------------------------------------------------------------------


def build_commands(dataset_dir: str) -> str:
    """Assembling the sources, then building: ARC-AGI-2's subsets when the directory's name says arc2."""
    name = os.path.basename(os.path.normpath(dataset_dir)).lower()
    subsets = "training2 evaluation2 concept --test-set-name evaluation2" if "arc2" in name else \
        "training evaluation concept --test-set-name evaluation"
    return (f"`{ASSEMBLE_COMMAND}` and then `{BUILDER} {BUILDER_OPTIONS} --output-dir {shlex.quote(dataset_dir)} "
            f"--subsets {subsets}`")


TASK = Task(
    name="arc", title="ARC", renderer="viz.arc.ArcRenderer", vocab_size=VOCAB_SIZE, seq_len=SEQ_LEN,
    builder=BUILDER, builder_options=BUILDER_OPTIONS, first_build=build_commands,
    no_transforms="ARC test sets hold their augmented copies already: the ARC evaluator votes over them.")
