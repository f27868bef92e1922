"""Build the Maze-Hard dataset (docs/builders.md) from the hub's or local train.csv/test.csv.

    python dataset/build_maze_dataset.py --output-dir data/maze-30x30-hard-1k --aug
    python dataset/build_maze_dataset.py --source-dir data/maze-csv --output-dir data/maze-local   # offline

30x30 grids over the charset "# SGo" (wall, open, start, goal, path); token = 1 + position in
that charset, PAD 0, vocab 6, seq_len 900. With --aug every train maze is followed by its 8
dihedral transforms (the identity first), and those 8 puzzles form one group.
"""
from __future__ import annotations

import argparse
from typing import Optional

import numpy as np

from dataset.common import DATASET_ENTRIES, write_grouped_dataset
from dataset.output_dir import check_replaceable
from dataset.sources import (
    STREAM_TEST_SUBSET,
    STREAM_TRAIN_SUBSET,
    CsvRows,
    add_source_arguments,
    codes_to_values,
    first_bad_row,
    load_checked_split,
    random_subset,
    require_rows,
    stream_rng,
)
from dataset.tasks.dihedral import NUM_DIHEDRAL, dihedral_transform
from dataset.tasks.maze import (
    CHARSET,
    GOAL,
    GRID_SIZE,
    OPEN,
    PATH,
    SEQ_LEN,
    START,
    TOKEN_OF,
    VOCAB_SIZE,
)
from utils.cli import new_parser, run_cli

GENERATOR_HINT = "python dataset/generate_maze.py --output-dir data/maze-csv"


def check_maze_rows(rows: CsvRows) -> tuple[np.ndarray, np.ndarray]:
    """Tokens (N, 900) of questions and answers; error on the first inconsistent row.

    The answer must be the question with some open cells turned into path cells, and the
    question must have exactly one start and one goal.
    """
    questions = codes_to_values(rows.questions, CHARSET, TOKEN_OF)
    answers = codes_to_values(rows.answers, CHARSET, TOKEN_OF)
    first_bad_row(rows, (questions == START).sum(axis=1) != 1, "question must contain exactly one 'S' (start)")
    first_bad_row(rows, (questions == GOAL).sum(axis=1) != 1, "question must contain exactly one 'G' (goal)")
    is_path = answers == PATH
    first_bad_row(rows, (is_path & (questions != OPEN)).any(axis=1),
                  "answer puts a path cell 'o' where the question has no open cell")
    first_bad_row(rows, (~is_path & (answers != questions)).any(axis=1),
                  "answer differs from the question other than by path cells 'o' on open cells")
    return questions, answers


def dihedral_copies(grids: np.ndarray) -> np.ndarray:
    """(N, 900) -> (N * 8, 900): each grid followed by its transforms 1..7 (id 0 = itself first)."""
    square = grids.reshape(-1, GRID_SIZE, GRID_SIZE)
    copies = np.stack([dihedral_transform(square, t) for t in range(NUM_DIHEDRAL)], axis=1)
    return copies.reshape(-1, SEQ_LEN)


def load_split(split: str, args: argparse.Namespace) -> CsvRows:
    # The question has no path cells; only the answer marks them.
    return load_checked_split(split, args, SEQ_LEN, CHARSET.replace("o", ""), CHARSET, check_maze_rows, GENERATOR_HINT)


def build(args: argparse.Namespace) -> None:
    check_replaceable(args.output_dir, DATASET_ENTRIES)  # refuse at once, not after reading the source
    # Read and check everything before writing anything.
    train_rows = random_subset(load_split("train", args), args.subsample_size,
                               stream_rng(args.seed, STREAM_TRAIN_SUBSET), "the train split")
    test_rows = random_subset(load_split("test", args), args.test_subsample_size,
                              stream_rng(args.seed, STREAM_TEST_SUBSET), "the test split")
    require_rows(train_rows, "the train split", "use a source with train mazes")
    require_rows(test_rows, "the test split", "use a source with test mazes")
    train_q, train_a = check_maze_rows(train_rows)  # already checked: here for the tokens
    test_q, test_a = check_maze_rows(test_rows)
    group_size = 1
    if args.aug:
        train_q, train_a, group_size = dihedral_copies(train_q), dihedral_copies(train_a), NUM_DIHEDRAL

    write_grouped_dataset(args.output_dir, (train_q, train_a), (test_q, test_a), group_size, VOCAB_SIZE)
    print(f"Wrote {args.output_dir}: train {len(train_rows)} mazes x {group_size} = {train_q.shape[0]} examples, "
          f"test {len(test_rows)} mazes.")


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__.splitlines()[0])
    add_source_arguments(parser, default_repo="sapientinc/maze-30x30-hard-1k", default_output="data/maze-30x30-hard-1k")
    parser.add_argument("--aug", action="store_true",
                        help="train only: follow each maze by its 7 other dihedral transforms, one group of 8 "
                             "(default: the mazes as they are)")
    return parser


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    run_cli(lambda: build(args))


if __name__ == "__main__":
    main()
