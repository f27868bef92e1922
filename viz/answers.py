"""Pictures of a model's answers to puzzles that come without a solution (predict.py): each puzzle beside its
answer, drawn by the task's renderer (`Renderer.answer_panels`); nothing is marked wrong, and a verdict says only
whether the answer is a valid completion (VALIDITY_MARK): there is no solution to call it right."""
from __future__ import annotations

from typing import Protocol

import numpy as np

from viz.puzzles import RENDERERS
from viz.sheet import NAME_SEPARATOR, VALIDITY_MARK, Example, Renderer, Sheet


class Answered(Protocol):
    """What the picture tells of an answer (predict.Answer)."""

    tokens: np.ndarray
    steps: int
    confidence: float
    votes: int


def answer_example(renderer: Renderer, index: int, puzzle: np.ndarray, answer: Answered, candidates: int,
                   solved: bool) -> Example:
    """Puzzle number `index` (from 0) and its answer; `candidates` > 1: the answer won a vote of that many."""
    # The number is the printed `puzzle N/M`; the PNG writes the name along the panels' edge, in lines.
    parts = [f"#{index + 1}", f"steps {answer.steps}", f"confidence {answer.confidence:.3f}"]
    if candidates > 1:
        parts.append(f"votes {answer.votes}/{candidates}")
    name = NAME_SEPARATOR.join(parts)
    panels, verdict = renderer.answer_panels(renderer.decode(puzzle), renderer.decode(answer.tokens), solved)
    return Example(name, panels, verdict)


def answers_sheet(task: str, checkpoint: str, puzzles: list[np.ndarray], answers: list[Answered],
                  solved: list[bool], candidates: int, note: str) -> Sheet:
    """The sheet of the puzzles (input tokens) of `task` and `checkpoint`'s answers; `solved`: the task's verdicts."""
    renderer = RENDERERS[task]
    examples = [answer_example(renderer, i, puzzle, answer, candidates, ok)
                for i, (puzzle, answer, ok) in enumerate(zip(puzzles, answers, solved))]
    return Sheet(f"{task}{NAME_SEPARATOR}{checkpoint}", renderer.name, examples, renderer.answer_legend, note,
                 marks=dict(VALIDITY_MARK))
