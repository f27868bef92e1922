"""Maze pictures: walls, S and G, the true path, and a prediction's path against it.

The encoding (token = 1 + position in "# SGo") is `dataset.tasks.maze` (docs/builders.md).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from dataset.tasks.maze import GOAL, GRID_SIZE, PATH, SEQ_LEN, START, WALL
from viz.sheet import Panel, Renderer, object_grid

COLOURS = {
    "wall": "#2B2B2B", "open": "#FFFFFF", "start": "#2ECC40", "goal": "#FF4136",
    "path": "#0074D9",  # on the true path and predicted (or the true path alone)
    "missed": "#FFDC00",  # on the true path, not predicted
    "extra": "#F012BE",  # predicted, not on the true path
}
LEGEND = [(COLOURS["wall"], "wall"), (COLOURS["start"], "S start"), (COLOURS["goal"], "G goal"),
          (COLOURS["path"], "path (true and predicted)"), (COLOURS["missed"], "true path, missed"),
          (COLOURS["extra"], "predicted, not on the true path")]


def _base_colours(maze: np.ndarray) -> np.ndarray:
    """Walls dark, everything else open, S and G marked (paths are painted on top)."""
    colours = object_grid(maze.shape, COLOURS["open"])
    colours[maze == WALL] = COLOURS["wall"]
    colours[maze == START] = COLOURS["start"]
    colours[maze == GOAL] = COLOURS["goal"]
    return colours


def maze_panel(title: str, maze: np.ndarray, truth: Optional[np.ndarray] = None,
               predicted: Optional[np.ndarray] = None) -> Panel:
    """The maze with the true path; with a prediction, path cells coloured by both / missed / extra."""
    colours = _base_colours(maze)
    panel = Panel(title, colours, grid_lines=False)
    if truth is None:
        return panel
    on_true = truth == PATH
    if predicted is None:
        colours[on_true] = COLOURS["path"]
        return panel
    on_pred = predicted == PATH
    colours[on_true & on_pred] = COLOURS["path"]
    colours[on_true & ~on_pred] = COLOURS["missed"]
    colours[~on_true & on_pred] = COLOURS["extra"]
    # Other differences (a wall or S/G overwritten) have no colour of their own: outline them.
    panel.errors = (predicted != truth) & ~(on_true ^ on_pred)
    return panel


class MazeRenderer(Renderer):
    """The maze, the true path and (with outputs) the predicted path against the true one."""

    name, legend, seq_len = "maze", LEGEND, SEQ_LEN
    outline = "wrong wall, open cell, S or G"  # path differences have colours of their own
    answer_legend = [(COLOURS["wall"], "wall"), (COLOURS["start"], "S start"), (COLOURS["goal"], "G goal"),
                     (COLOURS["path"], "predicted path")]

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        return np.asarray(tokens, dtype=np.int64).reshape(GRID_SIZE, GRID_SIZE)

    def panels(self, maze: np.ndarray, truth: np.ndarray) -> list[Panel]:
        return [maze_panel("maze", maze), maze_panel("true path", maze, truth)]

    def prediction_panel(self, maze: np.ndarray, truth: np.ndarray, predicted: np.ndarray) -> Panel:
        return maze_panel("predicted vs true path", maze, truth, predicted)

    def answer_panels(self, maze: np.ndarray, answer: np.ndarray, solved: bool) -> tuple[list[Panel], None]:
        """Not judged: a path from S to G (`solved`) need not be the shortest one."""
        # maze_panel paints the path cells of its `truth` grid: here the answer's (there is no truth).
        return [maze_panel("maze", maze), maze_panel("predicted path", maze, answer)], None
