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
ALL_DIGITS_MASK = 0b1111111110  # bits 1..9: a row, column or box holding every digit once

# The CSV text (Sudoku-Extreme): one character per cell, row-major.
QUESTION_CHARS = ".0123456789"  # "." and "0" both mean blank
ANSWER_CHARS = "123456789"
BLANK_CHAR = "."  # what the offline generator writes for a blank, as Sudoku-Extreme does
DIGIT_OF = {".": 0, **{str(d): d for d in range(10)}}  # character -> digit (blank 0)
