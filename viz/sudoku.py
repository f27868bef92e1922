"""Sudoku pictures: 9x9 boards with 3x3 boxes; clues shaded, filled digits blue, wrong digits red on pink.

The encoding (token = digit + 1, blank 1) is `dataset.tasks.sudoku` (docs/builders.md).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from dataset.tasks.sudoku import BLOCK, SEQ_LEN, SIDE, token_digits
from viz.sheet import STYLE_CLUE, STYLE_FILL, STYLE_WRONG, Panel, Renderer

CLUE_BG, EMPTY_BG, WRONG_BG = "#E8E8E8", "#FFFFFF", "#FFC9C9"
LEGEND = [(CLUE_BG, "clue"), (EMPTY_BG, "filled digit (blue)"), (WRONG_BG, "wrong digit (red; ? = left blank)")]


def sudoku_panel(title: str, clues: np.ndarray, digits: np.ndarray, solution: Optional[np.ndarray] = None) -> Panel:
    """A board: clue cells shaded with bold digits, filled digits in blue, wrong digits red on pink.

    `digits` is the full board to show; with `solution`, every cell that differs is wrong (also a
    changed clue: the exact-accuracy metric scores every cell).
    """
    is_clue = clues != 0
    texts = np.where(digits > 0, digits.astype(str), "").astype(object)
    styles = np.where(is_clue, STYLE_CLUE, np.where(digits > 0, STYLE_FILL, "")).astype(object)
    colours = np.where(is_clue, CLUE_BG, EMPTY_BG).astype(object)
    panel = Panel(title, colours, texts, styles, block=BLOCK)
    if solution is not None:
        wrong = digits != solution
        texts[wrong & (digits == 0)] = "?"  # a blank prediction is a missing digit: show it
        styles[wrong] = STYLE_WRONG
        colours[wrong] = WRONG_BG
        panel.errors = wrong
    return panel


class SudokuRenderer(Renderer):
    """The puzzle, its solution and (with outputs) the predicted board."""

    name, legend, seq_len = "sudoku", LEGEND, SEQ_LEN
    outline = "differs from the solution"  # also a changed clue: the metric scores every cell
    answer_legend = [(CLUE_BG, "clue"), (EMPTY_BG, "answered digit (blue)")]

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """9x9 digits, 0 = blank."""
        return token_digits(tokens).reshape(SIDE, SIDE)

    def panels(self, clues: np.ndarray, solution: np.ndarray) -> list[Panel]:
        return [sudoku_panel("puzzle", clues, clues), sudoku_panel("solution", clues, solution)]

    def prediction_panel(self, clues: np.ndarray, solution: np.ndarray, digits: np.ndarray) -> Panel:
        return sudoku_panel("prediction", clues, digits, solution)

    def answer_panels(self, clues: np.ndarray, answer: np.ndarray, solved: bool) -> tuple[list[Panel], bool]:
        panel = sudoku_panel("answer", clues, answer)
        panel.verdict = solved  # a valid completion of the clues solves the puzzle
        return [sudoku_panel("puzzle", clues, clues), panel], solved
