"""The tasks, one module each, and `TASKS`, the registry every task-dependent part of the code reads.

Each task module (`dataset.tasks.arc`, `dataset.tasks.sudoku`, `dataset.tasks.maze`) holds its encoding's
constants and ends with its `TASK` entry (dataset.tasks.task.Task): its names, builder, picture renderer,
test-time augmentation and text form. `task_of` names the task a built dataset encodes; "generic" is any
other dataset. The square's symmetries are `dataset.tasks.dihedral`.
"""
from dataset.tasks import arc, maze, sudoku
from dataset.tasks.task import Task

GENERIC = Task(name="generic", title="a generic dataset", renderer="viz.generic.GenericRenderer")
TASKS: dict[str, Task] = {task.name: task for task in (arc.TASK, sudoku.TASK, maze.TASK, GENERIC)}


def task_of(vocab_size: int, seq_len: int) -> str:
    """The task whose encoding has this (vocab_size, seq_len), or "generic" for any other dataset.

    The dataset format (docs/data-format.md) has no task field (the published builders write none),
    so a built dataset is recognised by the shape of its encoding; each task module declares its own.
    """
    for task in TASKS.values():
        if task.vocab_size is not None and (task.vocab_size, task.seq_len) == (vocab_size, seq_len):
            return task.name
    return GENERIC.name
