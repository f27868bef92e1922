"""Copy task: a trivially learnable synthetic dataset (labels == inputs) for smoke tests and demos.

    python dataset/build_copy_dataset.py --output-dir data/copy-demo

Everything is written through `dataset.common`, so these files are exactly what the loader reads
from a real builder. Tests use `write_copy_task` directly.
"""
from __future__ import annotations

import argparse
from typing import Optional

import numpy as np

from dataset.common import BLANK_IDENTIFIER_NAME, DATASET_ENTRIES, atomic_output_dir, write_identifiers, write_set
from dataset.output_dir import REPLACES_ONLY_OWN
from utils.cli import new_parser, run_cli


def _copy_split(
    rng: np.random.Generator,
    num_puzzles: int,
    seq_len: int,
    vocab_size: int,
    examples_per_puzzle: int,
    augmentations_per_group: int,
) -> tuple[np.ndarray, list[int], list[int]]:
    """Random token rows (1..vocab_size-1) plus puzzle and group sizes of one split.

    Groups hold `augmentations_per_group` consecutive puzzles; the last may be smaller.
    """
    token_dtype = np.uint8 if vocab_size <= 256 else np.int32
    inputs = rng.integers(1, vocab_size, size=(num_puzzles * examples_per_puzzle, seq_len)).astype(token_dtype)
    puzzle_sizes = [examples_per_puzzle] * num_puzzles
    full, rest = divmod(num_puzzles, augmentations_per_group)
    group_sizes = [augmentations_per_group] * full + ([rest] if rest else [])
    return inputs, puzzle_sizes, group_sizes


def write_copy_task(
    out_dir: str,
    num_train_puzzles: int,
    num_test_puzzles: int,
    seq_len: int,
    vocab_size: int,
    examples_per_puzzle: int = 1,
    augmentations_per_group: int = 1,
    seed: int = 0,
    num_puzzle_identifiers: Optional[int] = None,
) -> str:
    """Write a copy task (labels == inputs) with `train` and `test` splits; returns `out_dir`.

    Published atomically like every build (`atomic_output_dir`): an existing `out_dir` is replaced only
    if it holds nothing but a dataset.

    Tokens are random in 1..vocab_size-1 (PAD=0, ignore_label_id 0). Puzzle identifiers:
    with `num_puzzle_identifiers=None` every puzzle uses the blank identifier 0 (as Sudoku);
    with an int K >= 2 puzzle p of each split gets identifier 1 + p % (K - 1), so
    K = num_train_puzzles + 1 gives each train puzzle its own embedding row and test
    puzzle p shares the row of train puzzle p.
    """
    if vocab_size < 2 or seq_len < 1 or examples_per_puzzle < 1 or augmentations_per_group < 1:
        raise ValueError("write_copy_task: need vocab_size >= 2, seq_len >= 1, examples_per_puzzle >= 1, "
                         "augmentations_per_group >= 1.")
    if num_puzzle_identifiers is not None and num_puzzle_identifiers < 2:
        raise ValueError("write_copy_task: num_puzzle_identifiers must be None (all blank) or >= 2.")
    rng = np.random.default_rng(seed)
    num_ids = 1 if num_puzzle_identifiers is None else num_puzzle_identifiers

    with atomic_output_dir(out_dir, DATASET_ENTRIES) as tmp:
        for split, num_puzzles in (("train", num_train_puzzles), ("test", num_test_puzzles)):
            inputs, puzzle_sizes, group_sizes = _copy_split(
                rng, num_puzzles, seq_len, vocab_size, examples_per_puzzle, augmentations_per_group
            )
            if num_puzzle_identifiers is None:
                identifiers = [0] * num_puzzles
            else:
                identifiers = [1 + p % (num_ids - 1) for p in range(num_puzzles)]
            write_set(
                tmp, split, inputs, inputs.copy(), puzzle_sizes, group_sizes, identifiers,
                vocab_size=vocab_size, num_puzzle_identifiers=num_ids,
            )
        write_identifiers(tmp, [BLANK_IDENTIFIER_NAME] + [f"copy{i}" for i in range(1, num_ids)])
    return out_dir


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="data/copy-demo",
                        help=f"directory the dataset is written to; {REPLACES_ONLY_OWN}")
    parser.add_argument("--num-train-puzzles", type=int, default=512,
                        help="training puzzles, one example and one puzzle identifier each")
    parser.add_argument("--num-test-puzzles", type=int, default=128,
                        help="test puzzles, one example each (test puzzle p uses train puzzle p's identifier)")
    parser.add_argument("--seq-len", type=int, default=16, help="tokens per example")
    parser.add_argument("--vocab-size", type=int, default=8,
                        help="vocabulary size: PAD 0 plus the tokens 1..N-1 the examples are drawn from")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random tokens")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    run_cli(lambda: write_copy_task(args.output_dir, args.num_train_puzzles, args.num_test_puzzles, args.seq_len,
                                    args.vocab_size, seed=args.seed, num_puzzle_identifiers=args.num_train_puzzles + 1))
    print(f"Wrote a copy task to {args.output_dir}")


if __name__ == "__main__":
    main()
