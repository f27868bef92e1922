"""Picture legends, titles and row names: fully inside the saved PNG in every layout, explaining every red outline
drawn, and saying what a verdict means (predict.py's answers are valid completions, not right answers).

Each case renders one picture kind from the tiny datasets of tests/unit/test_pictures.py (built by the project's
own generators and builders, nothing downloaded). The PNG checks inspect the very figure `write_png` saves
(captured at `png.save_figure`), drawn at the dpi and size of the written file; each case's sheet and PNG
are made once for all its checks.
"""
import json
import re

import numpy as np
import pytest
from matplotlib.collections import PatchCollection
from matplotlib.colors import same_color

from dataset.build_copy_dataset import write_copy_task
from dataset.tasks import maze, sudoku
from tests.unit.test_pictures import (  # noqa: F401  (arc_dir, maze_dir, sudoku_dir: fixtures, used by name)
    ARC_TASKS,
    _maze_path_errors,
    _wrong_arc_colour,
    _wrong_sudoku_digit,
    arc_dir,
    fake_outputs,
    maze_dir,
    png_size,
    sudoku_dir,
)
from viz import png, puzzles
from viz.answers import answers_sheet
from viz.sheet import ERROR_OUTLINE, NAME_SEPARATOR, VALIDITY_MARK

OUTLINE_WORDS = "red outline"  # how a legend entry that explains the outline names it


def _maze_errors_and_a_lost_wall(row, inputs):
    """The path errors, and a wall predicted open: the one maze difference drawn as a red outline."""
    _maze_path_errors(row, inputs)
    row[np.flatnonzero(row == maze.WALL)[0]] = maze.OPEN


def _arc_submission(dataset_dir, tmp_path):
    """Attempt 1 of the second task has the expected shape but other colours: its cells are outlined."""
    submission = {"aaaa0001": [{"attempt_1": [[0]], "attempt_2": ARC_TASKS["aaaa0001"]["test"][0]["output"]}],
                  "bbbb0002": [{"attempt_1": [[3, 3]], "attempt_2": [[3]]}]}
    path = tmp_path / "submission.json"
    path.write_text(json.dumps(submission))
    return puzzles.build_sheet(dataset_dir, submission=str(path))


class _Answer:
    """What predict.py tells of an answer (viz.answers.Answered)."""

    def __init__(self, text: str, confidence: float, votes: int):
        self.tokens, self.steps, self.confidence, self.votes = sudoku_tokens(text), 16, confidence, votes


def sudoku_tokens(text: str) -> np.ndarray:
    return np.array([0 if c == "." else int(c) for c in text]) + 1  # the dataset's tokens: digit + 1, blank 1


SUDOKU_PUZZLE = "..3.2.6..9..3.5..1..18.64....81.29..7.......8..67.82....26.95..8..2.3..9..5.1.3.."
SUDOKU_SOLUTION = "483921657967345821251876493548132976729564138136798245372689514814253769695417382"


def _sudoku_answers():
    """predict.py's picture of two answers with tta=8 (long names: votes too), one a valid completion."""
    answers = [_Answer(SUDOKU_SOLUTION, 0.987, 7), _Answer(SUDOKU_SOLUTION[:-1] + "1", 0.412, 5)]
    solved = [sudoku.is_solved(sudoku_tokens(SUDOKU_PUZZLE), a.tokens) for a in answers]
    assert solved == [True, False]
    return answers_sheet("sudoku", "checkpoints/Sudoku-quickstart-ACT-torch/a-run/step_1234",
                         [sudoku_tokens(SUDOKU_PUZZLE)] * 2, answers, solved, 9, "halt_early=False, tta=8")


def _copy_task(tmp_path):
    return write_copy_task(str(tmp_path / "copy"), 4, 3, seq_len=16, vocab_size=8)


# Case name -> the sheet it draws, from (fixture value getter, tmp_path).
SHEETS = {
    "arc-predictions": lambda get, tmp: puzzles.build_sheet(
        get("arc_dir"), fake_outputs(get("arc_dir"), wrong_rows=(0,), corrupt=_wrong_arc_colour)),
    "arc-puzzles-only": lambda get, tmp: puzzles.build_sheet(get("arc_dir")),
    "arc-one-puzzle-only": lambda get, tmp: puzzles.build_sheet(get("arc_dir"), num=1),
    "arc-submission": lambda get, tmp: _arc_submission(get("arc_dir"), tmp),
    "maze-predictions": lambda get, tmp: puzzles.build_sheet(
        get("maze_dir"), fake_outputs(get("maze_dir"), wrong_rows=(0,), corrupt=_maze_errors_and_a_lost_wall)),
    "maze-path-errors-only": lambda get, tmp: puzzles.build_sheet(
        get("maze_dir"), fake_outputs(get("maze_dir"), wrong_rows=(0,), corrupt=_maze_path_errors)),
    "maze-one-prediction": lambda get, tmp: puzzles.build_sheet(
        get("maze_dir"), fake_outputs(get("maze_dir"), wrong_rows=(0,), corrupt=_maze_errors_and_a_lost_wall),
        num=1),
    "maze-puzzles-only": lambda get, tmp: puzzles.build_sheet(get("maze_dir")),
    "maze-one-puzzle-only": lambda get, tmp: puzzles.build_sheet(get("maze_dir"), num=1),
    "sudoku-predictions": lambda get, tmp: puzzles.build_sheet(
        get("sudoku_dir"), fake_outputs(get("sudoku_dir"), corrupt=_wrong_sudoku_digit)),
    "sudoku-one-puzzle-only": lambda get, tmp: puzzles.build_sheet(get("sudoku_dir"), num=1),
    "sudoku-answers": lambda get, tmp: _sudoku_answers(),
    "generic-predictions": lambda get, tmp: puzzles.build_sheet(_copy_task(tmp), fake_outputs(
        _copy_task(tmp), with_inputs=False, corrupt=lambda row, _inputs: row.__setitem__(0, row[0] % 7 + 1))),
    "generic-puzzles-only": lambda get, tmp: puzzles.build_sheet(_copy_task(tmp)),
}
# The cases whose pictures draw red outlines (the others must not explain a mark they do not draw).
OUTLINED = {"arc-predictions", "arc-submission", "maze-predictions", "maze-one-prediction", "sudoku-predictions",
            "generic-predictions"}


@pytest.fixture(scope="module", params=sorted(SHEETS))
def case(request, tmp_path_factory):
    """(name, sheet), built once for the tests that draw it (the sheet is only read)."""
    return request.param, SHEETS[request.param](request.getfixturevalue, tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def saved(case, tmp_path_factory):
    """(name, sheet, the figure write_png saved, drawn again at the same dpi, the PNG's path)."""
    name, sheet = case
    out_path = str(tmp_path_factory.mktemp(name) / f"{name}.png")
    figures = []
    save = png.save_figure

    def capture(fig, path):
        figures.append(fig)
        return save(fig, path)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(png, "save_figure", capture)
        puzzles.write_sheet(sheet, out_path)
    (fig,) = figures
    fig.canvas.draw()
    return name, sheet, fig, out_path


def assert_inside(fig, artists, what):
    """Each artist's drawn extent lies within the figure, which is the whole saved image."""
    renderer = fig.canvas.get_renderer()
    width, height = fig.bbox.width, fig.bbox.height
    for artist in artists:
        box = artist.get_window_extent(renderer)
        text = artist.get_text() if hasattr(artist, "get_text") else "box"
        assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height, \
            f"{what} {text!r} at {box.extents.round(1).tolist()} is not inside the {width:g}x{height:g} image"


def draws_outlines(fig):
    return any(isinstance(c, PatchCollection) and same_color(c.get_edgecolor()[0], ERROR_OUTLINE)
               for ax in fig.axes for c in ax.collections)


def outline_entries(legend):
    """Legend entries whose swatch is a red outline and whose text says so."""
    return [text.get_text() for text, handle in zip(legend.get_texts(), legend.legend_handles)
            if OUTLINE_WORDS in text.get_text() and same_color(handle.get_edgecolor(), ERROR_OUTLINE)]


def test_png_legend_lies_inside_the_image(saved):
    name, sheet, fig, out_path = saved
    assert png_size(out_path) == (round(fig.bbox.width), round(fig.bbox.height))  # the figure is the whole image
    if not sheet.legend and name not in OUTLINED:
        assert not fig.legends  # nothing to explain
        return
    assert len(fig.legends) == 1, f"{name}: the picture draws marks but has no legend"
    (legend,) = fig.legends
    assert_inside(fig, [legend, *legend.get_texts()], f"{name}: legend")


def test_png_title_lies_inside_the_image(saved):
    """The title and note above the legend (a dataset path, the summary) are not cut off either."""
    name, sheet, fig, _ = saved
    assert [text.get_text() for text in fig.texts] == [f"{sheet.title}\n{sheet.note}"]  # the figure's only text
    assert_inside(fig, fig.texts, f"{name}: title")


def first_column(fig, sheet):
    """The axes of each example's first panel (the row's name is their y label)."""
    cols = len(fig.axes) // max(1, len(sheet.examples))
    return fig.axes[::cols][:len(sheet.examples)]


def test_png_row_names_are_whole_and_within_their_row(saved):
    """Issue 26 finding 7: predict's name '#1 · steps · confidence · votes' was cut to 40 characters and ran past
    its row; a name is drawn whole, in lines, beside its own panels and inside the image."""
    name, sheet, fig, _ = saved
    renderer = fig.canvas.get_renderer()
    for ax, example in zip(first_column(fig, sheet), sheet.examples):
        label = ax.yaxis.label
        assert label.get_text().replace("\n", NAME_SEPARATOR) == example.name
        assert_inside(fig, [label], f"{name}: row name")
        box, row = label.get_window_extent(renderer), ax.get_position(original=True).transformed(fig.transFigure)
        assert row.y0 - 1 <= box.y0 and box.y1 <= row.y1 + 1, f"{name}: {example.name!r} runs past its row"


def test_png_panel_titles_lie_inside_the_image(saved):
    name, _, fig, _ = saved
    assert_inside(fig, [ax.title for ax in fig.axes if ax.get_title()], f"{name}: panel title")


def test_predict_pictures_say_valid_completion_not_right(tmp_path):
    """Issue 26 finding 7: predict has no solution, only the validity check, but its picture said "right"."""
    sheet = _sudoku_answers()
    fig = png.sheet_figure(sheet)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title().startswith("answer")]
    assert titles == [f"answer  {VALIDITY_MARK[True]}", f"answer  {VALIDITY_MARK[False]}"]
    page = open(puzzles.write_sheet(sheet, str(tmp_path / "answers.html")), encoding="utf-8").read()
    badges = re.findall(r'<span class="badge">(.*?)</span>', page)
    assert set(badges) == set(VALIDITY_MARK.values()) and "right" not in " ".join(badges + titles)


def test_png_legend_explains_red_outlines(saved):
    name, _, fig, _ = saved
    assert draws_outlines(fig) == (name in OUTLINED)
    entries = outline_entries(fig.legends[0]) if fig.legends else []
    assert len(entries) == (1 if draws_outlines(fig) else 0), f"{name}: outline entries {entries}"


def test_html_legend_explains_red_outlines(case, tmp_path):
    name, sheet = case
    page = open(puzzles.write_sheet(sheet, str(tmp_path / f"{name}.html")), encoding="utf-8").read()
    outlined = re.search(r'<td class="[^"]*\berr\b', page) is not None
    assert outlined == (name in OUTLINED)
    legend = re.search(r'<div class="legend">(.*?)</div>', page).group(1)
    assert legend.count(OUTLINE_WORDS) == (1 if outlined else 0), f"{name}: legend {legend}"
    if outlined:
        assert re.search(r'class="swatch outline"', legend)
