"""The puzzle encodings: how each task's grids become token sequences, defined once.

Builders, the loader's users (evaluator, pictures) and tests import their constants from here:
`dataset.tasks.arc`, `dataset.tasks.sudoku`, `dataset.tasks.maze`, and the square's symmetries in
`dataset.tasks.dihedral`. `task_of` names the task a built dataset encodes.
"""
from typing import Literal

TaskName = Literal["arc", "sudoku", "maze", "generic"]


def task_of(vocab_size: int, seq_len: int) -> TaskName:
    """The task whose encoding has this (vocab_size, seq_len), or "generic" for any other dataset.

    The dataset format (docs/data-format.md) has no task field (the published builders write none),
    so a built dataset is recognised by the shape of its encoding; each task module declares its own.
    """
    from dataset.tasks import arc, maze, sudoku

    for name, module in (("arc", arc), ("sudoku", sudoku), ("maze", maze)):
        if (module.VOCAB_SIZE, module.SEQ_LEN) == (vocab_size, seq_len):
            return name
    return "generic"
