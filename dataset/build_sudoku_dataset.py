"""Build the Sudoku-Extreme dataset (docs/builders.md) from the hub's or local train.csv/test.csv.

    python dataset/build_sudoku_dataset.py --output-dir data/sudoku-extreme-1k-aug-1000 \
        --subsample-size 1000 --num-aug 1000
    python dataset/build_sudoku_dataset.py --source-dir data/sudoku-csv --output-dir data/sudoku-local   # offline

Tokens: digit + 1 (blank -> 1, digits 1..9 -> 2..10), PAD 0, vocab 11, seq_len 81. Every example is
its own puzzle with the blank identifier 0; a group is an original puzzle and its augmentations.
"""
from __future__ import annotations

import argparse
from typing import Optional

import numpy as np

from dataset.common import DATASET_ENTRIES, write_grouped_dataset
from dataset.output_dir import check_replaceable
from dataset.sources import (
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
from dataset.tasks.sudoku import (
    ANSWER_CHARS,
    DIGIT_OF,
    DIGIT_OFFSET,
    QUESTION_CHARS,
    SEQ_LEN,
    VOCAB_SIZE,
    apply_shuffles,
    is_valid_solution,
    random_shuffles,
)
from utils.cli import new_parser, non_negative_int, progress, run_cli

GENERATOR_HINT = "python dataset/generate_sudoku.py --output-dir data/sudoku-csv"
# Augmentations drawn per numpy call: bounds memory, and fixed so the draws do not depend on input size.
AUGMENT_CHUNK = 4096


# ----------------------------------------------------------------------------------------------
# Checking


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


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__.splitlines()[0])
    add_source_arguments(parser, default_repo="sapientinc/sudoku-extreme", default_output="data/sudoku-extreme-full")
    parser.add_argument("--min-difficulty", type=int, default=None,
                        help="keep puzzles whose CSV rating is >= this, in both splits (default: every puzzle)")
    parser.add_argument("--num-aug", type=non_negative_int, default=0,
                        help="train only: shuffled copies added per puzzle (digits relabelled, bands, stacks, rows "
                             "and columns permuted, maybe transposed)")
    return parser


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    run_cli(lambda: build(args))


if __name__ == "__main__":
    main()
