"""Build the Sudoku-Extreme dataset (docs/builders.md) from the hub's or local train.csv/test.csv.

    python dataset/build_sudoku_dataset.py --output-dir data/sudoku-extreme-1k-aug-1000 \
        --subsample-size 1000 --num-aug 1000
    python dataset/build_sudoku_dataset.py --source-dir data/sudoku-csv --output-dir data/sudoku-local   # offline

Tokens: digit + 1 (blank -> 1, digits 1..9 -> 2..10), PAD 0, vocab 11, seq_len 81. Every example is
its own puzzle with the blank identifier 0; a group is an original puzzle and its augmentations.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional

import numpy as np

if __package__ in (None, ""):  # run as a script path: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dataset.common import DATASET_ENTRIES, write_grouped_dataset  # noqa: E402
from dataset.output_dir import check_replaceable  # noqa: E402
from dataset.sources import (  # noqa: E402
    STREAM_AUGMENT,
    STREAM_TEST_SUBSET,
    STREAM_TRAIN_SUBSET,
    CsvRows,
    add_source_arguments,
    codes_to_values,
    filter_min_rating,
    first_bad_row,
    load_checked_split,
    random_subset,
    require_rows,
    stream_rng,
)
from dataset.tasks.sudoku import (  # noqa: E402
    ALL_DIGITS_MASK,
    ANSWER_CHARS,
    BLOCK,
    DIGIT_OF,
    DIGIT_OFFSET,
    QUESTION_CHARS,
    SEQ_LEN,
    SIDE,
    VOCAB_SIZE,
)
from utils.cli import non_negative_int, progress, run_cli  # noqa: E402

GENERATOR_HINT = "python dataset/generate_sudoku.py --output-dir data/sudoku-csv"
# Augmentations drawn per numpy call: bounds memory, and fixed so the draws do not depend on input size.
AUGMENT_CHUNK = 4096


# ----------------------------------------------------------------------------------------------
# Checking


def sudoku_units(grids: np.ndarray) -> np.ndarray:
    """(N, 27, 9): the 9 rows, 9 columns and 9 boxes of each (N, 81) grid."""
    g = grids.reshape(-1, SIDE, SIDE)
    boxes = g.reshape(-1, BLOCK, BLOCK, BLOCK, BLOCK).transpose(0, 1, 3, 2, 4).reshape(-1, SIDE, SIDE)
    return np.concatenate([g, g.transpose(0, 2, 1), boxes], axis=1)


def is_valid_solution(grids: np.ndarray) -> np.ndarray:
    """(N,) bool: every row, column and box holds each digit 1..9 exactly once.

    OR-ing the bits 1 << d of 9 digits gives all nine bits only when the 9 digits are distinct.
    """
    bits = np.left_shift(1, sudoku_units(grids).astype(np.int32))
    return (np.bitwise_or.reduce(bits, axis=2) == ALL_DIGITS_MASK).all(axis=1)


def check_sudoku_rows(rows: CsvRows) -> tuple[np.ndarray, np.ndarray]:
    """Digit grids (blank 0) of questions and answers; error on the first inconsistent row."""
    questions = codes_to_values(rows.questions, QUESTION_CHARS, DIGIT_OF)
    answers = codes_to_values(rows.answers, ANSWER_CHARS, DIGIT_OF)
    first_bad_row(rows, ~is_valid_solution(answers),
                  "answer is not a valid Sudoku solution (a row, column or box repeats a digit)")
    first_bad_row(rows, ((questions != 0) & (questions != answers)).any(axis=1),
                  "answer contradicts a clue of the question")
    return questions, answers


# ----------------------------------------------------------------------------------------------
# Augmentation


def _random_perms(rng: np.random.Generator, shape: tuple[int, ...], n: int) -> np.ndarray:
    """Independent uniformly random permutations of 0..n-1 along the last axis (argsort of uniforms)."""
    return np.argsort(rng.random(shape + (n,)), axis=-1)


def random_shuffles(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` random validity-preserving Sudoku shuffles.

    Returns `digit_maps` (count, 10) with 0 -> 0 and a permutation of 1..9, and `sources` (count, 81):
    output cell k takes the (relabelled) value of input cell sources[k]. That gather combines an
    optional transpose (p=0.5) with a permutation of the bands and of the rows in each band, and
    of the stacks and of the columns in each stack.
    """
    digit_maps = np.concatenate([np.zeros((count, 1), dtype=np.int64), _random_perms(rng, (count,), 9) + 1], axis=1)
    transpose = rng.random(count) < 0.5
    rows = (_random_perms(rng, (count,), 3)[:, :, None] * 3 + _random_perms(rng, (count, 3), 3)).reshape(count, 9)
    cols = (_random_perms(rng, (count,), 3)[:, :, None] * 3 + _random_perms(rng, (count, 3), 3)).reshape(count, 9)
    r, c = rows[:, :, None], cols[:, None, :]
    sources = np.where(transpose[:, None, None], c * 9 + r, r * 9 + c).reshape(count, 81)
    return digit_maps, sources


def apply_shuffles(grids: np.ndarray, digit_maps: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """Apply shuffle i to grid i: (B, 81) -> (B, 81)."""
    moved = np.take_along_axis(grids, sources, axis=1)
    return np.take_along_axis(digit_maps, moved.astype(np.int64), axis=1).astype(grids.dtype)


def augment(questions: np.ndarray, answers: np.ndarray, num_aug: int,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each puzzle followed by `num_aug` shuffled copies (puzzle and solution shuffled alike)."""
    n = questions.shape[0]
    if num_aug == 0:
        return questions, answers
    group = num_aug + 1
    out_q = np.empty((n, group, SEQ_LEN), dtype=questions.dtype)
    out_a = np.empty_like(out_q)
    out_q[:, 0], out_a[:, 0] = questions, answers
    # Flat list of (puzzle, augmentation) slots, filled chunk by chunk.
    num_slots = n * num_aug
    for start in progress(range(0, num_slots, AUGMENT_CHUNK), desc="augment", unit=" chunks"):
        slots = np.arange(start, min(start + AUGMENT_CHUNK, num_slots))
        puzzle, copy = slots // num_aug, 1 + slots % num_aug
        digit_maps, sources = random_shuffles(rng, slots.size)
        out_q[puzzle, copy] = apply_shuffles(questions[puzzle], digit_maps, sources)
        out_a[puzzle, copy] = apply_shuffles(answers[puzzle], digit_maps, sources)
    return out_q.reshape(-1, SEQ_LEN), out_a.reshape(-1, SEQ_LEN)


# ----------------------------------------------------------------------------------------------
# Building


def load_split(split: str, args: argparse.Namespace) -> CsvRows:
    return load_checked_split(split, args, SEQ_LEN, QUESTION_CHARS, ANSWER_CHARS, check_sudoku_rows, GENERATOR_HINT)


def select_rows(rows: CsvRows, split: str, min_difficulty: Optional[int], size: Optional[int],
                rng: np.random.Generator) -> CsvRows:
    """Difficulty filter first, then the random subset (the subset is drawn from eligible puzzles)."""
    rows = filter_min_rating(rows, min_difficulty)
    require_rows(rows, f"the {split} split", "lower --min-difficulty or use a larger source")
    return random_subset(rows, size, rng, f"the {split} split")


def build(args: argparse.Namespace) -> None:
    check_replaceable(args.output_dir, DATASET_ENTRIES)  # refuse at once, not after reading the source
    # Read and check everything before writing anything.
    train_rows = select_rows(load_split("train", args), "train", args.min_difficulty, args.subsample_size,
                             stream_rng(args.seed, STREAM_TRAIN_SUBSET))
    test_rows = select_rows(load_split("test", args), "test", args.min_difficulty, args.test_subsample_size,
                            stream_rng(args.seed, STREAM_TEST_SUBSET))
    train_q, train_a = check_sudoku_rows(train_rows)  # already checked: here for the digit grids
    test_q, test_a = check_sudoku_rows(test_rows)
    train_q, train_a = augment(train_q, train_a, args.num_aug, stream_rng(args.seed, STREAM_AUGMENT))

    # Token = digit + 1: blank -> 1, digits -> 2..10, leaving 0 for PAD.
    write_grouped_dataset(args.output_dir, (train_q + DIGIT_OFFSET, train_a + DIGIT_OFFSET),
                          (test_q + DIGIT_OFFSET, test_a + DIGIT_OFFSET), args.num_aug + 1, VOCAB_SIZE)
    print(f"Wrote {args.output_dir}: train {len(train_rows)} puzzles x {args.num_aug + 1} = {train_q.shape[0]} "
          f"examples, test {len(test_rows)} puzzles.")


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_source_arguments(parser, default_repo="sapientinc/sudoku-extreme", default_output="data/sudoku-extreme-full")
    parser.add_argument("--min-difficulty", type=int, default=None,
                        help="keep puzzles with rating >= this (both splits)")
    parser.add_argument("--num-aug", type=non_negative_int, default=0, help="train only: shuffled copies per puzzle")
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    run_cli(lambda: build(args))


if __name__ == "__main__":
    main()
