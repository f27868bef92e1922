"""predict.py's pieces: its arguments (flags become keys, text values kept as written), the puzzle keys of the tasks
it answers, the Sudoku board and maze text forms; a missing checkpoint is one line. (A trained checkpoint answering
puzzles: tests/integration/test_predict.py.)"""
import numpy as np
import pytest

import predict
from dataset.tasks import maze, sudoku
from utils.errors import ConfigError


def error_line(args: list[str], one_line: bool = True) -> str:
    """The message predict.py exits with (status 1: sys.exit with a string), checked to be one line."""
    with pytest.raises(SystemExit) as exit_info:
        predict.main([*args, "device=cpu"])
    message = str(exit_info.value.code)
    assert message.startswith("error: ") and ("\n" not in message or not one_line), message
    return message


def test_missing_checkpoint(tmp_path):
    assert "does not exist" in error_line([f"checkpoint={tmp_path / 'nope'}", "sudoku=" + "." * 81])



def test_every_answered_task_has_its_puzzle_key():
    """predict.py's puzzle keys are named after the tasks with a text form (dataset.tasks.TASKS)."""
    assert predict.ANSWERED == ("sudoku", "maze")
    assert set(predict.ANSWERED) <= set(predict.PredictConfig.model_fields) and set(predict.ANSWERED) <= set(
        predict.TEXT_KEYS)


def test_flags_become_keys():
    assert predict.flags_to_keys(["checkpoint=c", "--input", "a.csv", "--out=x.png", "tta=2"]) == [
        "checkpoint=c", "input=a.csv", "out=x.png", "tta=2"]


def test_text_values_are_kept_as_written():
    """YAML would read a Sudoku of digits as an integer (losing its leading zeros), `08` as octal-ish."""
    puzzle = "0" * 9 + "1" * 72
    args = predict.parse_args(["checkpoint=007", f"sudoku={puzzle}", "tta=3", "halt_early=true"])
    assert args.sudoku == puzzle and args.checkpoint == "007" and args.tta == 3 and args.halt_early is True


def test_board_round_trip_and_validity():
    solution = np.array([int(c) for c in "534678912672195348198342567859761423426853791"
                                         "713924856961537284287419635345286179"]) + sudoku.DIGIT_OFFSET
    board = sudoku.format_board(solution)
    assert np.array_equal(sudoku.parse_cells(board, "sudoku="), solution)
    puzzle = solution.copy()
    puzzle[::2] = sudoku.BLANK_TOKEN
    assert sudoku.is_solved(puzzle, solution)
    swapped = solution.copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    assert not sudoku.is_solved(puzzle, swapped)


def test_maze_path_check():
    lines = ["#" * 30] + ["#" + " " * 28 + "#" for _ in range(28)] + ["#" * 30]
    lines[1] = "#Sooo" + " " * 23 + "G#"
    tokens = maze.parse_rows(lines, "maze")
    assert (tokens == maze.PATH).sum() == 0  # `o` read as open
    answer = np.array([maze.TOKEN_OF[c] for c in "".join(lines)])
    assert not maze.path_connects(tokens, answer)
    lines[1] = "#S" + "o" * 26 + "G#"
    assert maze.path_connects(tokens, np.array([maze.TOKEN_OF[c] for c in "".join(lines)]))
    with pytest.raises(ConfigError, match="has 2 'G' \\(goal\\) cells"):
        maze.parse_rows([lines[0], "#S" + " " * 25 + "GG#", *lines[2:]], "maze")


SOLUTION = "534678912672195348198342567859761423426853791713924856961537284287419635345286179"


def _cells(text: str) -> list[str]:
    return list(text)


@pytest.mark.parametrize("edit, named", [
    (lambda c: c.__setitem__(slice(18, 27), list(".5....5..")), "row 3 has two 5s (columns 2 and 7)"),
    (lambda c: (c.__setitem__(3, "8"), c.__setitem__(48, "8")), "column 4 has two 8s (rows 1 and 6)"),
    (lambda c: (c.__setitem__(0, "9"), c.__setitem__(20, "9")), "box 1 (rows 1-3, columns 1-3) has two 9s"),
], ids=["row", "column", "box"])
def test_issue23_e_conflicting_clues_are_named(edit, named):
    """Issue 23 E: predict with conflicting clues said only "not a valid completion"; the conflict is named."""
    cells = _cells("." * 81)
    edit(cells)
    with pytest.raises(ConfigError) as err:
        sudoku.parse_cells("".join(cells), "sudoku=")
    message = str(err.value)
    assert message.startswith("sudoku=: ") and named in message and "\n" not in message, message


def test_issue23_e_an_invalid_answer_says_why():
    solution = np.array([int(c) for c in SOLUTION]) + sudoku.DIGIT_OFFSET
    puzzle = solution.copy()
    puzzle[1::2] = sudoku.BLANK_TOKEN
    assert sudoku.why_not_solved(puzzle, solution) is None
    changed = solution.copy()
    changed[0] = 9 + sudoku.DIGIT_OFFSET  # a clue (row 1, column 1: 5) answered 9
    assert "row 1, column 1: the clue 5 is answered 9" in sudoku.why_not_solved(puzzle, changed)
    swapped = solution.copy()
    swapped[[1, 3]] = swapped[[3, 1]]  # two blanks of row 1 swapped: columns 2 and 4 break
    assert "column 2 has two 6s" in sudoku.why_not_solved(puzzle, swapped)
    blank = solution.copy()
    blank[5] = sudoku.BLANK_TOKEN
    assert "row 1, column 6 is left blank" in sudoku.why_not_solved(puzzle, blank)
