"""Sudoku encoding (docs/builders.md, "Sudoku-Extreme"): 81 cells, row-major.

Token = digit + 1: PAD 0, blank 1, digits 1..9 -> 2..10; labels with value 0 (PAD) are ignored.
"""
SIDE = 9
BLOCK = 3
SEQ_LEN = SIDE * SIDE
VOCAB_SIZE = 11  # PAD + blank + 9 digits
PAD_ID = 0
BLANK_TOKEN = 1
DIGIT_OFFSET = 1  # token = digit + 1 (blank = digit 0)
