"""Generate Sudoku puzzles with a unique solution offline, as train.csv/test.csv for `--source-dir`.

    python dataset/generate_sudoku.py --output-dir data/sudoku-csv --num-train 1000 --num-test 200 --seed 0
    python dataset/build_sudoku_dataset.py --source-dir data/sudoku-csv --output-dir data/sudoku-local --num-aug 10

Each puzzle: a random full grid (a backtracking fill with random candidate order), then clues are
removed in random order, each removal kept only while the solution stays unique, until the drawn
number of blanks is reached. Rating = the solver's backtrack count (dead ends met before it finds
the solution), as in the Sudoku-Extreme CSVs, so `--min-difficulty` selects hard puzzles.
Train and test puzzles are all distinct. Same seed -> identical files.
"""
from __future__ import annotations

import argparse
from typing import Optional

import numpy as np

from dataset.sources import add_generator_arguments, generate_unique_rows, optional_njit, write_generated_csvs
from dataset.tasks.sudoku import ALL_DIGITS_MASK, ANSWER_CHARS, BLANK_CHAR
from utils.cli import new_parser, non_negative_int, positive_int, run_cli

CANONICAL_ORDER = np.tile(np.arange(1, 10, dtype=np.int64), (81, 1))  # try digits 1..9 in every cell
# Give up on a filter that (almost) never accepts, instead of looping forever.
MAX_ATTEMPTS_PER_PUZZLE = 200


# ----------------------------------------------------------------------------------------------
# Solver (numba-compiled when available): iterative depth-first search over bitmasks, always
# branching on the empty cell with the fewest candidates.


@optional_njit
def _popcount(mask):
    n = 0
    while mask:
        mask &= mask - 1
        n += 1
    return n


@optional_njit
def search(grid, order, limit, solution):
    """Count solutions of `grid` (int64[81], 0 = blank), stopping at `limit`.

    Candidates of cell c are tried in the order `order[c]` (a permutation of 1..9). The first
    solution found is written to `solution`. Returns (number of solutions found (<= limit),
    backtracks before the first solution), where a backtrack is a dead end: an empty cell
    without candidates. Givens that contradict each other give (0, 0).
    """
    g = grid.copy()
    rows = np.zeros(9, dtype=np.int64)
    cols = np.zeros(9, dtype=np.int64)
    boxes = np.zeros(9, dtype=np.int64)
    for c in range(81):
        v = g[c]
        if v != 0:
            r, k = c // 9, c % 9
            b = (r // 3) * 3 + k // 3
            bit = 1 << v
            if (rows[r] | cols[k] | boxes[b]) & bit:
                return 0, 0
            rows[r] |= bit
            cols[k] |= bit
            boxes[b] |= bit

    cells = np.zeros(81, dtype=np.int64)  # cell being assigned at each depth
    remaining = np.zeros(81, dtype=np.int64)  # candidates not yet tried at each depth
    depth = 0
    count = 0
    backtracks = 0
    first_backtracks = 0
    select = True  # True: choose a new cell at `depth`; False: try the next candidate at `depth`
    while True:
        if select:
            best, best_n, best_mask = -1, 10, 0
            for c in range(81):
                if g[c] == 0:
                    r, k = c // 9, c % 9
                    mask = ~(rows[r] | cols[k] | boxes[(r // 3) * 3 + k // 3]) & ALL_DIGITS_MASK
                    n = _popcount(mask)
                    if n < best_n:
                        best, best_n, best_mask = c, n, mask
                        if n <= 1:
                            break
            if best < 0 or best_n == 0:
                if best < 0:  # no empty cell left: a solution
                    count += 1
                    if count == 1:
                        solution[:] = g
                        first_backtracks = backtracks
                    if count >= limit:
                        return count, first_backtracks
                else:
                    backtracks += 1
                if depth == 0:
                    break
                depth -= 1
                select = False
                continue
            cells[depth] = best
            remaining[depth] = best_mask

        c = cells[depth]
        r, k = c // 9, c % 9
        b = (r // 3) * 3 + k // 3
        v = g[c]
        if v != 0:  # undo the previous candidate of this cell
            bit = 1 << v
            rows[r] &= ~bit
            cols[k] &= ~bit
            boxes[b] &= ~bit
            g[c] = 0
        mask = remaining[depth]
        if mask == 0:  # every candidate of this cell tried
            if depth == 0:
                break
            depth -= 1
            select = False
            continue
        v = 0
        for i in range(9):
            if mask & (1 << order[c, i]):
                v = order[c, i]
                break
        bit = 1 << v
        remaining[depth] = mask & ~bit
        g[c] = v
        rows[r] |= bit
        cols[k] |= bit
        boxes[b] |= bit
        depth += 1
        select = True
    return count, (first_backtracks if count > 0 else backtracks)


@optional_njit
def carve(solution, cell_order, target_blanks, canonical_order):
    """Blank cells of `solution` in `cell_order` while the puzzle keeps a unique solution.

    Stops at `target_blanks` blanks or when every cell was tried; returns (puzzle, blanks).
    """
    puzzle = solution.copy()
    scratch = np.zeros(81, dtype=np.int64)
    blanks = 0
    for i in range(81):
        if blanks >= target_blanks:
            break
        c = cell_order[i]
        value = puzzle[c]
        puzzle[c] = 0
        count, _ = search(puzzle, canonical_order, 2, scratch)
        if count == 1:
            blanks += 1
        else:
            puzzle[c] = value
    return puzzle, blanks


# ----------------------------------------------------------------------------------------------
# Python-level helpers


def count_solutions(puzzle: np.ndarray, limit: int = 2) -> tuple[int, int, np.ndarray]:
    """(solutions found up to `limit`, rating, first solution) of an (81,) grid with 0 = blank."""
    solution = np.zeros(81, dtype=np.int64)
    count, rating = search(np.asarray(puzzle, dtype=np.int64), CANONICAL_ORDER, limit, solution)
    return int(count), int(rating), solution


def random_full_grid(rng: np.random.Generator) -> np.ndarray:
    """A random valid full grid: solve the empty grid trying digits in a random order per cell."""
    order = (np.argsort(rng.random((81, 9)), axis=1) + 1).astype(np.int64)
    solution = np.zeros(81, dtype=np.int64)
    count, _ = search(np.zeros(81, dtype=np.int64), order, 1, solution)
    assert count == 1, "the empty Sudoku grid always has a solution"
    return solution


def make_puzzle(rng: np.random.Generator, min_blanks: int,
                max_blanks: int) -> Optional[tuple[np.ndarray, np.ndarray, int]]:
    """(puzzle, solution, rating) with a unique solution, or None if too few clues could be removed."""
    solution = random_full_grid(rng)
    target = int(rng.integers(min_blanks, max_blanks + 1))
    puzzle, blanks = carve(solution, rng.permutation(81).astype(np.int64), target, CANONICAL_ORDER)
    if blanks < min_blanks:
        return None
    _, rating, _ = count_solutions(puzzle, limit=1)
    return puzzle, solution, rating


DIGIT_CHARS = np.frombuffer((BLANK_CHAR + ANSWER_CHARS).encode("ascii"), dtype=np.uint8)  # digit -> character


def grid_to_string(grid: np.ndarray) -> str:
    """Digits 0..9 (0 = blank) -> the CSV string."""
    return DIGIT_CHARS[np.asarray(grid, dtype=np.int64)].tobytes().decode("ascii")


def generate_rows(
    count: int,
    rng: np.random.Generator,
    min_blanks: int,
    max_blanks: int,
    min_difficulty: int,
    seen: set[str],
    desc: str,
) -> list[tuple[str, str, str, int]]:
    """`count` CSV rows of new puzzles (not in `seen`, which is updated) passing the filters."""
    return generate_unique_rows(count, lambda: make_puzzle(rng, min_blanks, max_blanks), grid_to_string, seen, desc,
                                "puzzles", MAX_ATTEMPTS_PER_PUZZLE * (count + 10),
                                "lower --min-difficulty or --min-blanks", min_rating=min_difficulty)


def generate(args: argparse.Namespace, announce: bool = True) -> None:
    rng = np.random.default_rng(args.seed)

    def rows(count: int, seen: set[str], desc: str) -> list[tuple[str, str, str, int]]:
        return generate_rows(count, rng, args.min_blanks, args.max_blanks, args.min_difficulty, seen, desc)

    write_generated_csvs(args.output_dir, args.num_train, args.num_test, rows, "puzzles", announce)


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__.splitlines()[0])
    add_generator_arguments(parser, default_output="data/sudoku-csv", num_train=1000, num_test=200, unit="puzzles")
    parser.add_argument("--min-blanks", type=positive_int, default=45,
                        help="fewest blank cells of a puzzle (each draws its number in --min-blanks..--max-blanks)")
    parser.add_argument("--max-blanks", type=positive_int, default=55, help="most blank cells of a puzzle (<= 64)")
    parser.add_argument("--blanks", type=positive_int, default=None,
                        help="exact number of blanks: sets --min-blanks and --max-blanks (default: use those)")
    parser.add_argument("--min-difficulty", type=non_negative_int, default=0,
                        help="keep puzzles whose rating (the solver's backtrack count) is >= this")
    return parser


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.blanks is not None:
        args.min_blanks = args.max_blanks = args.blanks
    if not args.min_blanks <= args.max_blanks <= 64:
        # 17 clues (64 blanks) is the proven minimum for a unique solution.
        parser.error(f"need --min-blanks <= --max-blanks <= 64, got {args.min_blanks} and {args.max_blanks}")
    return args


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    run_cli(lambda: generate(args))


if __name__ == "__main__":
    main()
