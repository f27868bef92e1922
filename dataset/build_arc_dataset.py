"""ARC builder (docs/builders.md): byte-identical output to the published TRM ARC builder.

    python -m dataset.build_arc_dataset --input-file-prefix kaggle/combined/arc-agi \
        --output-dir data/arc1concept-aug-1000 --subsets training evaluation concept --test-set-name evaluation

Inputs are Kaggle-layout files `{prefix}_{subset}_challenges.json` (+ `_solutions.json`), written by
`python -m dataset.assemble_arc_data`. This module reads and checks them and drives the build; the
encoding itself (augmentation, naming, rendering) is `dataset.tasks.arc`. The published algorithm
(random draws, hashing, identifier order, padding) is reproduced exactly; what differs is only how
the work is done:

* Random draws replay numpy's global legacy RNG stream without calling it per draw
  (`dataset.legacy_random.LegacyRandom`); the global RNG is left untouched.
* Duplicate detection compares the sorted multiset of (shape, bytes) of the pairs instead of the
  published sha256 of sorted per-pair digests: equal exactly when the digests are equal.
* Augmented puzzles are stored as (transform id, colour map) and rendered group by group straight
  into the output files (a window gather from padded canvases plus a colour lookup), so memory
  stays small and the grids are never held as Python lists.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
from typing import Optional

import numpy as np

from dataset.arc_selection import check_selection, select_tasks
from dataset.common import (
    ARC_DATASET_ENTRIES,
    BLANK_IDENTIFIER_NAME,
    PuzzleDatasetMetadata,
    array_path,
    atomic_output_dir,
    check_index_arrays,
    offsets,
    save_array,
    set_metadata,
    split_dir,
    write_identifiers,
    write_json,
    write_metadata,
)
from dataset.legacy_random import LegacyRandom
from dataset.output_dir import REPLACES_ONLY_OWN, check_replaceable
from dataset.tasks.arc import (
    GRID_SIZE,
    NAME_SEPARATOR,
    NUM_COLOURS,
    PAD_ID,
    SEQ_LEN,
    SET_NAME,
    VOCAB_SIZE,
    ArcTask,
    assign_identifiers,
    augment_task,
    key_to_name,
    render_group,
)
from utils import cli
from utils.atomic import make_dirs, writing
from utils.errors import DatasetError

TRAIN, TEST = "train", "test"
EXAMPLE_KINDS = ("train", "test")  # the keys of an ARC task
ASSEMBLE_HINT = "create the Kaggle-layout files with `python -m dataset.assemble_arc_data --output-dir kaggle/combined`"
RECREATE_HINT = "re-create it with `python -m dataset.assemble_arc_data`"


class ArcDataError(DatasetError):
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
    tasks: list[str] | None = None  # ours: only these task ids (dataset/arc_selection.py)
    max_tasks: int | None = None  # ours: only the first N tasks of each subset


# ---------------------------------------------------------------------------------------------
# Loading and validation
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ArcSubset:
    name: str
    path: str
    is_test_set: bool
    tasks: list[tuple[str, dict]]  # (task id, task dict with test outputs filled), in file order
    missing_solutions: str | None = None  # the solutions file that was absent (test outputs set to [[0]])


def _read_json(path: str, what: str):
    """Parse a JSON file; a missing or malformed file is an ArcDataError naming the path."""
    if not os.path.isfile(path):
        raise ArcDataError(f"{what} file {path!r} not found; {ASSEMBLE_HINT}, or fix --input-file-prefix / --subsets.")
    try:
        with open(path, "r") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ArcDataError(f"{what} file {path!r} is not valid JSON ({e}); {RECREATE_HINT}.") from e
    except UnicodeDecodeError as e:
        raise ArcDataError(f"{what} file {path!r} is not UTF-8 text ({e}); {RECREATE_HINT}.") from e


def grid_to_array(grid, where: str) -> np.ndarray:
    """Validate one ARC grid (rectangular, 1..30 x 1..30, integer colours 0..9) -> uint8 array."""
    if not isinstance(grid, list) or not grid or not all(isinstance(row, list) for row in grid):
        raise ArcDataError(f"{where}: a grid must be a non-empty list of rows (lists of colours); "
                           f"got {str(grid)[:60]!r}.")
    if any(len(row) != len(grid[0]) for row in grid) or not grid[0]:
        raise ArcDataError(f"{where}: grid rows must be non-empty and of equal length "
                           f"(got lengths {[len(r) for r in grid][:10]}).")
    arr = np.array(grid)
    # A JSON true/false is a Python bool, an int subclass: numpy turns [1, true] into integers.
    if arr.ndim != 2 or arr.dtype.kind not in "iu" or any(isinstance(v, bool) for row in grid for v in row):
        raise ArcDataError(f"{where}: grid values must be integer colours 0..9.")
    rows, cols = arr.shape
    if rows > GRID_SIZE or cols > GRID_SIZE:
        raise ArcDataError(f"{where}: grid is {rows}x{cols}, larger than {GRID_SIZE}x{GRID_SIZE}; "
                           "ARC grids must fit in 30x30.")
    if arr.min() < 0 or arr.max() >= NUM_COLOURS:
        bad = int(arr.max()) if arr.max() >= NUM_COLOURS else int(arr.min())
        raise ArcDataError(f"{where}: colour {bad} is outside 0..9.")
    return arr.astype(np.uint8)


def _fill_solutions(challenges: dict, solutions, sols_path: str) -> None:
    """Put each solution grid into the matching test pair as its "output" (published behaviour)."""
    if not isinstance(solutions, dict):
        raise ArcDataError(f"{sols_path!r}: expected a JSON object task id -> list of test output grids.")
    for task_id, task in challenges.items():
        if task_id not in solutions:
            raise ArcDataError(f"{sols_path!r} has no solutions for task {task_id!r}; "
                               "use the solutions file that matches the challenges.")
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
        raise ArcDataError(f"{path!r}: task id {task_id!r} must be a string without {NAME_SEPARATOR!r} "
                           "(it separates augmentation fields).")
    if not isinstance(task, dict) or set(task) != set(EXAMPLE_KINDS):
        keys = sorted(task) if isinstance(task, dict) else type(task).__name__
        raise ArcDataError(f"{path!r}: task {task_id!r} must be an object with exactly the keys 'train' and 'test' "
                           f"(got {keys}).")
    for kind in EXAMPLE_KINDS:
        pairs = task[kind]
        if not isinstance(pairs, list) or not pairs or not all(isinstance(p, dict) and "input" in p for p in pairs):
            raise ArcDataError(f"{path!r}: task {task_id!r} {kind!r} must be a non-empty list of "
                               "{'input': grid, ...} pairs.")


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
        # Published behaviour: test pairs without an output get a 1x1 grid of colour 0 (the builder says so once
        # every input is checked: a note before an input error is noise).
        for task in challenges.values():
            for pair in task["test"]:
                pair.setdefault("output", [[0]])
    for task_id, task in challenges.items():
        for kind in EXAMPLE_KINDS:
            if not all("output" in p for p in task[kind]):
                raise ArcDataError(f"{path!r}: task {task_id!r} has {kind!r} pairs without an 'output' grid.")
    return ArcSubset(name, path, is_test_set, list(challenges.items()),
                     None if os.path.isfile(sols_path) else sols_path)


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
        raise ArcDataError("--puzzle-identifiers-start must be >= 1 (0 is the blank identifier), "
                           f"got {config.puzzle_identifiers_start}.")
    check_selection(config.tasks, config.max_tasks)
    # Refuse a directory holding anything but an earlier ARC build before reading any input (checked
    # again when the build is published: see dataset/output_dir.py).
    check_replaceable(config.output_dir, ARC_DATASET_ENTRIES)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _write_npy_header(f, dtype, shape: tuple[int, ...]) -> None:
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(f, header)


def write_split_streamed(
    out_dir: str, split: str, tasks: list[ArcTask], identifiers: np.ndarray, num_identifiers: int, rng: LegacyRandom,
    progress: bool = True,
) -> PuzzleDatasetMetadata:
    """Write one split group by group: token rows go straight to the .npy files."""
    directory = split_dir(out_dir, split)
    make_dirs(directory)
    puzzle_sizes = [len(t.pairs[split]) for t in tasks for _ in range(t.num_members)]
    num_examples = sum(puzzle_sizes)
    translate = split == TRAIN  # translation augmentation only in train (published)

    # A failed write (a full disk: numpy and file writes say so without an errno) is one line naming the file.
    with writing(split_dir(out_dir, split), needed=2 * num_examples * SEQ_LEN), \
            open(array_path(out_dir, split, SET_NAME, "inputs"), "wb") as f_in, \
            open(array_path(out_dir, split, SET_NAME, "labels"), "wb") as f_lab:
        for f in (f_in, f_lab):
            _write_npy_header(f, np.uint8, (num_examples, SEQ_LEN))
        for task in cli.progress(tasks, desc=f"write {split}", unit="group", leave=False, disable=not progress):
            inputs, labels = render_group(task, split, rng, translate)
            f_in.write(inputs.data)
            f_lab.write(labels.data)

    arrays = {
        "puzzle_identifiers": identifiers.astype(np.int32),
        "puzzle_indices": offsets(puzzle_sizes),
        "group_indices": offsets(t.num_members for t in tasks),
    }
    check_index_arrays(f"ARC {split} split", num_examples, **arrays, num_puzzle_identifiers=num_identifiers)
    for field, arr in arrays.items():
        save_array(array_path(out_dir, split, SET_NAME, field), arr)
    metadata = set_metadata(SEQ_LEN, VOCAB_SIZE, num_identifiers, num_examples, len(puzzle_sizes), len(tasks),
                            pad_id=PAD_ID, ignore_label_id=PAD_ID, set_name=SET_NAME)
    write_metadata(out_dir, split, metadata)
    return metadata


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------


def build_arc_dataset(config: ArcBuildConfig, progress: bool = True,
                      note_missing_solutions: bool = True) -> dict[str, PuzzleDatasetMetadata]:
    """Build the dataset into `config.output_dir` (all or nothing); returns the split metadata.

    `note_missing_solutions=False` for a caller whose test outputs are unknown by design (kaggle.adapt)."""
    validate_config(config)
    test_sets = {config.test_set_name, config.test_set_name2}
    # Read and check every subset before drawing anything or creating any directory.
    subsets = [load_subset(config.input_file_prefix, name, name in test_sets) for name in config.subsets]
    subsets = select_tasks(subsets, config.tasks, config.max_tasks)
    converted = [[convert_task(tid, task, s.is_test_set, s.path) for tid, task in s.tasks] for s in subsets]
    for subset in subsets:
        if subset.missing_solutions and note_missing_solutions:
            print(f"{subset.missing_solutions} not found: test outputs of subset {subset.name!r} are set to [[0]].")

    rng = LegacyRandom(config.seed)
    split_tasks: dict[str, list[ArcTask]] = {TRAIN: [], TEST: []}
    test_puzzles: dict[str, dict] = {}
    short = []
    for subset, tasks in zip(subsets, converted):
        order = list(range(len(tasks)))
        rng.shuffle(order)  # same draws as the published shuffle of the (id, task) list
        for idx in cli.progress(order, desc=f"augment {subset.name}", unit="puzzle", leave=False,
                                disable=not progress):
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

    metadata = {}
    with atomic_output_dir(config.output_dir, ARC_DATASET_ENTRIES) as tmp_dir:
        for split, tasks in split_tasks.items():
            metadata[split] = write_split_streamed(tmp_dir, split, tasks, identifiers[split], num_identifiers, rng,
                                                   progress)
        names = (key_to_name(key, task_ids) for key in keys_in_order)
        write_identifiers(tmp_dir, itertools.chain([BLANK_IDENTIFIER_NAME] * config.puzzle_identifiers_start, names))
        write_json(os.path.join(tmp_dir, "test_puzzles.json"), test_puzzles)
    return metadata


def build_parser() -> argparse.ArgumentParser:
    """The published builder's options; their defaults are ArcBuildConfig's."""
    defaults = ArcBuildConfig(input_file_prefix="", output_dir="")
    parser = cli.new_parser(__doc__.splitlines()[0])
    parser.add_argument("--input-file-prefix", required=True,
                        help="the inputs are {prefix}_{subset}_challenges.json (+ _solutions.json), "
                             "e.g. kaggle/combined/arc-agi (required)")
    parser.add_argument("--output-dir", required=True,
                        help=f"directory the dataset is written to (required); {REPLACES_ONLY_OWN}")
    parser.add_argument("--subsets", nargs="+", default=defaults.subsets,
                        help="subsets to read, in this order; all their pairs go to train except the test pairs "
                             "of the test sets")
    parser.add_argument("--test-set-name", default=defaults.test_set_name,
                        help="the subset (one of --subsets) whose test pairs form the test split")
    parser.add_argument("--test-set-name2", default=defaults.test_set_name2,
                        help="a second subset whose test pairs go to the test split, if it is in --subsets")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="seed of the random draws (numpy's legacy RandomState stream, 0..2**32-1)")
    parser.add_argument("--num-aug", type=int, default=defaults.num_aug,
                        help="augmented copies per task (dihedral transform and colour permutation), at most")
    parser.add_argument("--puzzle-identifiers-start", type=int, default=defaults.puzzle_identifiers_start,
                        help="first puzzle identifier; the ones below it are blank (>= 1)")
    selection = parser.add_mutually_exclusive_group()
    selection.add_argument("--tasks", nargs="+", metavar="ID",
                           help="ours: build only these tasks (ids as in the challenges files), e.g. a few for a "
                                "quick run; default: all")
    selection.add_argument("--max-tasks", type=int, metavar="N",
                           help="ours: build only the first N tasks of each subset (file order); default: all")
    return parser


def parse_args(argv: Optional[list[str]] = None) -> ArcBuildConfig:
    args = build_parser().parse_args(argv)
    return ArcBuildConfig(**vars(args))


def main(argv: Optional[list[str]] = None) -> None:
    config = parse_args(argv)
    metadata = cli.run_cli(lambda: build_arc_dataset(config))
    for split, meta in metadata.items():
        print(f"{split}: {meta.total_groups} groups, {meta.total_puzzles} puzzles, "
              f"{meta.mean_puzzle_examples:.2f} examples per puzzle")
    print(f"{metadata[TRAIN].num_puzzle_identifiers} puzzle identifiers (incl. blank); wrote {config.output_dir}")


if __name__ == "__main__":
    main()
