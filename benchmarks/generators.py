"""Time the offline Sudoku and maze generators: generate N puzzles, then verify each one.

Generation is exactly what `dataset/generate_sudoku.py` / `dataset/generate_maze.py` do (default
filters). Verification re-solves every Sudoku (exactly one solution, equal to the answer) and re-runs
the maze BFS (S reaches G, exactly one shortest path, and it is the marked one). One warm-up puzzle
and maze are made first, so numba compilation is not timed.

    python benchmarks/generators.py
    python -m benchmarks.generators --num-sudoku 200 --num-mazes 200 --json
"""
import argparse
import json
import time

import numpy as np

from dataset import generate_maze, generate_sudoku
from utils.cli import new_parser


def verify_sudoku(rows) -> None:
    for _, question, answer, _ in rows:
        puzzle = np.array([0 if ch == "." else int(ch) for ch in question], dtype=np.int64)
        count, _, solution = generate_sudoku.count_solutions(puzzle, limit=2)
        if count != 1 or generate_sudoku.grid_to_string(solution) != answer:
            raise AssertionError(f"Sudoku {question} does not have the unique solution {answer}")


def verify_mazes(rows, min_path_length: int) -> None:
    for _, question, answer, _ in rows:
        q = generate_maze.from_string(question)
        grid = q.reshape(generate_maze.GRID, generate_maze.GRID)
        start, goal = int(np.flatnonzero(q == generate_maze.START)[0]), int(np.flatnonzero(q == generate_maze.GOAL)[0])
        dist, count = generate_maze.shortest_paths(grid, start)
        expected = q.copy()
        expected[generate_maze.trace_path(grid, dist, goal)] = generate_maze.PATH
        if count[goal] != 1 or dist[goal] < min_path_length or generate_maze.to_string(expected) != answer:
            raise AssertionError("a maze lacks a unique long shortest path matching its answer")


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def build_parser() -> argparse.ArgumentParser:
    """The generators' filters default to theirs (dataset/generate_sudoku.py, dataset/generate_maze.py)."""
    sudoku, maze = generate_sudoku.build_parser(), generate_maze.build_parser()
    parser = new_parser("Time the offline Sudoku and maze generators.")
    parser.add_argument("--num-sudoku", type=int, default=1000, help="Sudoku puzzles to generate and verify")
    parser.add_argument("--num-mazes", type=int, default=1000, help="mazes to generate and verify")
    parser.add_argument("--min-blanks", type=int, default=sudoku.get_default("min_blanks"),
                        help="fewest blank cells of a puzzle, as generate_sudoku.py's --min-blanks")
    parser.add_argument("--max-blanks", type=int, default=sudoku.get_default("max_blanks"),
                        help="most blank cells of a puzzle, as generate_sudoku.py's --max-blanks")
    parser.add_argument("--min-path-length", type=int, default=maze.get_default("min_path_length"),
                        help="shortest S->G path a maze must have, in steps, as generate_maze.py's --min-path-length")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the one random stream both generators draw from")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)

    rng = np.random.default_rng(args.seed)
    # Warm-up: compile (or load from numba's cache) every kernel outside the timed region.
    _, compile_s = timed(lambda: (generate_sudoku.make_puzzle(rng, 1, 1), generate_maze.make_maze(rng, 0)))

    sudoku, sudoku_gen_s = timed(lambda: generate_sudoku.generate_rows(
        args.num_sudoku, rng, args.min_blanks, args.max_blanks, 0, set(), "sudoku"))
    _, sudoku_verify_s = timed(lambda: verify_sudoku(sudoku))
    mazes, maze_gen_s = timed(lambda: generate_maze.generate_rows(
        args.num_mazes, rng, args.min_path_length, set(), "maze"))
    _, maze_verify_s = timed(lambda: verify_mazes(mazes, args.min_path_length))

    result = {
        "warmup_compile_s": round(compile_s, 3),
        "sudoku": {"count": len(sudoku), "generate_s": round(sudoku_gen_s, 3), "verify_s": round(sudoku_verify_s, 3),
                   "mean_blanks": float(np.mean([r[1].count(".") for r in sudoku])),
                   "mean_rating": float(np.mean([r[3] for r in sudoku]))},
        "maze": {"count": len(mazes), "generate_s": round(maze_gen_s, 3), "verify_s": round(maze_verify_s, 3),
                 "mean_path_length": float(np.mean([r[3] for r in mazes]))},
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"warm-up (numba compile or cache load): {compile_s:.2f} s")
    s, m = result["sudoku"], result["maze"]
    print(f"Sudoku: {s['count']} puzzles generated in {sudoku_gen_s:.2f} s, verified in {sudoku_verify_s:.2f} s "
          f"(mean blanks {s['mean_blanks']:.1f}, mean rating {s['mean_rating']:.1f})")
    print(f"Maze:   {m['count']} mazes generated in {maze_gen_s:.2f} s, verified in {maze_verify_s:.2f} s "
          f"(mean shortest path {m['mean_path_length']:.1f} steps)")


if __name__ == "__main__":
    main()
