"""predict.py: a trained checkpoint answers Sudoku and Maze puzzles given on the command line, as it answers
them in evaluation; bad input is one clear line."""
import os
import shutil

import numpy as np
import pytest
import torch
import yaml

import predict
from dataset.common import IGNORE_LABEL_ID
from dataset.generated import build_generated_dataset
from dataset.tasks import maze, sudoku
from models.weights import EMBED_TOKENS_KEY
from rundir.layout import CONFIG_FILE, weight_steps, weights_path
from tests.helpers import TINY_EVAL_ARCH, build_head, compose_config, cpu_context, train_metadata
from tests.unit.test_predict import error_line
from training.config import parse_config
from training.evaluation import run_act_all_steps
from training.loop import train

MAZE_CHARS = np.array(["?", *maze.CHARSET])  # token -> character (PAD as ?)


def train_tiny(root, kind: str, **dataset_options) -> dict:
    """A tiny model trained one step on a generated dataset: its run directory, weights and config."""
    data = build_generated_dataset(str(root / kind), kind, seed=0, **dataset_options)
    run_dir = str(root / f"{kind}-run")
    config = parse_config(compose_config([f"data_paths=[{data}]", "evaluators=[]", *TINY_EVAL_ARCH,
                                          "global_batch_size=8", "epochs=1", "eval_interval=1", "num_workers=0",
                                          "wandb_mode=disabled", "device=cpu", f"+checkpoint_path={run_dir}"]))
    train(config, cpu_context())
    inputs, labels = (np.load(os.path.join(data, "test", f"all__{f}.npy")) for f in ("inputs", "labels"))
    return {"data": data, "run_dir": run_dir, "config": config, "inputs": inputs, "labels": labels,
            "checkpoint": weights_path(run_dir, weight_steps(run_dir)[-1])}


@pytest.fixture(scope="module")
def sudoku_run(tmp_path_factory) -> dict:
    return train_tiny(tmp_path_factory.mktemp("predict_sudoku"), "sudoku", num_train=8, num_test=10, blanks=30)


@pytest.fixture(scope="module")
def maze_run(tmp_path_factory) -> dict:
    return train_tiny(tmp_path_factory.mktemp("predict_maze"), "maze", num_train=8, num_test=4)


def sudoku_text(tokens: np.ndarray) -> str:
    return "".join(sudoku.BLANK_CHAR if t == sudoku.BLANK_TOKEN else str(t - sudoku.DIGIT_OFFSET) for t in tokens)


def maze_lines(tokens: np.ndarray) -> list[str]:
    return ["".join(row) for row in MAZE_CHARS[tokens].reshape(maze.GRID_SIZE, maze.GRID_SIZE)]


def model_answer(run: dict, rows: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(preds, sigmoid(q_halt)) of the trained weights on test rows, through the evaluation's ACT loop."""
    head = build_head(run["config"], train_metadata(run["config"]))
    head.load_state_dict(torch.load(run["checkpoint"], weights_only=True))
    head.eval()
    labels = torch.as_tensor(run["labels"][rows], dtype=torch.int32)
    batch = {"inputs": torch.as_tensor(run["inputs"][rows], dtype=torch.int32),
             "labels": torch.where(labels == 0, IGNORE_LABEL_ID, labels),
             "puzzle_identifiers": torch.zeros(len(rows), dtype=torch.int32)}
    with torch.inference_mode():
        _, outputs = run_act_all_steps(head, batch, {"preds", "q_halt_logits"})
    return outputs["preds"].numpy(), torch.sigmoid(outputs["q_halt_logits"]).numpy()


def predict_output(args: list[str], capsys) -> str:
    predict.main([*args, "device=cpu"])
    return capsys.readouterr().out


def printed_answers(out: str) -> list[tuple[list[str], str]]:
    """(answer lines, summary line) of each printed puzzle."""
    blocks = out.split("\n== puzzle ")[1:]
    answers = []
    for block in blocks:
        lines = block.splitlines()[1:]  # after the header line
        end = next(i for i, line in enumerate(lines) if line.startswith("steps: "))
        answers.append((lines[:end], lines[end]))
    return answers


def board_cells(lines: list[str]) -> str:
    """The 81 cells of a printed board (separators dropped), `.` where no digit."""
    return "".join(c for line in lines for c in line if c in "123456789.")


# ---------------------------------------------------------------------------------------------
# Sudoku
# ---------------------------------------------------------------------------------------------
def test_printed_board_is_the_models_answer(sudoku_run, capsys):
    puzzle = sudoku_run["inputs"][3]
    out = predict_output([f"checkpoint={sudoku_run['run_dir']}", f"sudoku={sudoku_text(puzzle)}"], capsys)
    [(board, summary)] = printed_answers(out)
    preds, confidence = model_answer(sudoku_run, [3])
    assert board_cells(board) == sudoku_text(np.where(preds[0] > sudoku.BLANK_TOKEN, preds[0], sudoku.BLANK_TOKEN))
    assert len(board) == 11 and board[3] == "------+-------+------" and board[0].count("|") == 2
    assert summary.startswith(f"steps: 3   confidence: {confidence[0]:.3f}   valid: ")
    assert "votes" not in summary


def test_a_pasted_board_with_zeros_is_the_same_puzzle(sudoku_run, capsys):
    puzzle = sudoku_run["inputs"][0]
    plain = predict_output([f"checkpoint={sudoku_run['checkpoint']}", f"sudoku={sudoku_text(puzzle)}"], capsys)
    board = sudoku.format_board(puzzle).replace(".", "0")  # "0" blanks, `|` `-` `+` lines, newlines
    pasted = predict_output([f"checkpoint={sudoku_run['checkpoint']}", f"sudoku={board}"], capsys)
    assert printed_answers(pasted) == printed_answers(plain)


def test_tta_prints_votes(sudoku_run, capsys):
    out = predict_output([f"checkpoint={sudoku_run['run_dir']}", f"sudoku={sudoku_text(sudoku_run['inputs'][1])}",
                          "tta=2", "tta_sudoku_check=true"], capsys)
    [(board, summary)] = printed_answers(out)
    votes = summary.split("votes: ")[1].split()[0]
    assert votes in ("1/3", "2/3", "3/3") and len(board_cells(board)) == 81


@pytest.mark.parametrize("header", ["source,question,answer,rating", "quizzes,solutions", None])
def test_input_csv_prints_one_board_per_puzzle(sudoku_run, tmp_path, capsys, header):
    rows = [sudoku_text(q) for q in sudoku_run["inputs"][:3]]
    answers = [sudoku_text(a) for a in sudoku_run["labels"][:3]]
    if header == "source,question,answer,rating":
        lines = [header, *(f"gen,{q},{a},0" for q, a in zip(rows, answers))]
    elif header:
        lines = [header, *(f"{q},{a}" for q, a in zip(rows, answers))]
    else:
        lines = rows
    (tmp_path / "puzzles.csv").write_text("\n".join(lines) + "\n")
    out = predict_output([f"checkpoint={sudoku_run['run_dir']}", "--input", str(tmp_path / "puzzles.csv")], capsys)
    printed = printed_answers(out)
    preds, _ = model_answer(sudoku_run, [0, 1, 2])
    assert len(printed) == 3 and out.startswith("Answering 3 Sudoku puzzle(s)")
    for (board, _), pred in zip(printed, preds):
        assert board_cells(board) == sudoku_text(np.where(pred > sudoku.BLANK_TOKEN, pred, sudoku.BLANK_TOKEN))


@pytest.mark.parametrize("name, magic", [("answer.png", b"\x89PNG"), ("answer.html", b"<!DOCTYPE html>")])
def test_out_draws_the_answers(sudoku_run, tmp_path, capsys, name, magic):
    out = tmp_path / "pictures" / name
    printed = predict_output([f"checkpoint={sudoku_run['run_dir']}", f"sudoku={sudoku_text(sudoku_run['inputs'][0])}",
                              f"--out={out}"], capsys)
    assert out.read_bytes().startswith(magic) and f"Picture written to {out}" in printed
    assert [p.name for p in out.parent.iterdir()] == [name]  # written atomically: no temporary left


def test_halt_early_reports_the_step_it_halted_at(sudoku_run, tmp_path, capsys):
    """With a Q head that always says halt, every puzzle halts at step 1; without halt_early all 3 run."""
    state = torch.load(sudoku_run["checkpoint"], weights_only=True)
    state["model.inner.q_head.bias"][0] = 5.0
    run_dir = tmp_path / "eager"
    run_dir.mkdir()
    torch.save(state, run_dir / "step_1")
    shutil.copy(os.path.join(sudoku_run["run_dir"], CONFIG_FILE), run_dir)
    args = [f"checkpoint={run_dir}", f"sudoku={sudoku_text(sudoku_run['inputs'][0])}"]
    [(_, early)] = printed_answers(predict_output([*args, "halt_early=true"], capsys))
    [(_, full)] = printed_answers(predict_output(args, capsys))
    assert early.startswith("steps: 1   confidence: 0.99") and full.startswith("steps: 3   ")


def test_checkpoint_without_its_dataset_or_training_state(sudoku_run, tmp_path, capsys):
    """The task and the model's shapes then come from the weights and the task's encoding."""
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(sudoku_run["checkpoint"], alone / "step_1")
    with open(os.path.join(sudoku_run["run_dir"], CONFIG_FILE)) as f:
        config = yaml.safe_load(f)
    config["data_paths"] = [str(tmp_path / "not-here")]
    with open(alone / CONFIG_FILE, "w") as f:
        yaml.safe_dump(config, f)
    args = [f"sudoku={sudoku_text(sudoku_run['inputs'][2])}"]
    here = predict_output([f"checkpoint={sudoku_run['checkpoint']}", *args], capsys)
    assert printed_answers(predict_output([f"checkpoint={alone}", *args], capsys)) == printed_answers(here)

    torch.save({EMBED_TOKENS_KEY: torch.zeros(12, 32)}, alone / "step_2")  # ARC's vocabulary
    assert "ARC puzzles need the puzzle embedding of a task seen in training" in error_line(
        [f"checkpoint={alone / 'step_2'}", *args])


# ---------------------------------------------------------------------------------------------
# Maze
# ---------------------------------------------------------------------------------------------
def test_printed_maze_is_the_models_answer(maze_run, tmp_path, capsys):
    maze_file = tmp_path / "maze.txt"
    maze_file.write_text("\n".join(maze_lines(maze_run["labels"][1])) + "\n")  # solved: `o` is read as open
    out = predict_output([f"checkpoint={maze_run['run_dir']}", f"maze={maze_file}", f"--out={tmp_path / 'm.png'}"],
                         capsys)
    [(grid, summary)] = printed_answers(out)
    preds, confidence = model_answer(maze_run, [1])
    assert grid == maze_lines(preds[0])
    assert summary.startswith(f"steps: 3   confidence: {confidence[0]:.3f}   path: ")
    assert (tmp_path / "m.png").is_file()


def test_maze_csv_and_tta(maze_run, tmp_path, capsys):
    rows = ["".join(maze_lines(q)) for q in maze_run["inputs"][:2]]
    (tmp_path / "mazes.csv").write_text("source,question,answer,rating\n" + "".join(f"g,{q},{q},0\n" for q in rows))
    out = predict_output([f"checkpoint={maze_run['run_dir']}", f"input={tmp_path / 'mazes.csv'}", "tta=2"], capsys)
    printed = printed_answers(out)
    assert len(printed) == 2 and all("votes: " in summary and len(grid) == 30 for grid, summary in printed)


# ---------------------------------------------------------------------------------------------
# Bad input: one line each
# ---------------------------------------------------------------------------------------------
def maze_file_with(tmp_path, edit) -> str:
    """A valid maze (walls around, S and G inside) changed by `edit(lines)`."""
    lines = ["#" * 30] + ["#" + " " * 28 + "#" for _ in range(28)] + ["#" * 30]
    lines[1] = "#S" + " " * 26 + "G#"
    path = tmp_path / "bad_maze.txt"
    path.write_text("\n".join(edit(lines)) + "\n")
    return str(path)


@pytest.mark.parametrize("args, message", [
    (["sudoku={short}"], "sudoku= has 80 cells, expected 81"),
    (["sudoku={bad_char}"], "'x' at cell 5 (row 1, column 5) is not a Sudoku cell"),
    (["sudoku={puzzle}", "maze={maze}"], "Give exactly one of"),
    (["sudoku={puzzle}", "out=answer.jpg"], "out=answer.jpg: pictures are written as"),
    (["sudoku={puzzle}", "tta=-1"], "tta"),
    (["sudoku={puzzle}", "tta_votes=2"], "tta_votes: unknown key"),
    (["maze={maze}"], "maze= gives a Maze puzzle, but"),
    (["sudoku={puzzle}", "input"], "Arguments must be key=value"),
    (["sudoku={puzzle}", "--out"], "--out needs a file name"),
    (["sudoku={conflict}"], "sudoku=: the clues conflict: row 1 has two 5s (columns 1 and 9)"),
], ids=["80_cells", "bad_char", "two_inputs", "picture_format", "negative_tta", "unknown_key", "maze_to_sudoku",
        "not_key_value", "flag_without_value", "conflicting_clues"])
def test_bad_sudoku_requests(sudoku_run, tmp_path, args, message):
    text = sudoku_text(sudoku_run["inputs"][0])
    values = dict(short=text[:80], bad_char=text[:4] + "x" + text[5:], puzzle=text,
                  maze=maze_file_with(tmp_path, lambda lines: lines), conflict="5" + "." * 7 + "5" + "." * 72)
    key_error = "tta" in args[-1]  # a key's wrong value or name: listed as evaluate.py lists them
    assert message in error_line([f"checkpoint={sudoku_run['run_dir']}", *(a.format(**values) for a in args)],
                                 one_line=not key_error)


@pytest.mark.parametrize("edit, message", [
    (lambda lines: lines[:29], "has 29 lines, expected 30 lines of 30 characters"),
    (lambda lines: [lines[0], "#" + " " * 28 + "#", *lines[2:]], "has no 'S' (start) cell, expected exactly one"),
    (lambda lines: [lines[0], "#S" + " " * 25 + "SG#", *lines[2:]], "has 2 'S' (start) cells, expected exactly one"),
    (lambda lines: [*lines[:2], "#" + " " * 5 + "x" + " " * 22 + "#", *lines[3:]], "line 3, column 7: 'x'"),
    (lambda lines: [*lines[:4], "#" * 29, *lines[5:]], "line 5 has 29 characters, expected 30"),
], ids=["29_lines", "no_start", "two_starts", "bad_char", "short_line"])
def test_bad_mazes(maze_run, tmp_path, edit, message):
    assert message in error_line([f"checkpoint={maze_run['run_dir']}", f"maze={maze_file_with(tmp_path, edit)}"])


def test_a_sudoku_for_the_maze_checkpoint(maze_run, tmp_path):
    message = error_line([f"checkpoint={maze_run['run_dir']}", f"sudoku={'.' * 81}"])
    assert "sudoku= gives a Sudoku puzzle, but" in message and "trained on Maze" in message and "maze=FILE" in message
    maze_file = maze_file_with(tmp_path, lambda lines: lines)
    assert "tta_sudoku_check is for Sudoku checkpoints" in error_line(
        [f"checkpoint={maze_run['run_dir']}", f"maze={maze_file}", "tta=2", "tta_sudoku_check=true"])


def test_missing_maze_file(maze_run, tmp_path):
    assert f"maze file {tmp_path / 'nope.txt'} does not exist" in error_line(
        [f"checkpoint={maze_run['run_dir']}", f"maze={tmp_path / 'nope.txt'}"])
