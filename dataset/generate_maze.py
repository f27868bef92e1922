"""Generate 30x30 mazes with a unique shortest path offline, as train.csv/test.csv for `--source-dir`.

    python dataset/generate_maze.py --output-dir data/maze-csv --num-train 1000 --num-test 1000 --seed 0
    python dataset/build_maze_dataset.py --source-dir data/maze-csv --output-dir data/maze-local --aug

Each maze: a random spanning-tree maze (depth-first carving) on the 15x15 lattice of even
coordinates, plus a random fraction of extra openings that create loops; start S and goal G at
two random lattice cells. It is kept when S reaches G by exactly one shortest path (breadth-first
search counting shortest paths, capped at 2) of at least `--min-path-length` steps. The answer is
the question with the path cells between S and G marked "o"; rating = path length in steps.
Train and test mazes are all distinct. Same seed -> identical files.
"""
from __future__ import annotations

import argparse
from typing import Optional

import numpy as np

from dataset.sources import add_generator_arguments, generate_unique_rows, optional_njit, write_generated_csvs
from dataset.tasks.maze import CHARSET, GOAL, OPEN, PAD_ID, PATH, START, VOCAB_SIZE, WALL
from dataset.tasks.maze import GRID_SIZE as GRID
from utils.cli import new_parser, non_negative_int, run_cli

LATTICE = GRID // 2  # lattice cells at even coordinates 0..28; row and column 29 stay walls
MAX_LOOP_FRACTION = 0.15  # per maze, the chance of opening each remaining wall between lattice cells
MAX_ATTEMPTS_PER_MAZE = 200
STEPS = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]], dtype=np.int64)
# Wall cells between two lattice cells: exactly one odd coordinate (row/column 29 stay walls).
_ROWS, _COLS = np.indices((GRID, GRID))
BETWEEN_LATTICE = ((_ROWS % 2) != (_COLS % 2)) & (_ROWS < GRID - 1) & (_COLS < GRID - 1)


# ----------------------------------------------------------------------------------------------
# Compiled kernels (numba when available)


@optional_njit
def carve_tree(choices):
    """(GRID, GRID) int64 grid of WALL/OPEN: a depth-first spanning-tree maze on the lattice.

    `choices[i]` in [0, 1) picks the neighbour at the i-th forward step (random numbers are drawn
    by numpy outside, so the result depends only on them).
    """
    grid = np.full((GRID, GRID), WALL, dtype=np.int64)
    visited = np.zeros((LATTICE, LATTICE), dtype=np.bool_)
    stack = np.zeros((LATTICE * LATTICE, 2), dtype=np.int64)
    options = np.zeros((4, 2), dtype=np.int64)
    stack[0, 0], stack[0, 1] = 0, 0
    visited[0, 0] = True
    grid[0, 0] = OPEN
    top, step = 1, 0
    while top > 0:
        r, c = stack[top - 1, 0], stack[top - 1, 1]
        n = 0
        for d in range(4):
            nr, nc = r + STEPS[d, 0], c + STEPS[d, 1]
            if 0 <= nr < LATTICE and 0 <= nc < LATTICE and not visited[nr, nc]:
                options[n, 0], options[n, 1] = nr, nc
                n += 1
        if n == 0:  # dead end: back up
            top -= 1
            continue
        pick = int(choices[step] * n)
        step += 1
        nr, nc = options[pick, 0], options[pick, 1]
        visited[nr, nc] = True
        grid[2 * nr, 2 * nc] = OPEN
        grid[r + nr, c + nc] = OPEN  # the wall cell between (2r, 2c) and (2nr, 2nc)
        stack[top, 0], stack[top, 1] = nr, nc
        top += 1
    return grid


@optional_njit
def shortest_paths(grid, start):
    """BFS from `start` (flat index): (distance per cell, -1 if unreachable; shortest-path count capped at 2)."""
    size = GRID * GRID
    dist = np.full(size, -1, dtype=np.int64)
    count = np.zeros(size, dtype=np.int64)
    queue = np.zeros(size, dtype=np.int64)
    dist[start], count[start] = 0, 1
    queue[0] = start
    head, tail = 0, 1
    while head < tail:
        v = queue[head]
        head += 1
        r, c = v // GRID, v % GRID
        for d in range(4):
            nr, nc = r + STEPS[d, 0], c + STEPS[d, 1]
            if nr < 0 or nr >= GRID or nc < 0 or nc >= GRID or grid[nr, nc] == WALL:
                continue
            u = nr * GRID + nc
            if dist[u] < 0:
                dist[u] = dist[v] + 1
                count[u] = count[v]
                queue[tail] = u
                tail += 1
            elif dist[u] == dist[v] + 1:
                # Every predecessor of u is dequeued before u, so u's count is final when u is.
                count[u] = min(2, count[u] + count[v])
    return dist, count


@optional_njit
def trace_path(grid, dist, goal):
    """Flat indices of the cells strictly between start and `goal` on the (unique) shortest path."""
    cells = np.zeros(max(dist[goal] - 1, 0), dtype=np.int64)
    v = goal
    for i in range(dist[goal] - 1):
        r, c = v // GRID, v % GRID
        for d in range(4):
            nr, nc = r + STEPS[d, 0], c + STEPS[d, 1]
            if 0 <= nr < GRID and 0 <= nc < GRID and grid[nr, nc] != WALL and dist[nr * GRID + nc] == dist[v] - 1:
                v = nr * GRID + nc
                break
        cells[i] = v
    return cells


# ----------------------------------------------------------------------------------------------
# Maze making


def random_maze(rng: np.random.Generator) -> np.ndarray:
    """(GRID, GRID) WALL/OPEN grid: a spanning-tree maze with some extra openings (loops)."""
    grid = carve_tree(rng.random(LATTICE * LATTICE))
    loop_fraction = rng.random() * MAX_LOOP_FRACTION
    grid[BETWEEN_LATTICE & (grid == WALL) & (rng.random((GRID, GRID)) < loop_fraction)] = OPEN
    return grid


def make_maze(rng: np.random.Generator, min_path_length: int) -> Optional[tuple[np.ndarray, np.ndarray, int]]:
    """(question, answer, path length) as tokens (GRID*GRID,), or None if rejected."""
    grid = random_maze(rng)
    s, g = rng.choice(LATTICE * LATTICE, size=2, replace=False)
    start = 2 * (s // LATTICE) * GRID + 2 * (s % LATTICE)
    goal = 2 * (g // LATTICE) * GRID + 2 * (g % LATTICE)
    dist, count = shortest_paths(grid, start)
    length = int(dist[goal])
    if length < max(min_path_length, 1) or count[goal] != 1:
        return None
    question = grid.reshape(-1).copy()
    question[start], question[goal] = START, GOAL
    answer = question.copy()
    answer[trace_path(grid, dist, goal)] = PATH
    return question, answer, length


# Token -> ASCII code of its CSV character (PAD has none), and back.
CHAR_CODE_OF_TOKEN = np.zeros(VOCAB_SIZE, dtype=np.uint8)
CHAR_CODE_OF_TOKEN[PAD_ID + 1:] = np.frombuffer(CHARSET.encode("ascii"), dtype=np.uint8)


def to_string(cells: np.ndarray) -> str:
    """Tokens -> the CSV string (one table lookup instead of 900 Python steps)."""
    return CHAR_CODE_OF_TOKEN[cells].tobytes().decode("ascii")


def from_string(text: str) -> np.ndarray:
    """The CSV string -> tokens (int64), the inverse of `to_string`."""
    table = np.zeros(256, dtype=np.int64)
    table[CHAR_CODE_OF_TOKEN[PAD_ID + 1:]] = np.arange(PAD_ID + 1, VOCAB_SIZE)
    return table[np.frombuffer(text.encode("ascii"), dtype=np.uint8)]


def generate_rows(count: int, rng: np.random.Generator, min_path_length: int, seen: set[str],
                  desc: str) -> list[tuple[str, str, str, int]]:
    """`count` CSV rows of new mazes (not in `seen`, which is updated); rating = path length."""
    return generate_unique_rows(count, lambda: make_maze(rng, min_path_length), to_string, seen, desc, "mazes",
                                MAX_ATTEMPTS_PER_MAZE * (count + 10), "lower --min-path-length")


def generate(args: argparse.Namespace, announce: bool = True) -> None:
    rng = np.random.default_rng(args.seed)
    write_generated_csvs(args.output_dir, args.num_train, args.num_test,
                         lambda count, seen, desc: generate_rows(count, rng, args.min_path_length, seen, desc), "mazes",
                         announce)


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__.splitlines()[0])
    add_generator_arguments(parser, default_output="data/maze-csv", num_train=1000, num_test=1000, unit="mazes")
    parser.add_argument("--min-path-length", type=non_negative_int, default=110,
                        help="keep mazes whose shortest S->G path has at least this many steps ('hard': long paths)")
    return parser


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    run_cli(lambda: generate(args))


if __name__ == "__main__":
    main()
