"""Sudoku (docs/builders.md, "Sudoku-Extreme"): 81 cells, row-major; the task's face is `TASK`.

Token = digit + 1: PAD 0, blank 1, digits 1..9 -> 2..10; labels with value 0 (PAD) are ignored.
Also the rules of the grid (`is_valid_solution`, `valid_completions`), its validity-preserving shuffles,
which the builder augments with and test-time augmentation (training/tta.py) votes over, and the text
form of a puzzle and of a board (predict.py).
"""
import numpy as np

from dataset.tasks.permutation import TokenPermutation
from dataset.tasks.task import Task, TextForm
from utils.errors import ConfigError

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
BOARD_SEPARATORS = "|-+"  # the lines of a pasted board, as `format_board` prints them


def token_digits(tokens: np.ndarray) -> np.ndarray:
    """Tokens -> digits of the same shape, 0 = blank (PAD and -100 also read as blank)."""
    return np.clip(np.asarray(tokens, dtype=np.int64) - DIGIT_OFFSET, 0, SIDE)


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


def tta_transforms(count: int, rng: np.random.Generator) -> list[TokenPermutation]:
    """The builder's shuffles, on tokens: PAD and blank stay, digit tokens are relabelled."""
    digit_maps, sources = random_shuffles(rng, count)
    token_maps = np.concatenate([np.zeros((count, 1), dtype=np.int64), digit_maps + DIGIT_OFFSET], axis=1)
    return [TokenPermutation(sources[i], token_maps[i]) for i in range(count)]


def valid_completions(answers: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    """(C, B, 81) answer tokens, (B, 81) input tokens -> (C, B): a valid solved grid agreeing with every clue."""
    valid = is_valid_solution(token_digits(answers).reshape(-1, SEQ_LEN)).reshape(answers.shape[:2])
    clues = inputs > BLANK_TOKEN
    return valid & ((answers == inputs[None]) | ~clues[None]).all(-1)


def is_solved(puzzle: np.ndarray, answer: np.ndarray) -> bool:
    """A valid completion of the clues (a Sudoku-Extreme puzzle has one: its solution)."""
    return bool(valid_completions(np.asarray(answer)[None, None], np.asarray(puzzle)[None])[0, 0])


def _listed(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _cell(index: int) -> str:
    return f"row {index // SIDE + 1}, column {index % SIDE + 1}"


def repeated_digits(tokens: np.ndarray) -> list[str]:
    """Each digit that a row, column or box of one (81,) grid holds more than once, e.g.
    `row 3 has two 5s (columns 2 and 7)`; blanks are ignored."""
    digits = token_digits(tokens).reshape(SIDE, SIDE)
    index = np.arange(SEQ_LEN).reshape(SIDE, SIDE)
    units = [(f"row {r + 1}", index[r], "columns", lambda i: str(i % SIDE + 1)) for r in range(SIDE)]
    units += [(f"column {c + 1}", index[:, c], "rows", lambda i: str(i // SIDE + 1)) for c in range(SIDE)]
    for b in range(SIDE):
        r0, c0 = BLOCK * (b // BLOCK), BLOCK * (b % BLOCK)
        units.append((f"box {b + 1} (rows {r0 + 1}-{r0 + BLOCK}, columns {c0 + 1}-{c0 + BLOCK})",
                      index[r0:r0 + BLOCK, c0:c0 + BLOCK].ravel(), "at", _cell))
    counts = {2: "two", 3: "three"}
    found = []
    for unit, cells, where, name in units:
        values = digits.ravel()[cells]
        for digit in range(1, SIDE + 1):
            at = cells[values == digit]
            if len(at) > 1:
                found.append(f"{unit} has {counts.get(len(at), len(at))} {digit}s "
                             f"({where} {_listed([name(int(i)) for i in at])})")
    return found


def why_not_solved(puzzle: np.ndarray, answer: np.ndarray) -> str | None:
    """The first reason `answer` is not a valid completion of `puzzle`'s clues; None when it is one."""
    clues, answered = token_digits(puzzle).ravel(), token_digits(answer).ravel()
    for i in np.flatnonzero((clues > 0) & (answered != clues)):
        return f"{_cell(int(i))}: the clue {clues[i]} is answered {answered[i] or 'blank'}"
    for i in np.flatnonzero(answered == 0):
        return f"{_cell(int(i))} is left blank"
    repeated = repeated_digits(answer)
    return repeated[0] if repeated else None


# ---------------------------------------------------------------------------------------------
# Text form
# ---------------------------------------------------------------------------------------------
def parse_cells(text: str, where: str) -> np.ndarray:
    """81 cells -> tokens (digit + 1, blank 1); spaces and board lines are ignored."""
    cells = [c for c in text if not c.isspace() and c not in BOARD_SEPARATORS]
    for i, char in enumerate(cells):
        if char not in QUESTION_CHARS:
            raise ConfigError(f"{where}: {char!r} at cell {i + 1} (row {i // SIDE + 1}, column "
                              f"{i % SIDE + 1}) is not a Sudoku cell; use digits 1-9 and . or 0 for blanks.")
    if len(cells) != SEQ_LEN:
        raise ConfigError(f"{where} has {len(cells)} cells, expected {SEQ_LEN} (9 rows of 9: digits 1-9, "
                          ". or 0 for blanks).")
    tokens = np.array([DIGIT_OF[c] for c in cells], dtype=np.int64) + DIGIT_OFFSET
    conflicts = repeated_digits(tokens)  # then no completion is valid: say so before any model runs
    if conflicts:
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        raise ConfigError(f"{where}: the clues conflict: {conflicts[0]}{more}, so no completion is valid; fix the "
                          "puzzle.")
    return tokens


def format_board(tokens: np.ndarray) -> str:
    """A 9x9 board with 3x3 boxes; `.` where the model answered no digit."""
    digits = token_digits(tokens).reshape(SIDE, SIDE)
    lines = []
    for r in range(SIDE):
        if r and r % BLOCK == 0:
            lines.append("+".join("-" * (2 * BLOCK + (0 < b < 2)) for b in range(3)))
        boxes = [" ".join(str(d) if d else "." for d in digits[r, b:b + BLOCK]) for b in range(0, SIDE, BLOCK)]
        lines.append(" | ".join(boxes))
    return "\n".join(lines)


TASK = Task(
    name="sudoku", title="Sudoku", renderer="viz.sudoku.SudokuRenderer", vocab_size=VOCAB_SIZE, seq_len=SEQ_LEN,
    builder="python dataset/build_sudoku_dataset.py", transforms=tta_transforms,
    valid_completions=valid_completions, is_solved=is_solved,
    text=TextForm(placeholder='"<81 cells>"', from_file=False, parse=parse_cells, parse_csv=parse_cells,
                  format=format_board, verdicts=("valid: no (not a valid completion of the clues)",
                                                 "valid: yes (a valid completion of the clues)"),
                  why_not=why_not_solved))
