"""Pictures of puzzles/predictions (viz.puzzles) and training curves (viz.curves), via visualize.py.

Each picture kind is rendered from a tiny dataset made by the project's own generators and builders;
the checks count the grids and cells in the HTML, look for the marks of a wrong prediction and for
the expected colours, and compare the PNG's pixel size with the figure's.
"""
import argparse
import json
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

import visualize
from dataset import build_arc_dataset, build_maze_dataset, build_sudoku_dataset, generate_maze, generate_sudoku
from dataset.build_copy_dataset import write_copy_task
from dataset.common import PuzzleDatasetMetadata
from dataset.tasks import TASKS, arc, maze, sudoku, task_of
from viz import arc as viz_arc
from viz import curves, png, puzzles
from viz import data as viz_data
from viz import html as viz_html
from viz import maze as viz_maze
from viz import sudoku as viz_sudoku
from viz.sheet import Renderer

NUM_SUDOKU, NUM_MAZES = 3, 2


# ---------------------------------------------------------------------------------------------
# Tiny datasets and fake evaluation outputs
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sudoku_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("sudoku")
    generate_sudoku.main(["--output-dir", str(root / "csv"), "--num-train", "2", "--num-test", str(NUM_SUDOKU),
                          "--blanks", "40", "--seed", "1"])
    build_sudoku_dataset.main(["--source-dir", str(root / "csv"), "--output-dir", str(root / "data")])
    return str(root / "data")


@pytest.fixture(scope="module")
def maze_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("maze")
    generate_maze.main(["--output-dir", str(root / "csv"), "--num-train", "1", "--num-test", str(NUM_MAZES),
                        "--min-path-length", "10", "--seed", "1"])
    build_maze_dataset.main(["--source-dir", str(root / "csv"), "--output-dir", str(root / "data")])
    return str(root / "data")


ARC_TASKS = {
    "aaaa0001": {"train": [{"input": [[1, 2], [3, 4]], "output": [[4, 3], [2, 1]]}],
                 "test": [{"input": [[1, 2, 3], [4, 5, 6]], "output": [[6, 5, 4], [3, 2, 1]]}]},
    "bbbb0002": {"train": [{"input": [[1]], "output": [[1, 1]]}],
                 "test": [{"input": [[7, 8]], "output": [[9, 0]]}]},
}


@pytest.fixture(scope="module")
def arc_dir(tmp_path_factory):
    """Two tasks as the evaluation subset (so they form the test split), each with one augmentation."""
    root = tmp_path_factory.mktemp("arc")
    prefix = str(root / "arc-agi")
    with open(f"{prefix}_evaluation_challenges.json", "w") as f:
        json.dump({k: {"train": v["train"], "test": [{"input": p["input"]} for p in v["test"]]}
                   for k, v in ARC_TASKS.items()}, f)
    with open(f"{prefix}_evaluation_solutions.json", "w") as f:
        json.dump({k: [p["output"] for p in v["test"]] for k, v in ARC_TASKS.items()}, f)
    out = str(root / "data")
    build_arc_dataset.main(["--input-file-prefix", prefix, "--output-dir", out, "--subsets", "evaluation",
                            "--test-set-name", "evaluation", "--num-aug", "1"])
    return out


def load_test_split(dataset_dir):
    split = os.path.join(dataset_dir, "test")
    return np.load(os.path.join(split, "all__inputs.npy")), np.load(os.path.join(split, "all__labels.npy"))


def example_identifiers(dataset_dir):
    """Puzzle identifier of every test example (one example per puzzle in these tiny datasets)."""
    identifiers = np.load(os.path.join(dataset_dir, "test", "all__puzzle_identifiers.npy"))
    assert np.array_equal(np.load(os.path.join(dataset_dir, "test", "all__puzzle_indices.npy")),
                          np.arange(identifiers.size + 1))
    return identifiers


def fake_outputs(dataset_dir, wrong_rows=(1,), with_inputs=True, corrupt=None):
    """What trainer.evaluate saves: int32 batch tensors (ignored labels -100) and int64 preds.

    Preds equal the labels (PAD where ignored); `corrupt(preds_row, inputs_row)` changes each row in
    `wrong_rows` in place.
    """
    inputs, labels = load_test_split(dataset_dir)
    preds = labels.astype(np.int64)
    for row in wrong_rows:
        corrupt(preds[row], inputs[row])
    outputs = {"labels": torch.from_numpy(np.where(labels == 0, -100, labels).astype(np.int32)),
               "preds": torch.from_numpy(preds)}
    if with_inputs:
        outputs["inputs"] = torch.from_numpy(inputs.astype(np.int32))
        outputs["puzzle_identifiers"] = torch.from_numpy(example_identifiers(dataset_dir))
    return outputs


def count(text, pattern):
    return len(re.findall(pattern, text))


def png_size(path):
    with Image.open(path) as image:
        return image.size


def png_colours(path):
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    return {"#%02X%02X%02X" % tuple(p) for p in np.unique(pixels, axis=0)}


def has_panels_size(size, columns, rows):
    """sheet_figure: (columns, rows) panels of PANEL_INCHES plus a fixed header, at PNG_DPI, widened on the left by
    what the rows' names need (under half an inch: a line or two of small text)."""
    side = png.PANEL_INCHES * png.PNG_DPI
    width, height = size
    return round(columns * side) <= width < round((columns * side) + 0.5 * png.PNG_DPI) \
        and height == round(rows * side + 0.9 * png.PNG_DPI)


# ---------------------------------------------------------------------------------------------
# Kind detection
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("vocab, seq_len, kind", [(12, 900, "arc"), (11, 81, "sudoku"), (6, 900, "maze"),
                                                  (8, 16, "generic"), (6, 81, "generic")])
def test_detect_kind(vocab, seq_len, kind):
    metadata = PuzzleDatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=vocab,
                                     seq_len=seq_len, num_puzzle_identifiers=1, total_groups=1,
                                     mean_puzzle_examples=1.0, total_puzzles=1, sets=["all"])
    assert viz_data.detect_task(metadata) == kind


def test_registry_has_one_renderer_per_task():
    """Dispatch is by task name: every task dataset.tasks knows has a renderer, drawing its sequence length."""
    assert set(puzzles.RENDERERS) == set(TASKS)
    assert all(name == renderer.name for name, renderer in puzzles.RENDERERS.items())
    for module in (arc, sudoku, maze):
        task = task_of(module.VOCAB_SIZE, module.SEQ_LEN)
        assert puzzles.RENDERERS[task].seq_len == module.SEQ_LEN
    assert puzzles.RENDERERS["generic"].seq_len is None


def test_tasks_with_a_text_form_have_pictures_of_answers():
    """predict.py answers the tasks with a text form, judges each answer and draws it (viz/answers.py)."""
    for name, task in TASKS.items():
        if task.text is not None:
            assert task.is_solved is not None and puzzles.RENDERERS[name].answer_legend, name
            assert type(puzzles.RENDERERS[name]).answer_panels is not Renderer.answer_panels, name


def test_task_override(sudoku_dir, maze_dir, tmp_path, capsys):
    """--task draws a dataset as another task; the detected task is the default; unfit tasks are refused."""
    outputs = fake_outputs(sudoku_dir, corrupt=_wrong_sudoku_digit)
    detected = puzzles.build_sheet(sudoku_dir, outputs)
    assert detected.task == "sudoku"
    forced = puzzles.build_sheet(sudoku_dir, outputs, task="generic")
    assert forced.task == "generic" and "raw token ids" in forced.note
    assert [e.verdict for e in forced.examples] == [e.verdict for e in detected.examples]
    assert [p.colours.shape for p in forced.examples[0].panels] == [(9, 9)] * 3

    out = str(tmp_path / "forced.html")
    visualize.main(["puzzles", "--data", sudoku_dir, "--task", "generic", "--out", out])
    page = open(out, encoding="utf-8").read()
    assert count(page, r'<table class="grid generic') == NUM_SUDOKU * 2  # input and label
    assert count(page, r'<table class="grid sudoku') == 0
    assert count(page, r"<td") == NUM_SUDOKU * 2 * 81

    visualize.main(["puzzles", "--data", maze_dir, "--task", "arc", "--num", "1", "--out", out])  # 30x30 both
    assert count(open(out, encoding="utf-8").read(), r'<table class="grid arc') == 2
    with pytest.raises(SystemExit, match="error: Cannot draw .* as sudoku: sudoku puzzles have 81 tokens"):
        visualize.main(["puzzles", "--data", maze_dir, "--task", "sudoku", "--out", out])
    with pytest.raises(SystemExit) as exit_info:  # not a task: argparse lists the choices
        visualize.main(["puzzles", "--data", maze_dir, "--task", "chess"])
    assert exit_info.value.code == 2 and "invalid choice: 'chess'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="Unknown task 'chess'"):
        puzzles.build_sheet(maze_dir, task="chess")


def test_every_cli_option_has_a_help_with_its_default():
    parser = visualize.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(commands.choices) == {"puzzles", "curves"}
    for command in commands.choices.values():
        for action in command._actions:
            if action.option_strings and action.dest != "help":
                assert action.help and ("default" in action.help or action.required), (command.prog, action.dest)


def test_pictures_are_written_atomically(sudoku_dir, tmp_path, monkeypatch):
    """A failed write leaves neither a half picture nor a temporary file; a good one leaves only the picture."""
    sheet = puzzles.build_sheet(sudoku_dir, num=1)
    out_dir = tmp_path / "pictures"
    puzzles.write_sheet(sheet, str(out_dir / "ok.png"))
    assert os.listdir(out_dir) == ["ok.png"]

    def broken(_sheet):
        raise RuntimeError("disk full")

    monkeypatch.setattr(viz_html, "sheet_html", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        puzzles.write_sheet(sheet, str(out_dir / "broken.html"))
    assert os.listdir(out_dir) == ["ok.png"]


# ---------------------------------------------------------------------------------------------
# Sudoku
# ---------------------------------------------------------------------------------------------
def _wrong_sudoku_digit(row, inputs):
    """Change the digit of the first blank cell (digit d -> d % 9 + 1; tokens are digit + 1, blank 1)."""
    cell = np.flatnonzero(inputs == 1)[0]
    row[cell] = (row[cell] - 1) % 9 + 2


def test_sudoku_html_marks_clues_fills_and_errors(sudoku_dir, tmp_path):
    outputs = fake_outputs(sudoku_dir, corrupt=_wrong_sudoku_digit)
    path = puzzles.render_predictions(sudoku_dir, outputs, str(tmp_path / "sudoku.html"))
    page = open(path, encoding="utf-8").read()

    assert count(page, r'<table class="grid sudoku') == NUM_SUDOKU * 3  # puzzle, solution, prediction
    assert count(page, r"<td") == NUM_SUDOKU * 3 * 81
    assert count(page, r'<section class="example wrong"') == 1
    assert count(page, r'<section class="example right"') == NUM_SUDOKU - 1
    assert count(page, r'class="[^"]*\bwrong err') == 1  # exactly the changed digit
    assert "\u2717 wrong" in page and "<script" not in page and "http" not in page
    inputs, _ = load_test_split(sudoku_dir)
    clues = int((inputs > 1).sum())  # every board of an example repeats its clues
    assert count(page, r'class="[^"]*\bclue\b') == 3 * clues
    assert count(page, r'class="[^"]*\bfill\b') > 0


def test_sudoku_png_has_expected_size(sudoku_dir, tmp_path):
    outputs = fake_outputs(sudoku_dir, corrupt=_wrong_sudoku_digit)
    path = puzzles.render_predictions(sudoku_dir, outputs, str(tmp_path / "sudoku.png"), num=2)
    assert has_panels_size(png_size(path), 3, 2)
    assert viz_sudoku.WRONG_BG in png_colours(path)


# ---------------------------------------------------------------------------------------------
# Maze
# ---------------------------------------------------------------------------------------------
def _maze_path_errors(row, _inputs):
    """Drop one true path cell and add one path cell on an open cell off the path."""
    row[np.flatnonzero(row == maze.PATH)[0]] = maze.OPEN
    row[np.flatnonzero(row == maze.OPEN)[-1]] = maze.PATH


def test_maze_html_and_png_show_true_vs_predicted_path(maze_dir, tmp_path):
    outputs = fake_outputs(maze_dir, wrong_rows=(0,), corrupt=_maze_path_errors)
    sheet = puzzles.build_sheet(maze_dir, outputs)
    html_path = puzzles.write_sheet(sheet, str(tmp_path / "maze.html"))
    page = open(html_path, encoding="utf-8").read()
    assert count(page, r'<table class="grid maze') == NUM_MAZES * 3
    assert count(page, r"<td") == NUM_MAZES * 3 * 900
    assert [e.verdict for e in sheet.examples] == [False, True]
    overlay = sheet.examples[0].panels[2].colours
    assert (overlay == viz_maze.COLOURS["missed"]).sum() == 1
    assert (overlay == viz_maze.COLOURS["extra"]).sum() == 1
    for colour in ("wall", "start", "goal", "path", "missed", "extra"):
        assert viz_maze.COLOURS[colour] in page

    png_path = puzzles.write_sheet(sheet, str(tmp_path / "maze.png"))
    assert has_panels_size(png_size(png_path), 3, NUM_MAZES)
    assert {viz_maze.COLOURS[c] for c in ("wall", "path", "missed", "extra")} <= png_colours(png_path)


# ---------------------------------------------------------------------------------------------
# ARC
# ---------------------------------------------------------------------------------------------
def _wrong_arc_colour(row, _inputs):
    """Recolour the top-left cell (colour tokens are 2..11)."""
    row[0] = 2 + (row[0] - 2 + 1) % 10


def test_arc_html_shows_grids_in_arc_colours(arc_dir, tmp_path):
    inputs, _ = load_test_split(arc_dir)
    outputs = fake_outputs(arc_dir, wrong_rows=(0,), corrupt=_wrong_arc_colour)
    sheet = puzzles.build_sheet(arc_dir, outputs)
    page = open(puzzles.write_sheet(sheet, str(tmp_path / "arc.html")), encoding="utf-8").read()

    assert len(sheet.examples) == inputs.shape[0] == 4  # 2 tasks x (original + 1 augmentation)
    assert count(page, r'<table class="grid arc') == 4 * 3  # input, expected, prediction
    # Cells: each test pair's input and twice its output (expected and the same-shaped prediction).
    cells = sum(np.size(p["input"]) + 2 * np.size(p["output"]) for t in ARC_TASKS.values() for p in t["test"])
    assert count(page, r"<td") == 2 * cells
    assert count(page, r'<section class="example wrong"') == 1
    assert count(page, r'class="[^"]*\berr\b') == 1
    for colour in arc.PALETTE:  # the test grids use every colour 0..9
        assert colour.lower() in page.lower()
    # The published tasks come before their augmentations.
    assert [(arc.NAME_SEPARATOR in e.name) for e in sheet.examples] == [False, False, True, True]


def test_arc_png_and_dataset_only(arc_dir, tmp_path):
    path = puzzles.render_predictions(arc_dir, None, str(tmp_path / "arc.png"), num=2)
    assert has_panels_size(png_size(path), 2, 2)  # input and expected only
    used = {ARC_TASKS["aaaa0001"]["test"][0]["input"][0][0], ARC_TASKS["bbbb0002"]["test"][0]["input"][0][0]}
    assert {arc.PALETTE[c] for c in used} <= png_colours(path)


def test_arc_submission_shows_both_attempts(arc_dir, tmp_path):
    good = ARC_TASKS["aaaa0001"]["test"][0]["output"]
    submission = {"aaaa0001": [{"attempt_1": [[0]], "attempt_2": good}],
                  "bbbb0002": [{"attempt_1": [[3, 3]], "attempt_2": [[3]]}]}
    path = str(tmp_path / "submission.json")
    with open(path, "w") as f:
        json.dump(submission, f)
    out = str(tmp_path / "submission.html")
    visualize.main(["puzzles", "--data", arc_dir, "--submission", path, "--out", out])
    page = open(out, encoding="utf-8").read()
    assert count(page, r'<table class="grid arc') == 2 * 4
    assert "attempt 1" in page and "attempt 2" in page
    assert count(page, r'<section class="example right"') == 1  # attempt 2 of the first task
    assert count(page, r'<figure class="panel wrong"') == 3

    with open(path, "w") as f:
        json.dump({"cccc0003": [{"attempt_1": [[1]]}]}, f)
    with pytest.raises(ValueError, match="not in"):
        puzzles.build_sheet(arc_dir, submission=path)
    with open(path, "w") as f:
        json.dump({"bbbb0002": [{"attempt_1": [[1, 2], [3]]}]}, f)
    with pytest.raises(ValueError, match="attempt_1 of task 'bbbb0002' test 0"):
        puzzles.build_sheet(arc_dir, submission=path)


def test_arc_prediction_crop_matches_the_evaluator():
    canvas = np.zeros((30, 30), dtype=np.int64)
    canvas[:3, :4] = 5
    canvas[1, 3] = 1  # EOS inside row 1 shrinks the width to 3 from there on
    canvas[3, :3] = 1
    assert viz_arc.arc_prediction_grid(canvas.ravel()).shape == (3, 3)
    canvas[:, :] = 0
    assert viz_arc.arc_prediction_grid(canvas.ravel()).shape == (0, 0)


# ---------------------------------------------------------------------------------------------
# Generic (copy task)
# ---------------------------------------------------------------------------------------------
def test_copy_task_renders_a_token_grid(tmp_path):
    data = write_copy_task(str(tmp_path / "copy"), 4, 3, seq_len=16, vocab_size=8)
    outputs = fake_outputs(data, with_inputs=False, corrupt=lambda row, _inputs: row.__setitem__(0, row[0] % 7 + 1))
    page = open(puzzles.render_predictions(data, outputs, str(tmp_path / "copy.html")), encoding="utf-8").read()
    assert "not recognised" in page
    assert count(page, r'<table class="grid generic') == 3 * 3
    assert count(page, r"<td") == 3 * 3 * 16  # 16 tokens as a 4x4 grid
    assert count(page, r'<section class="example wrong"') == 1


# ---------------------------------------------------------------------------------------------
# Outputs handling and errors
# ---------------------------------------------------------------------------------------------
def test_saved_outputs_file_and_run_dir(sudoku_dir, tmp_path):
    outputs = fake_outputs(sudoku_dir, wrong_rows=())
    # A padded last batch: an all-PAD row that must not be drawn.
    outputs = {k: torch.cat([v, torch.full_like(v[:1], -100 if k == "labels" else 0)]) for k, v in outputs.items()}
    torch.save(outputs, tmp_path / "step_3_all_preds.0")
    torch.save(outputs, tmp_path / "step_12_all_preds.0")
    assert viz_data.find_outputs_file(str(tmp_path)).endswith("step_12_all_preds.0")
    sheet = puzzles.build_sheet(sudoku_dir, str(tmp_path), num=10)
    assert len(sheet.examples) == NUM_SUDOKU and all(e.verdict for e in sheet.examples)


def test_outputs_in_another_order_are_matched_by_inputs(sudoku_dir):
    outputs = {k: v.flip(0) for k, v in fake_outputs(sudoku_dir, wrong_rows=()).items()}
    sheet = puzzles.build_sheet(sudoku_dir, outputs)
    assert [e.name for e in sheet.examples] == [f"test #{i}" for i in reversed(range(NUM_SUDOKU))]
    assert all(e.verdict for e in sheet.examples)


def test_mismatched_inputs_are_clear_errors(sudoku_dir, maze_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        puzzles.build_sheet(str(tmp_path / "nowhere"))
    maze_outputs = fake_outputs(maze_dir, wrong_rows=())
    with pytest.raises(ValueError, match="do not match"):  # other seq_len
        puzzles.build_sheet(sudoku_dir, maze_outputs)
    outputs = fake_outputs(sudoku_dir, wrong_rows=())
    outputs["inputs"][0, :5] = 1  # a puzzle that is not in the dataset
    with pytest.raises(ValueError, match="not an example"):
        puzzles.build_sheet(sudoku_dir, outputs)
    with pytest.raises(ValueError, match="no 'preds'"):
        puzzles.build_sheet(sudoku_dir, {"inputs": outputs["inputs"]})
    short = fake_outputs(sudoku_dir, wrong_rows=(), with_inputs=False)
    short = {k: v[:1] for k, v in short.items()}
    with pytest.raises(ValueError, match="cannot be matched by order"):
        puzzles.build_sheet(sudoku_dir, short)
    with pytest.raises(ValueError, match=r"\.html or \.png"):
        puzzles.render_predictions(sudoku_dir, None, str(tmp_path / "x.jpg"))
    with pytest.raises(ValueError, match="for ARC"):
        puzzles.build_sheet(sudoku_dir, submission=str(tmp_path / "s.json"))


def test_cli_writes_html_and_png_and_reports_errors(sudoku_dir, tmp_path, capsys):
    outputs_file = tmp_path / "step_1_all_preds.0"
    torch.save(fake_outputs(sudoku_dir, corrupt=_wrong_sudoku_digit), outputs_file)
    html_out, png_out = str(tmp_path / "p.html"), str(tmp_path / "p.png")
    visualize.main(["puzzles", "--data", sudoku_dir, "--outputs", str(outputs_file), "--num", "1",
                    "--out", html_out, "--out", png_out])
    assert os.path.isfile(html_out) and has_panels_size(png_size(png_out), 3, 1)
    assert f"Wrote {html_out}" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="error: .*does not exist"):
        visualize.main(["puzzles", "--data", str(tmp_path / "missing")])


# ---------------------------------------------------------------------------------------------
# Training curves
# ---------------------------------------------------------------------------------------------
def write_metrics(run_dir):
    """A short run: step-0 parameter count, train lines (some with no halted sequence), two evaluations,
    and a resume that re-logs step 4."""
    lines = [{"step": 0, "num_params": 1000}]
    for step in range(1, 7):
        halted = 0.0 if step % 3 == 0 else 4.0
        lines.append({"step": step, "train/accuracy": 0.1 * step, "train/count": halted,
                      "train/exact_accuracy": 0.0 if not halted else 0.1 * step, "train/lm_loss": 2.0 / step,
                      "train/q_halt_loss": 0.5 / step, "train/steps": 0.0 if not halted else 8.0,
                      "train/lr": 1e-4 * step})
    lines.insert(4, {"step": 3, "all/exact_accuracy": 0.25, "all/lm_loss": 1.0, "all/steps": 16.0})
    lines.append({"step": 6, "all/exact_accuracy": 0.5, "all/lm_loss": 0.5, "all/steps": 16.0})
    lines.append({"step": 4, "train/lm_loss": 0.123, "train/lr": 4e-4, "train/count": 4.0})  # after a resume
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
        f.write("\n".join(json.dumps(line) for line in lines) + "\n")
    return os.path.join(run_dir, "metrics.jsonl")


def test_curves_figure_has_the_four_panels(tmp_path):
    path = write_metrics(str(tmp_path / "run"))
    fig = curves.curves_figure(path)
    assert [ax.get_title() for ax in fig.axes] == list(curves.PANEL_TITLES)
    labels = {ax.get_title(): [line.get_label() for line in ax.get_lines()] for ax in fig.axes}
    assert labels["Loss"] == ["train/lm_loss", "train/q_halt_loss", "all/lm_loss"]
    assert labels["Exact accuracy"] == ["train/exact_accuracy", "all/exact_accuracy"]
    assert labels["ACT steps"] == ["train/steps", "all/steps"]
    assert labels["Learning rate"] == ["train/lr"]
    loss_lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert loss_lines["train/lm_loss"].get_color() == loss_lines["all/lm_loss"].get_color()  # same metric
    assert fig.axes[0].get_yscale() == "log"  # losses of very different sizes stay readable


def test_curves_series_skip_empty_steps_and_keep_the_resumed_value(tmp_path):
    records = curves.read_metrics(write_metrics(str(tmp_path / "run")))
    steps, values = curves.series(records, "train/exact_accuracy")
    assert steps.tolist() == [1, 2, 4, 5]  # steps 3 and 6 had no halted sequence
    steps, values = curves.series(records, "train/lm_loss")
    assert steps.tolist() == [1, 2, 3, 4, 5, 6] and values[3] == 0.123


def test_plot_curves_png_and_cli(tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    write_metrics(run_dir)
    path = curves.plot_curves(run_dir)
    assert path == os.path.join(run_dir, "curves.png")
    width, height = curves.FIGURE_INCHES
    assert png_size(path) == (width * png.PNG_DPI, height * png.PNG_DPI)
    out = str(tmp_path / "c.png")
    visualize.main(["curves", os.path.join(run_dir, "metrics.jsonl"), "--out", out])
    assert os.path.isfile(out) and f"Wrote {out}" in capsys.readouterr().out


def test_curves_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no metrics.jsonl"):
        curves.plot_curves(str(tmp_path))
    bad = tmp_path / "metrics.jsonl"
    bad.write_text('{"step": 1, "train/lm_loss": 1.0}\nnot json\n{"step": 2, "train/lm_loss": 0.5}\n')
    with pytest.raises(ValueError, match="line 2"):
        curves.read_metrics(str(bad))
    bad.write_text('{"step": 1, "train/lm_loss": 1.0}\n{"step": 2, "train/l')  # a line being written
    with pytest.warns(UserWarning, match="incomplete last line"):
        assert len(curves.read_metrics(str(bad))) == 1


@pytest.mark.parametrize("content", ["random", "pickle"])
def test_issue23_e_unreadable_outputs_file_passes_no_torch_advice(sudoku_dir, tmp_path, content, capsys):
    import pickle
    outputs_file = tmp_path / "step_1_all_preds.0"
    if content == "random":
        outputs_file.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 2048, dtype=np.uint8)))
    else:
        with open(outputs_file, "wb") as f:
            pickle.dump(argparse.Namespace(x=1), f)  # a class torch's safe unpickler refuses
    with pytest.raises(SystemExit) as err:
        visualize.main(["puzzles", "--data", sudoku_dir, "--outputs", str(outputs_file), "--out",
                        str(tmp_path / "p.html")])
    message = str(err.value)
    assert message.startswith("error: ") and str(outputs_file) in message and "\n" not in message
    assert "weights_only" not in message and "torch.load" not in message and "Re-running" not in message


@pytest.mark.parametrize("field, keep", [("inputs", 0.5), ("puzzle_identifiers", 0.9), ("puzzle_indices", 0.9)])
def test_issue23_e_truncated_array_is_named_with_how_to_rebuild(sudoku_dir, tmp_path, field, keep):
    """Issue 23 E: visualize --data <dir with a truncated .npy> named no file."""
    import shutil
    data = tmp_path / "data"
    shutil.copytree(sudoku_dir, data)
    path = data / "test" / f"all__{field}.npy"
    os.truncate(path, int(os.path.getsize(path) * keep))
    with pytest.raises(SystemExit) as err:
        visualize.main(["puzzles", "--data", str(data), "--out", str(tmp_path / "p.html")])
    message = str(err.value)
    assert message.startswith("error: ") and "\n" not in message, message
    assert str(path) in message and "truncated" in message and "rebuild" in message, message


def test_issue26_a_run_dir_outputs_saved_by_evaluate_are_found(sudoku_dir, tmp_path):
    """`visualize.py puzzles --outputs <run dir>` also looks in evaluate.py's folders (eval_step_N...), and without
    any outputs it names both ways of saving them."""
    with pytest.raises(FileNotFoundError, match=r"eval_\* folders; save them in training with eval_save_outputs=.*"
                                                r"or with evaluate.py save_outputs="):
        viz_data.find_outputs_file(str(tmp_path))
    outputs = fake_outputs(sudoku_dir, wrong_rows=())
    for folder, step in (("eval_step_4", 4), ("eval_step_12", 12), ("eval_step_12+tta8", 12)):
        os.makedirs(tmp_path / folder)
        torch.save(outputs, tmp_path / folder / f"step_{step}_all_preds.0")
    newest = tmp_path / "eval_step_12+tta8" / "step_12_all_preds.0"
    os.utime(newest, (os.path.getmtime(newest) + 10,) * 2)
    assert viz_data.find_outputs_file(str(tmp_path)) == str(newest)
    torch.save(outputs, tmp_path / "step_3_all_preds.0")  # training's own outputs come first
    assert viz_data.find_outputs_file(str(tmp_path)).endswith(os.path.join(str(tmp_path), "step_3_all_preds.0"))
