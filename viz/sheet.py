"""What a picture shows, independent of the task and of the file format.

A `Sheet` holds `Example`s, an example holds `Panel`s: a grid of cell colours with optional texts,
styles, cells marked wrong and a right/wrong verdict. Each task's `Renderer` turns dataset rows into
examples; the HTML and PNG writers draw any sheet and know nothing about puzzles.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from dataset.common import IGNORE_LABEL_ID, PuzzleDatasetMetadata
from viz.data import Row, SplitData

# Cell text styles (HTML classes; PNG text colours).
STYLE_CLUE, STYLE_FILL, STYLE_WRONG = "clue", "fill", "wrong"
VERDICT_MARK = {True: "\u2713 right", False: "\u2717 wrong"}
# predict.py has no solution to compare with: its verdict is whether the answer is a valid completion.
VALIDITY_MARK = {True: "\u2713 valid completion", False: "\u2717 not valid"}
NAME_SEPARATOR = " \u00b7 "  # between the parts of an example's name; the PNG breaks a long name there
VERDICT_COLOUR = {True: "#2E7D32", False: "#C62828"}
ERROR_OUTLINE = "#E00000"
# What a red outline marks when the sheet does not say (a sheet built without a renderer).
DEFAULT_OUTLINE = "differs from the expected"


@dataclass
class Panel:
    """One grid: cell colours (hex strings), optional cell texts and styles, cells marked wrong."""

    title: str
    colours: np.ndarray  # (H, W) object array of "#RRGGBB"
    texts: Optional[np.ndarray] = None  # (H, W) object array of str ("" = none)
    styles: Optional[np.ndarray] = None  # (H, W) object array: STYLE_* or ""
    errors: Optional[np.ndarray] = None  # (H, W) bool: drawn with a red outline
    verdict: Optional[bool] = None  # True right, False wrong, None not judged
    block: int = 0  # thick lines every `block` cells (Sudoku boxes); 0 = none
    grid_lines: bool = True


@dataclass
class Example:
    name: str
    panels: list[Panel]
    verdict: Optional[bool] = None


@dataclass
class Sheet:
    title: str
    task: str  # the renderer's name (the HTML grids' CSS class)
    examples: list[Example]
    legend: list[tuple[str, str]] = field(default_factory=list)  # (colour, meaning)
    note: str = ""
    outline: str = DEFAULT_OUTLINE  # what a red outline (Panel.errors) marks
    marks: dict[bool, str] = field(default_factory=lambda: dict(VERDICT_MARK))  # the words of each verdict


def draws_outlines(sheet: Sheet) -> bool:
    """Whether any panel marks cells wrong (the HTML and PNG writers outline them in red)."""
    return any(p.errors is not None and p.errors.any() for e in sheet.examples for p in e.panels)


def outline_legend(sheet: Sheet) -> str:
    """The legend text of the red outline; "" when no panel draws one, so that the legend explains
    only marks the picture shows (puzzles without predictions have none)."""
    if not draws_outlines(sheet):
        return ""
    return f"{sheet.outline} (red outline)"


def object_grid(shape: tuple[int, int], value: str) -> np.ndarray:
    """An (H, W) object array filled with one string (a colour, a text)."""
    grid = np.empty(shape, dtype=object)
    grid.fill(value)
    return grid


def exact_match(preds: np.ndarray, labels: np.ndarray, metadata: PuzzleDatasetMetadata) -> bool:
    """The training metric's exact accuracy: every label position that is not ignored is predicted."""
    scored = labels != IGNORE_LABEL_ID
    if metadata.ignore_label_id is not None:
        scored &= labels != metadata.ignore_label_id
    return bool((preds[scored] == labels[scored]).all())


def row_name(row: Row, data: SplitData) -> str:
    """`test #3`, followed by the puzzle's name when the dataset has identifiers.json."""
    name = f"{data.split} #{row.index}"
    if data.names is not None and 0 < row.identifier < len(data.names):
        name += f"{NAME_SEPARATOR}{data.names[row.identifier]}"
    return name


def summary(examples: list[Example]) -> str:
    """How many of the judged examples are right (the sheet's note)."""
    judged = [e.verdict for e in examples if e.verdict is not None]
    return f"{sum(judged)}/{len(judged)} shown examples right" if judged else "no predictions: puzzles and labels only"


class Renderer:
    """How one task's rows become examples: decoding tokens into grids, the panels, the legend.

    Subclasses set `name`, `legend`, `outline` (what the red outline of a wrong cell means in their
    pictures) and `seq_len` (the sequence length of the encoding they draw; None: any) and implement
    `panels` and `prediction_panel`, which receive decoded grids; the rest has defaults they may override.
    The renderers of tasks with a text form (predict.py) also implement `answer_panels` and `answer_legend`.
    """

    name: str = ""
    legend: list[tuple[str, str]] = []
    outline: str = DEFAULT_OUTLINE
    seq_len: Optional[int] = None
    answer_legend: list[tuple[str, str]] = []  # of the pictures of `answer_panels`

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """Tokens of an input or label as the grid the panels draw (default: the token ids)."""
        return np.asarray(tokens, dtype=np.int64)

    def decode_prediction(self, preds: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Predicted tokens as a grid (default: as `decode`; `labels` are the row's label tokens)."""
        return self.decode(preds)

    def panels(self, inputs: np.ndarray, labels: np.ndarray) -> list[Panel]:
        """The panels of a row without its prediction (decoded input and label)."""
        raise NotImplementedError

    def prediction_panel(self, inputs: np.ndarray, labels: np.ndarray, preds: np.ndarray) -> Panel:
        """The panel of the decoded prediction, differences from the label marked."""
        raise NotImplementedError

    def answer_panels(self, puzzle: np.ndarray, answer: np.ndarray, solved: bool
                      ) -> tuple[list[Panel], Optional[bool]]:
        """The panels of a decoded puzzle and a model's answer to it, with no solution to compare with
        (viz/answers.py), and the verdict the picture shows; `solved` is the task's `is_solved`."""
        raise NotImplementedError(f"{self.name} renderer: no pictures of answers without a solution")

    def judge(self, row: Row, prediction: Panel, metadata: PuzzleDatasetMetadata) -> bool:
        """Whether the prediction is right: by default the training metric's exact match."""
        return exact_match(row.preds, row.labels, metadata)

    def leads(self, puzzle_name: str) -> bool:
        """Whether examples of this puzzle are shown before the others (default: all are equal)."""
        return True

    def note(self, data: SplitData) -> str:
        """Text appended to the sheet's summary line."""
        return ""

    def submission_sheet(self, dataset_dir: str, submission_path: str, num: int) -> Sheet:
        """A sheet of an evaluator's submission.json: only the ARC renderer has one."""
        raise ValueError(f"--submission is for ARC datasets; {dataset_dir!r} is a {self.name} dataset.")

    def example(self, row: Row, data: SplitData) -> Example:
        """The row's panels, plus its judged prediction when the row has one."""
        inputs, labels = self.decode(row.inputs), self.decode(row.labels)
        panels, verdict = self.panels(inputs, labels), None
        if row.preds is not None:
            prediction = self.prediction_panel(inputs, labels, self.decode_prediction(row.preds, row.labels))
            prediction.verdict = verdict = self.judge(row, prediction, data.metadata)
            panels.append(prediction)
        return Example(row_name(row, data), panels, verdict)
