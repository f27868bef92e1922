"""Maze encoding (docs/builders.md, "Maze-Hard"): 30x30 cells, row-major.

Token = 1 + position in CHARSET: PAD 0, wall 1, open 2, start 3, goal 4, path 5.
"""
GRID_SIZE = 30
SEQ_LEN = GRID_SIZE * GRID_SIZE
CHARSET = "# SGo"  # wall, open, start, goal, path
PAD_ID = 0
VOCAB_SIZE = len(CHARSET) + 1
WALL, OPEN, START, GOAL, PATH = (1 + CHARSET.index(c) for c in CHARSET)
TOKEN_OF = {char: 1 + i for i, char in enumerate(CHARSET)}  # CSV character -> token
