"""Maze (docs/builders.md, "Maze-Hard"): 30x30 cells, row-major; the task's face is `TASK`.

Token = 1 + position in CHARSET: PAD 0, wall 1, open 2, start 3, goal 4, path 5. Also the text form of
a maze (predict.py: 30 lines of `# SGo`), whether an answer's path connects S to G, and the dihedral
transforms test-time augmentation (training/tta.py) votes over.
"""
from collections import deque

import numpy as np

from dataset.tasks.dihedral import NUM_DIHEDRAL, dihedral_transform
from dataset.tasks.permutation import TokenPermutation
from dataset.tasks.task import Task, TextForm
from utils.errors import ConfigError

GRID_SIZE = 30
SEQ_LEN = GRID_SIZE * GRID_SIZE
CHARSET = "# SGo"  # wall, open, start, goal, path
PAD_ID = 0
VOCAB_SIZE = len(CHARSET) + 1
WALL, OPEN, START, GOAL, PATH = (1 + CHARSET.index(c) for c in CHARSET)
TOKEN_OF = {char: 1 + i for i, char in enumerate(CHARSET)}  # CSV character -> token


def tta_transforms(count: int, rng: np.random.Generator) -> list[TokenPermutation]:
    """Dihedral transforms other than the identity (walls, S and G move with the grid), without repeats while
    there are fewer than 8, then drawn again."""
    cells = np.arange(SEQ_LEN).reshape(GRID_SIZE, GRID_SIZE)
    ids = np.concatenate([rng.permutation(np.arange(1, NUM_DIHEDRAL)) for _ in range(-(-count // 7))])[:count]
    return [TokenPermutation(np.ascontiguousarray(dihedral_transform(cells, int(t))).reshape(-1),
                             np.arange(VOCAB_SIZE)) for t in ids]


def path_connects(puzzle: np.ndarray, answer: np.ndarray) -> bool:
    """Whether the answer's path cells lead from the maze's start to its goal (4-neighbour steps)."""
    start, goal = int(np.flatnonzero(puzzle == START)[0]), int(np.flatnonzero(puzzle == GOAL)[0])
    walkable = (answer == PATH) | (np.arange(SEQ_LEN) == start) | (np.arange(SEQ_LEN) == goal)
    seen, queue = {start}, deque([start])
    while queue:
        cell = queue.popleft()
        r, c = divmod(cell, GRID_SIZE)
        for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            neighbour = nr * GRID_SIZE + nc
            if 0 <= nr < GRID_SIZE and 0 <= nc < GRID_SIZE and walkable[neighbour] and neighbour not in seen:
                seen.add(neighbour)
                queue.append(neighbour)
    return goal in seen


# ---------------------------------------------------------------------------------------------
# Text form
# ---------------------------------------------------------------------------------------------
def char_token(char: str) -> int:
    """A path cell `o` of a solved maze is read as open: the model draws the path itself."""
    return OPEN if char == "o" else TOKEN_OF[char]


def parse_rows(rows: list[str], where: str, row_word: str = "line") -> np.ndarray:
    """30 rows of 30 characters of `# SGo`, one start and one goal -> tokens."""
    if len(rows) != GRID_SIZE:
        raise ConfigError(f"{where} has {len(rows)} {row_word}s, expected {GRID_SIZE} {row_word}s of {GRID_SIZE} "
                          "characters.")
    for r, row in enumerate(rows):
        if len(row) != GRID_SIZE:
            raise ConfigError(f"{where}, {row_word} {r + 1} has {len(row)} characters, expected {GRID_SIZE}.")
        for c, char in enumerate(row):
            if char not in CHARSET:
                raise ConfigError(f"{where}, {row_word} {r + 1}, column {c + 1}: {char!r} is not a maze cell; use "
                                  "'#' wall, ' ' open, 'S' start, 'G' goal ('o' path cells are read as open).")
    tokens = np.array([char_token(char) for row in rows for char in row], dtype=np.int64)
    for token, name in ((START, "'S' (start)"), (GOAL, "'G' (goal)")):
        count = int((tokens == token).sum())
        if count != 1:
            raise ConfigError(f"{where} has {'no' if count == 0 else count} {name} cell{'s' * (count > 1)}, "
                              "expected exactly one.")
    return tokens


def parse_text(text: str, where: str) -> np.ndarray:
    """A maze file's text: its lines are the rows."""
    lines = text.splitlines()
    while lines and not lines[-1]:  # a maze line is never empty: blank lines at the end are not rows
        lines.pop()
    return parse_rows(lines, where)


def parse_csv_field(text: str, where: str) -> np.ndarray:
    """A Maze-Hard CSV question: the 900 cells in one string."""
    if len(text) != SEQ_LEN:
        raise ConfigError(f"{where} has a maze of {len(text)} characters, expected {SEQ_LEN} (30 rows of 30).")
    return parse_rows([text[i:i + GRID_SIZE] for i in range(0, SEQ_LEN, GRID_SIZE)], where, row_word="row")


def format_grid(tokens: np.ndarray) -> str:
    """30 lines of the maze charset, the path as `o` (`?` for a PAD prediction): a maze file again."""
    chars = np.array(["?", *CHARSET])[np.clip(tokens, 0, len(CHARSET))]
    return "\n".join("".join(row) for row in chars.reshape(GRID_SIZE, GRID_SIZE))


TASK = Task(
    name="maze", title="Maze", renderer="viz.maze.MazeRenderer", vocab_size=VOCAB_SIZE, seq_len=SEQ_LEN,
    builder="python dataset/build_maze_dataset.py", transforms=tta_transforms, is_solved=path_connects,
    text=TextForm(placeholder="FILE", from_file=True, parse=parse_text, parse_csv=parse_csv_field,
                  format=format_grid, verdicts=("path: does not connect S to G", "path: connects S to G")))
