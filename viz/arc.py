"""ARC pictures: grids in the standard ARC colours; predictions cropped as the evaluator crops them.

The encoding (30x30 canvas, PAD 0, EOS 1, colour c -> c + 2, augmented names with `|||`) is
`dataset.tasks.arc` (docs/builders.md); the crop is the ARC evaluator's (docs/arc-evaluator.md).
"""
from __future__ import annotations

import json
import os
from typing import Any, Optional

import numpy as np

from dataset.common import PuzzleDatasetMetadata
from dataset.tasks.arc import COLOUR_OFFSET, GRID_SIZE, NAME_SEPARATOR, NUM_COLOURS, PALETTE, SEQ_LEN
from viz.data import Row
from viz.sheet import Example, Panel, Renderer, Sheet, summary

LEGEND = [(colour, str(i)) for i, colour in enumerate(PALETTE)]


def _canvas(tokens: np.ndarray) -> np.ndarray:
    return np.asarray(tokens).reshape(GRID_SIZE, GRID_SIZE)


def _is_colour(tokens: np.ndarray) -> np.ndarray:
    return (tokens >= COLOUR_OFFSET) & (tokens < COLOUR_OFFSET + NUM_COLOURS)


def _colour_box(canvas: np.ndarray) -> Optional[tuple[slice, slice]]:
    """Rows and columns of the bounding box of the colour tokens (None when there are none)."""
    rows, cols = np.nonzero(_is_colour(canvas))
    if rows.size == 0:
        return None
    return slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1)


def arc_grid(tokens: np.ndarray) -> np.ndarray:
    """Colours 0..9 of an input or label canvas: the bounding box of its colour tokens.

    A bounding box (not the top-left corner) because train-split grids are translated in the canvas.
    """
    canvas = _canvas(tokens)
    box = _colour_box(canvas)
    if box is None:
        return np.zeros((0, 0), dtype=np.int64)
    return canvas[box].astype(np.int64) - COLOUR_OFFSET


def arc_prediction_grid(tokens: np.ndarray, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """The ARC evaluator's crop (docs/arc-evaluator.md) from `origin`: the largest rectangle of colour tokens.

    Rows are scanned downwards; the column limit shrinks at the first non-colour token of each row.
    """
    canvas = _canvas(tokens)[origin[0]:, origin[1]:]
    colour = _is_colour(canvas)
    limit, best_rows, best_cols = canvas.shape[1], 0, 0
    for r in range(canvas.shape[0]):
        bad = np.flatnonzero(~colour[r, :limit])
        if bad.size:
            limit = int(bad[0])
        if limit == 0:
            break
        if (r + 1) * limit > best_rows * best_cols:
            best_rows, best_cols = r + 1, limit
    return canvas[:best_rows, :best_cols].astype(np.int64) - COLOUR_OFFSET


def _label_origin(tokens: np.ndarray) -> tuple[int, int]:
    """Top-left corner of the label grid in its canvas (0, 0 on the test split)."""
    box = _colour_box(_canvas(tokens))
    return (int(box[0].start), int(box[1].start)) if box is not None else (0, 0)


def arc_panel(title: str, grid: np.ndarray, expected: Optional[np.ndarray] = None) -> Panel:
    """An ARC grid; with `expected`, judged right/wrong and differing cells outlined (when shapes match)."""
    palette = np.array(PALETTE, dtype=object)
    panel = Panel(title, palette[np.asarray(grid, dtype=np.int64)].reshape(grid.shape))
    if expected is not None:
        panel.verdict = grid.shape == expected.shape and bool((grid == expected).all())
        if grid.shape == expected.shape:
            panel.errors = grid != expected
    return panel


# ---------------------------------------------------------------------------------------------
# An evaluator's submission.json (attempts 1 and 2 of each test pair)
# ---------------------------------------------------------------------------------------------
def _read_json_file(path: str, what: str) -> Any:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path!r} not found.")
    with open(path, "r") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{what} {path!r} is not valid JSON: {err}") from None


def _submission_grid(value: Any, where: str) -> np.ndarray:
    """A grid from a JSON file as a 2-D array of colours 0..9, or a clear error."""
    try:
        grid = np.array(value, dtype=np.int64)
    except (TypeError, ValueError):
        grid = None
    if grid is None or grid.ndim != 2 or grid.size and (grid.min() < 0 or grid.max() >= NUM_COLOURS):
        raise ValueError(f"{where} is not a grid of colours 0..9 (a list of equally long rows).")
    return grid


def arc_submission_examples(dataset_dir: str, submission_path: str, num: int) -> list[Example]:
    """Input, expected, attempt 1 and attempt 2 of each test pair of the tasks in an ARC submission.json."""
    puzzles = _read_json_file(os.path.join(dataset_dir, "test_puzzles.json"),
                              "ARC test puzzles (written by the builder)")
    submission = _read_json_file(submission_path, "ARC submission")
    if not isinstance(submission, dict):
        raise ValueError(f"ARC submission {submission_path!r} must map task ids to lists of attempts.")
    examples = []
    for task_id, attempts in submission.items():
        if task_id not in puzzles:
            raise ValueError(f"The submission does not match the dataset: task {task_id!r} is not in "
                             f"{dataset_dir}/test_puzzles.json.")
        for pair_index, (pair, attempt) in enumerate(zip(puzzles[task_id]["test"], attempts)):
            if len(examples) == num:
                return examples
            where = f"task {task_id!r} test {pair_index}"
            expected = _submission_grid(pair["output"], f"the expected output of {where}")
            panels = [arc_panel("input", _submission_grid(pair["input"], f"the input of {where}")),
                      arc_panel("expected", expected)]
            for key in ("attempt_1", "attempt_2"):
                if key in attempt:
                    grid = _submission_grid(attempt[key], f"{key} of {where} in {submission_path!r}")
                    panels.append(arc_panel(key.replace("_", " "), grid, expected))
            verdict = any(p.verdict for p in panels[2:])  # pass@2: either attempt counts
            examples.append(Example(f"{task_id} \u00b7 test {pair_index}", panels, verdict))
    return examples


class ArcRenderer(Renderer):
    """Input, expected output and (with outputs) the prediction the evaluator would score."""

    name, legend, seq_len = "arc", LEGEND, SEQ_LEN
    outline = "wrong colour"  # outlined only where the grid has the expected shape

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        return arc_grid(tokens)

    def decode_prediction(self, preds: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return arc_prediction_grid(preds, _label_origin(labels))

    def panels(self, inputs: np.ndarray, expected: np.ndarray) -> list[Panel]:
        return [arc_panel("input", inputs), arc_panel("expected", expected)]

    def prediction_panel(self, inputs: np.ndarray, expected: np.ndarray, predicted: np.ndarray) -> Panel:
        return arc_panel("prediction", predicted, expected)

    def judge(self, row: Row, prediction: Panel, metadata: PuzzleDatasetMetadata) -> bool:
        return prediction.verdict  # the evaluator's rule: the cropped grid equals the expected one

    def leads(self, puzzle_name: str) -> bool:
        return NAME_SEPARATOR not in puzzle_name  # the published tasks before their augmentations

    def submission_sheet(self, dataset_dir: str, submission_path: str, num: int) -> Sheet:
        examples = arc_submission_examples(dataset_dir, submission_path, num)
        return Sheet(f"ARC submission {os.path.basename(submission_path)}", self.name, examples, self.legend,
                     f"{summary(examples)} (right = either attempt equals the expected output)", outline=self.outline)
