"""A few ARC tasks instead of all (`--tasks ID ...` or `--max-tasks N` of `dataset.build_arc_dataset`).

The selection is made on the loaded subsets, before any random draw: the build then shuffles and
augments the selected tasks as it would the whole subsets (so a selection is not a slice of the
published build, whose draws depend on every task). Without a selection nothing changes.
"""
from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from utils.errors import DatasetError

# A loaded subset (`dataset.build_arc_dataset.ArcSubset`, which imports this module): its name, challenges
# path, whether it is a test set, and its (task id, task) pairs in file order.
ArcSubset = Any


def check_selection(task_ids: list[str] | None, max_tasks: int | None) -> None:
    """The options alone (before any file is read): at most one way to select, and a positive count."""
    if task_ids is not None and max_tasks is not None:
        raise DatasetError("--tasks and --max-tasks both select tasks: give one of them.")
    if max_tasks is not None and max_tasks < 1:
        raise DatasetError(f"--max-tasks must be >= 1, got {max_tasks}.")
    if task_ids is not None and not task_ids:
        raise DatasetError("--tasks is empty: name at least one task id, or leave --tasks out to build every task.")


def select_tasks(subsets: list[ArcSubset], task_ids: list[str] | None, max_tasks: int | None) -> list[ArcSubset]:
    """Keep the tasks named in `task_ids` (wherever they are), or the first `max_tasks` of each subset (file order).

    A named id that no subset holds stops the build, naming the files searched; so does a selection that
    leaves a test set without tasks (the dataset would have no test split).
    """
    check_selection(task_ids, max_tasks)
    if task_ids is None and max_tasks is None:
        return subsets
    if max_tasks is not None:
        return [dataclasses.replace(s, tasks=s.tasks[:max_tasks]) for s in subsets]
    wanted = set(task_ids)
    known = [task_id for s in subsets for task_id, _ in s.tasks]
    unknown = sorted(wanted - set(known))
    if unknown:
        files = ", ".join(s.path for s in subsets)
        close = [m for name in unknown for m in difflib.get_close_matches(name, known, n=1)]
        hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
        raise DatasetError(f"--tasks: no task {', '.join(map(repr, unknown))} in {files}; {hint}task ids are the keys "
                           f"of those challenges files (e.g. {known[0]!r}): check the spelling or add the subset "
                           "that holds them to --subsets.")
    selected = [dataclasses.replace(s, tasks=[(tid, task) for tid, task in s.tasks if tid in wanted])
                for s in subsets]
    for subset in selected:
        if subset.is_test_set and not subset.tasks:
            raise DatasetError(f"--tasks names no task of the test set {subset.name!r} ({subset.path}): the "
                               "dataset would have no test split; add some of its tasks, or make the subset that "
                               "holds your tasks the test set (--test-set-name).")
    return [s for s in selected if s.tasks]
