"""Sudoku encoding (docs/builders.md, "Sudoku-Extreme"): 81 cells, row-major.

Token = digit + 1: PAD 0, blank 1, digits 1..9 -> 2..10; labels with value 0 (PAD) are ignored.
Also the rules of the grid (`is_valid_solution`) and its validity-preserving shuffles, which the builder
augments with and test-time augmentation (training/tta.py) votes over.
"""
import numpy as np

SIDE = 9
BLOCK = 3
SEQ_LEN = SIDE * SIDE
VOCAB_SIZE = 11  # PAD + blank + 9 digits
PAD_ID = 0
BLANK_TOKEN = 1
DIGIT_OFFSET = 1  # token = digit + 1 (blank = digit 0)
ALL_DIGITS_MASK = 0b1111111110  # bits 1..9: a row, column or box holding every digit once

# The CSV text (Sudoku-Extreme): one character per cell, row-major.
QUESTION_CHARS = ".0123456789"  # "." and "0" both mean blank
ANSWER_CHARS = "123456789"
BLANK_CHAR = "."  # what the offline generator writes for a blank, as Sudoku-Extreme does
DIGIT_OF = {".": 0, **{str(d): d for d in range(10)}}  # character -> digit (blank 0)


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
