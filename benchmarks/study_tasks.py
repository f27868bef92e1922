"""The generated tasks of benchmarks/lma_study.py: fresh examples on every call, in the datasets' own encodings.

- `arc`: ARC-like grid transforms on the ARC canvas (30x30 tokens, PAD 0, EOS 1 below and right of the
  grid, colour c -> c + 2; 16 puzzle-prefix tokens, 916 positions). Each example is a random grid of
  2..max_size cells a side (background with a few coloured rectangles) and one of several transforms,
  which the puzzle identifier names: the puzzle embedding is the only way to tell which one is asked.
- `maze`: 30x30 mazes from dataset/generate_maze.py (unique shortest path of at least min_path_length
  steps, marked in the answer), one puzzle identifier, 916 positions.
- `sudoku`: puzzles from dataset/generate_sudoku.py (unique solution, 45-55 blanks by default), one
  puzzle identifier, 16 + 81 = 97 positions: the short-input control.
"""
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from dataset import generate_maze, generate_sudoku
from dataset.common import IGNORE_LABEL_ID
from dataset.tasks import arc, maze, sudoku

Examples = Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray, int]]  # -> (inputs, labels, identifier)


@dataclass(frozen=True)
class StudyTask:
    name: str
    seq_len: int
    vocab_size: int
    num_puzzle_identifiers: int
    example: Examples
    description: str

    def batch(self, batch_size: int, rng: np.random.Generator, device: torch.device) -> dict[str, torch.Tensor]:
        examples = [self.example(rng) for _ in range(batch_size)]
        inputs, labels, ids = (np.stack([e[i] for e in examples]) for i in range(3))
        return {"inputs": torch.from_numpy(inputs.astype(np.int32)).to(device),
                "labels": torch.from_numpy(labels.astype(np.int32)).to(device),
                "puzzle_identifiers": torch.from_numpy(ids.astype(np.int32)).to(device)}


# ---------------------------------------------------------------------------------------------
# ARC-like transforms
# ---------------------------------------------------------------------------------------------
RECOLOUR = np.array([0, 3, 7, 1, 9, 2, 8, 4, 6, 5])  # a fixed permutation of the colours, background 0 kept


def _shift_right(grid: np.ndarray) -> np.ndarray:
    shifted = np.zeros_like(grid)
    shifted[:, 1:] = grid[:, :-1]
    return shifted


ARC_TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "flip_lr": lambda g: g[:, ::-1], "flip_ud": lambda g: g[::-1, :], "transpose": lambda g: g.T,
    "rotate_180": lambda g: g[::-1, ::-1], "recolour": lambda g: RECOLOUR[g], "shift_right": _shift_right,
}


def random_grid(rng: np.random.Generator, max_size: int) -> np.ndarray:
    """A background grid of 2..max_size cells a side with one to three coloured rectangles."""
    rows, cols = (int(n) for n in rng.integers(2, max_size + 1, size=2))
    grid = np.zeros((rows, cols), dtype=np.int64)
    for _ in range(int(rng.integers(1, 4))):
        top, left = int(rng.integers(rows)), int(rng.integers(cols))
        bottom, right = top + int(rng.integers(1, rows - top + 1)), left + int(rng.integers(1, cols - left + 1))
        grid[top:bottom, left:right] = rng.integers(1, arc.NUM_COLOURS)
    return grid


def arc_canvas(grid: np.ndarray) -> np.ndarray:
    """The ARC encoding of one grid: colours + 2 at the top left, EOS below and right of it, PAD elsewhere."""
    canvas = np.full((arc.GRID_SIZE, arc.GRID_SIZE), arc.PAD_ID, dtype=np.int64)
    rows, cols = grid.shape
    canvas[:rows, :cols] = grid + arc.COLOUR_OFFSET
    if rows < arc.GRID_SIZE:
        canvas[rows, :cols] = arc.EOS_ID
    if cols < arc.GRID_SIZE:
        canvas[:rows, cols] = arc.EOS_ID
    return canvas.reshape(-1)


def arc_example(max_size: int) -> Examples:
    names = list(ARC_TRANSFORMS)

    def example(rng: np.random.Generator):
        which = int(rng.integers(len(names)))
        grid = random_grid(rng, max_size)
        labels = arc_canvas(ARC_TRANSFORMS[names[which]](grid))
        labels[labels == arc.PAD_ID] = IGNORE_LABEL_ID  # as the loader does with the ARC ignore_label_id
        return arc_canvas(grid), labels, which + 1  # identifier 0 is the blank puzzle
    return example


# ---------------------------------------------------------------------------------------------
# Maze and Sudoku
# ---------------------------------------------------------------------------------------------
def maze_example(min_path_length: int) -> Examples:
    def example(rng: np.random.Generator):
        while True:
            made = generate_maze.make_maze(rng, min_path_length)
            if made is not None:
                return made[0], made[1], 0
    return example


def sudoku_example(min_blanks: int, max_blanks: int) -> Examples:
    def example(rng: np.random.Generator):
        while True:
            made = generate_sudoku.make_puzzle(rng, min_blanks, max_blanks)
            if made is not None:
                return made[0] + sudoku.DIGIT_OFFSET, made[1] + sudoku.DIGIT_OFFSET, 0
    return example


TASK_NAMES = ("arc", "maze", "sudoku")


def build_task(name: str, arc_max_size: int, maze_min_path_length: int, sudoku_blanks: tuple[int, int]) -> StudyTask:
    if name == "arc":
        return StudyTask("arc", arc.SEQ_LEN, arc.VOCAB_SIZE, len(ARC_TRANSFORMS) + 1, arc_example(arc_max_size),
                         f"ARC-like transforms ({', '.join(ARC_TRANSFORMS)}) of grids up to {arc_max_size}x"
                         f"{arc_max_size} on the 30x30 canvas")
    if name == "maze":
        return StudyTask("maze", maze.SEQ_LEN, maze.VOCAB_SIZE, 1, maze_example(maze_min_path_length),
                         f"30x30 mazes, shortest path >= {maze_min_path_length} steps")
    if name == "sudoku":
        return StudyTask("sudoku", sudoku.SEQ_LEN, sudoku.VOCAB_SIZE, 1, sudoku_example(*sudoku_blanks),
                         f"Sudoku, {sudoku_blanks[0]}-{sudoku_blanks[1]} blanks")
    raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASK_NAMES)}")
