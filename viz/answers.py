"""Pictures of a model's answers to puzzles that come without a solution (predict.py): each puzzle beside its
answer, drawn by the task's renderer (`Renderer.answer_panels`); nothing is marked wrong."""
from __future__ import annotations

from typing import Protocol

import numpy as np

from viz.puzzles import RENDERERS
from viz.sheet import Example, Renderer, Sheet


class Answered(Protocol):
    """What the picture tells of an answer (predict.Answer)."""

    tokens: np.ndarray
    steps: int
    confidence: float
    votes: int


def answer_example(renderer: Renderer, index: int, puzzle: np.ndarray, answer: Answered, candidates: int,
                   solved: bool) -> Example:
    """Puzzle number `index` (from 0) and its answer; `candidates` > 1: the answer won a vote of that many."""
    # Short: the PNG writes it along the panels' edge. The number is the printed `puzzle N/M`.
    name = f"#{index + 1} \u00b7 steps {answer.steps} \u00b7 confidence {answer.confidence:.3f}"
    if candidates > 1:
        name += f" \u00b7 votes {answer.votes}/{candidates}"
    panels, verdict = renderer.answer_panels(renderer.decode(puzzle), renderer.decode(answer.tokens), solved)
    return Example(name, panels, verdict)


def answers_sheet(task: str, checkpoint: str, puzzles: list[np.ndarray], answers: list[Answered],
                  solved: list[bool], candidates: int, note: str) -> Sheet:
    """The sheet of the puzzles (input tokens) of `task` and `checkpoint`'s answers; `solved`: the task's verdicts."""
    renderer = RENDERERS[task]
    examples = [answer_example(renderer, i, puzzle, answer, candidates, ok)
                for i, (puzzle, answer, ok) in enumerate(zip(puzzles, answers, solved))]
    return Sheet(f"{task} \u00b7 {checkpoint}", renderer.name, examples, renderer.answer_legend, note)
