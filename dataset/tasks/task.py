"""What the code outside a task's module knows of the task: its `Task` entry in the registry (dataset.tasks.TASKS).

Every field past the encoding is optional: a task without a text form is not answered by predict.py, one
without transforms has no test-time augmentation, and so on. The renderer is named, not imported, so that
dataset/ does not import viz/ (viz.puzzles imports it by that name).
"""
from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import numpy as np

from dataset.tasks.permutation import TokenPermutation


@dataclass(frozen=True)
class TextForm:
    """A task's puzzles as text (predict.py reads and prints them; pasting an answer back is a puzzle again)."""

    placeholder: str  # the value of predict.py's key named after the task: `"<81 cells>"`, `FILE`
    from_file: bool  # the key names a file holding the text (else it is the text)
    parse: Callable[[str, str], np.ndarray]  # (text, where it came from) -> tokens; ConfigError when malformed
    parse_csv: Callable[[str, str], np.ndarray]  # (a CSV field, where) -> tokens: the one-line form
    format: Callable[[np.ndarray], str]  # answer tokens -> text
    verdicts: tuple[str, str]  # what is printed of an answer that is not / is solved (`is_solved`)
    # (puzzle, answer) tokens -> why the answer is not solved, in a few words (None when it is): printed with it.
    why_not: Optional[Callable[[np.ndarray, np.ndarray], Optional[str]]] = None


@dataclass(frozen=True)
class Task:
    """One task: its encoding's shape, its names, its builder, and the optional hooks of its face."""

    name: str  # the task name: task_of's answer, predict.py's key, visualize.py's --task
    title: str  # in sentences: "trained on Sudoku"
    renderer: str  # the viz class drawing it, as `module.Class`
    vocab_size: Optional[int] = None  # the encoding; None: any (the generic fallback)
    seq_len: Optional[int] = None
    builder: Optional[str] = None  # the builder's command, before its options
    builder_options: str = ""  # options every build needs, before `--output-dir`
    first_build: Optional[Callable[[str], str]] = None  # build_commands, where more than the builder is needed
    transforms: Optional[Callable[[int, np.random.Generator], list[TokenPermutation]]] = None  # TTA: (count, rng)
    no_transforms: str = ""  # why there are none, where there is a reason (said when test-time augmentation is asked)
    # (C, B, S) answers, (B, S) inputs -> (C, B) bool, numpy: the answers that may vote with tta_sudoku_check.
    valid_completions: Optional[Callable[[np.ndarray, np.ndarray], np.ndarray]] = None
    is_solved: Optional[Callable[[np.ndarray, np.ndarray], bool]] = None  # (puzzle, answer) tokens -> solved
    text: Optional[TextForm] = None

    def rebuild_command(self, dataset_dir: str) -> str:
        """The builder's command for `dataset_dir` (its other options are those it was built with)."""
        return " ".join(filter(None, (self.builder, self.builder_options, f"--output-dir {dataset_dir}")))

    def build_commands(self, dataset_dir: str) -> str:
        """The command(s), in backquotes, that build `dataset_dir` from nothing (README "Datasets")."""
        if self.first_build is not None:
            return self.first_build(dataset_dir)
        return f"`{self.rebuild_command(shlex.quote(dataset_dir))}`"
