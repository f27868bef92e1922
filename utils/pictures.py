"""Pictures of puzzles, labels and model predictions: a self-contained HTML page or a PNG.

    python visualize.py puzzles --data data/sudoku-demo --outputs RUN_DIR/step_N_all_preds.0 --out pictures.html
    python visualize.py puzzles --data data/arc1concept-aug-1000 --submission RUN_DIR/evaluator_ARC_step_N/submission.json

The dataset kind is read from `<dir>/<split>/dataset.json` (SPEC section 1-2): ARC grids are drawn
in the standard ARC palette, Sudoku boards show clues and filled digits in different styles, mazes
overlay the predicted path on the true one; anything else becomes a generic grid of token ids.

Rendering goes through one kind-independent description (`Sheet` -> `Example` -> `Panel`: a grid of
cell colours, optional texts, error flags and a right/wrong verdict), so the HTML and PNG writers
know nothing about puzzles and every kind gets both formats.
"""
from __future__ import annotations

import html
import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PatchCollection
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from dataset.common import IGNORE_LABEL_ID, PuzzleDatasetMetadata, array_path, load_metadata

# ---------------------------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------------------------
KIND_ARC, KIND_SUDOKU, KIND_MAZE, KIND_GENERIC = "arc", "sudoku", "maze", "generic"
# (vocab_size, seq_len) of each builder's output (SPEC section 2).
KIND_SIGNATURES = {(12, 900): KIND_ARC, (11, 81): KIND_SUDOKU, (6, 900): KIND_MAZE}

# The standard ARC colours 0..9 (as in the ARC task viewer).
ARC_PALETTE = ("#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00",
               "#AAAAAA", "#F012BE", "#FF851B", "#7FDBFF", "#870C25")
ARC_GRID_SIDE = 30
ARC_FIRST_COLOUR_TOKEN = 2  # PAD 0, EOS 1, colour c -> c + 2

SUDOKU_SIDE, SUDOKU_BLOCK = 9, 3
SUDOKU_CLUE_BG, SUDOKU_EMPTY_BG, SUDOKU_WRONG_BG = "#E8E8E8", "#FFFFFF", "#FFC9C9"

MAZE_SIDE = 30
MAZE_WALL, MAZE_OPEN, MAZE_START, MAZE_GOAL, MAZE_PATH = 1, 2, 3, 4, 5  # token = 1 + index in "# SGo"
MAZE_COLOURS = {
    "wall": "#2B2B2B", "open": "#FFFFFF", "start": "#2ECC40", "goal": "#FF4136",
    "path": "#0074D9",  # on the true path and predicted (or the true path alone)
    "missed": "#FFDC00",  # on the true path, not predicted
    "extra": "#F012BE",  # predicted, not on the true path
}

# Categorical colours for token ids of unknown datasets (light, so the ids stay readable).
GENERIC_PALETTE = ("#FFFFFF", "#DDDDDD", "#AEC7E8", "#FFBB78", "#98DF8A", "#FF9896", "#C5B0D5",
                   "#C49C94", "#F7B6D2", "#DBDB8D", "#9EDAE5", "#FFE08A")

STYLE_CLUE, STYLE_FILL, STYLE_WRONG = "clue", "fill", "wrong"
VERDICT_MARK = {True: "\u2713 right", False: "\u2717 wrong"}
VERDICT_COLOUR = {True: "#2E7D32", False: "#C62828"}
ERROR_OUTLINE = "#E00000"
PNG_DPI = 100
PANEL_INCHES = 2.4  # side of one grid panel in the PNG
PNG_FORMATS = (".png",)
HTML_FORMATS = (".html", ".htm")
OUTPUTS_HINT = "save them with eval_save_outputs=[inputs,labels,puzzle_identifiers,preds]"


# ---------------------------------------------------------------------------------------------
# The kind-independent description that both writers render
# ---------------------------------------------------------------------------------------------
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
    kind: str
    examples: list[Example]
    legend: list[tuple[str, str]] = field(default_factory=list)  # (colour, meaning)
    note: str = ""


# ---------------------------------------------------------------------------------------------
# Dataset reading
# ---------------------------------------------------------------------------------------------
def detect_kind(metadata: PuzzleDatasetMetadata) -> str:
    """ARC, Sudoku or Maze from (vocab_size, seq_len); anything else (e.g. the copy task) is generic."""
    return KIND_SIGNATURES.get((metadata.vocab_size, metadata.seq_len), KIND_GENERIC)


@dataclass
class SplitData:
    """One split of a built dataset, all sets concatenated in `metadata.sets` order (the test loader's order)."""

    dataset_dir: str
    split: str
    metadata: PuzzleDatasetMetadata
    kind: str
    inputs: np.ndarray
    labels: np.ndarray
    identifiers: np.ndarray  # (N,) puzzle identifier of every example
    names: Optional[list[str]]  # identifiers.json (None when absent)


def _example_identifiers(dataset_dir: str, split: str, set_name: str) -> np.ndarray:
    """Per-example identifiers: each puzzle's identifier repeated over its examples."""
    identifiers = np.load(array_path(dataset_dir, split, set_name, "puzzle_identifiers"))
    offsets = np.load(array_path(dataset_dir, split, set_name, "puzzle_indices"))
    return np.repeat(identifiers, np.diff(offsets))


def _load_set_array(dataset_dir: str, split: str, set_name: str, field_name: str) -> np.ndarray:
    path = array_path(dataset_dir, split, set_name, field_name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r} is missing: {dataset_dir!r} is an incomplete dataset; rebuild it.")
    # Memory-mapped: an ARC split holds hundreds of thousands of rows and we show a handful.
    return np.load(path, mmap_mode="r")


def _load_names(dataset_dir: str) -> Optional[list[str]]:
    path = os.path.join(dataset_dir, "identifiers.json")
    if not os.path.isfile(path):
        return None
    with open(path, "r") as f:
        return json.load(f)


def load_split(dataset_dir: str, split: str = "test") -> SplitData:
    """Read one split (errors name the missing directory or file and how to build it)."""
    metadata = load_metadata(dataset_dir, split)
    inputs, labels, identifiers = [], [], []
    for set_name in metadata.sets:
        inputs.append(_load_set_array(dataset_dir, split, set_name, "inputs"))
        labels.append(_load_set_array(dataset_dir, split, set_name, "labels"))
        identifiers.append(_example_identifiers(dataset_dir, split, set_name))
    if len(metadata.sets) == 1:  # keep the memory map
        inputs, labels, identifiers = inputs[0], labels[0], identifiers[0]
    else:
        inputs, labels, identifiers = (np.concatenate(a) for a in (inputs, labels, identifiers))
    return SplitData(dataset_dir, split, metadata, detect_kind(metadata), inputs, labels, identifiers,
                     _load_names(dataset_dir))


# ---------------------------------------------------------------------------------------------
# Saved outputs (trainer.evaluate / evaluate.py): reading and matching to the dataset
# ---------------------------------------------------------------------------------------------
_OUTPUTS_FILE = re.compile(r"^step_(\d+)_all_preds\.(\d+)$")


def find_outputs_file(path: str) -> str:
    """A saved-outputs file, or the rank-0 file of the latest step in a run directory."""
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        raise FileNotFoundError(f"Outputs {path!r} not found; pass a step_N_all_preds.R file or the run directory.")
    found = [(int(m.group(1)), name) for name in os.listdir(path)
             if (m := _OUTPUTS_FILE.match(name)) and m.group(2) == "0"]
    if not found:
        raise FileNotFoundError(f"No step_N_all_preds.0 file in {path!r}; evaluate with eval_save_outputs set "
                                f"({OUTPUTS_HINT}).")
    return os.path.join(path, max(found)[1])


def _to_numpy(value: Any) -> Any:
    """Tensors -> numpy (on the CPU); anything else unchanged."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy()
    return value


def load_outputs(path: str) -> dict[str, np.ndarray]:
    """Read a torch.save'd dict of tensors (rank file of `evaluate`) as numpy arrays."""
    import torch  # here, not at the top: only reading a saved file needs torch (slow to import)

    file_path = find_outputs_file(path)
    try:
        raw = torch.load(file_path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise ValueError(f"Cannot read saved outputs {file_path!r}: {err}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"Saved outputs {file_path!r} hold a {type(raw).__name__}, expected a dict of tensors.")
    return {key: _to_numpy(value) for key, value in raw.items()}


def _check_outputs(outputs: dict, data: SplitData) -> dict[str, np.ndarray]:
    """Reject outputs that cannot belong to this dataset (missing preds, other shape, other vocabulary)."""
    outputs = {k: _to_numpy(v) for k, v in outputs.items()}
    if "preds" not in outputs:
        raise ValueError(f"The outputs hold no 'preds' (keys: {sorted(outputs)}); {OUTPUTS_HINT}.")
    preds = np.asarray(outputs["preds"])
    seq_len, vocab = data.metadata.seq_len, data.metadata.vocab_size
    where = f"the {data.split} split of {data.dataset_dir!r} (seq_len {seq_len}, vocab {vocab})"
    if preds.ndim != 2 or preds.shape[1] != seq_len:
        raise ValueError(f"The outputs do not match {where}: preds have shape {preds.shape}, expected (N, {seq_len}).")
    checked = {"preds": preds}
    for key in ("inputs", "labels", "puzzle_identifiers"):
        if key in outputs:
            value = np.asarray(outputs[key])
            if value.shape[0] != preds.shape[0]:
                raise ValueError(f"The outputs are inconsistent: {key} has {value.shape[0]} rows, preds {preds.shape[0]}.")
            checked[key] = value
    if "inputs" in checked and (checked["inputs"].shape[1:] != (seq_len,) or checked["inputs"].max(initial=0) >= vocab):
        raise ValueError(f"The outputs do not match {where}: their inputs have shape {checked['inputs'].shape} "
                         f"and tokens up to {checked['inputs'].max(initial=0)}.")
    return checked


def _restore_ignored(labels: np.ndarray, metadata: PuzzleDatasetMetadata) -> np.ndarray:
    """The loader turns ignored labels into -100; put the on-disk token back so they draw as padding."""
    fill = metadata.ignore_label_id if metadata.ignore_label_id is not None else metadata.pad_id
    return np.where(labels == IGNORE_LABEL_ID, fill, labels)


class _RowLookup:
    """Finds the dataset example whose inputs equal a given row (built once, only when needed)."""

    def __init__(self, inputs: np.ndarray):
        self._inputs = inputs
        self._index: Optional[dict[bytes, int]] = None

    def find(self, row: np.ndarray, guess: int) -> int:
        """Index of `row` in the dataset, trying `guess` (same position) first; -1 if absent."""
        row = row.astype(self._inputs.dtype)
        if guess < self._inputs.shape[0] and np.array_equal(self._inputs[guess], row):
            return guess
        if self._index is None:
            # First row found only elsewhere (e.g. outputs of another rank): index every row once.
            self._index = {}
            for i in range(self._inputs.shape[0] - 1, -1, -1):  # reversed: the first occurrence wins
                self._index[np.ascontiguousarray(self._inputs[i]).tobytes()] = i
        return self._index.get(np.ascontiguousarray(row).tobytes(), -1)


@dataclass
class Row:
    """One example to draw: tokens of input, label and (optionally) prediction."""

    index: int  # row in the dataset split
    identifier: int
    inputs: np.ndarray
    labels: np.ndarray
    preds: Optional[np.ndarray] = None


def _is_original(identifier: int, names: Optional[list[str]]) -> bool:
    """ARC names of augmented puzzles contain "|||" (`id|||t{trans}|||{map}`)."""
    return names is None or not (0 <= identifier < len(names)) or "|||" not in names[identifier]


def _candidate_order(identifiers: Optional[np.ndarray], usable: np.ndarray, data: SplitData) -> np.ndarray:
    """Rows to show, in order; for ARC the un-augmented puzzles first (they are the tasks as published)."""
    rows = np.flatnonzero(usable)
    if data.kind != KIND_ARC or identifiers is None or data.names is None:
        return rows
    original = np.array([_is_original(int(identifiers[r]), data.names) for r in rows], dtype=bool)
    return np.concatenate([rows[original], rows[~original]])


def rows_from_dataset(data: SplitData, num: int) -> list[Row]:
    """The first `num` examples of the split (no predictions)."""
    order = _candidate_order(data.identifiers, np.ones(data.inputs.shape[0], dtype=bool), data)[:num]
    return [Row(int(i), int(data.identifiers[i]), np.asarray(data.inputs[i]), np.asarray(data.labels[i])) for i in order]


def _rows_by_inputs(data: SplitData, outputs: dict[str, np.ndarray], num: int) -> list[Row]:
    """Outputs that carry their inputs: padding rows skipped, every shown row located in the dataset."""
    inputs = outputs["inputs"]
    usable = ~(inputs == data.metadata.pad_id).all(axis=1)  # batch padding rows are all PAD
    order = _candidate_order(outputs.get("puzzle_identifiers"), usable, data)[:num]
    lookup, rows = _RowLookup(data.inputs), []
    for r in order:
        index = lookup.find(inputs[r], int(r))
        if index < 0:
            raise ValueError(f"The outputs do not match the dataset: output row {r} (its inputs) is not an example "
                             f"of the {data.split} split of {data.dataset_dir!r}. Pass the dataset they were made on.")
        labels = _restore_ignored(outputs["labels"][r], data.metadata) if "labels" in outputs else data.labels[index]
        identifier = outputs["puzzle_identifiers"][r] if "puzzle_identifiers" in outputs else data.identifiers[index]
        rows.append(Row(index, int(identifier), np.asarray(inputs[r]), np.asarray(labels), outputs["preds"][r]))
    return rows


def _rows_by_order(data: SplitData, outputs: dict[str, np.ndarray], num: int) -> list[Row]:
    """Outputs without inputs: row i is example i of the split (a single-process test pass, in order)."""
    preds, total = outputs["preds"], data.inputs.shape[0]
    # A single set is followed by at most one padded batch; with several sets padding sits between them.
    if preds.shape[0] < total or (len(data.metadata.sets) > 1 and preds.shape[0] != total):
        raise ValueError(f"The outputs hold {preds.shape[0]} rows but the {data.split} split of {data.dataset_dir!r} "
                         f"has {total} examples in {len(data.metadata.sets)} set(s), so rows cannot be matched by "
                         f"order; {OUTPUTS_HINT} (with inputs, rows are matched by content).")
    order = _candidate_order(data.identifiers, np.ones(total, dtype=bool), data)[:num]
    saved_labels = outputs.get("labels")
    for i in order if saved_labels is not None else ():  # the shown rows suffice to catch another dataset
        if not np.array_equal(_restore_ignored(saved_labels[i], data.metadata), data.labels[i]):
            raise ValueError(f"The outputs do not match the dataset: the labels of row {i} differ from "
                             f"example {i} of the {data.split} split of {data.dataset_dir!r}.")
    return [Row(int(i), int(data.identifiers[i]), np.asarray(data.inputs[i]), np.asarray(data.labels[i]),
                preds[i]) for i in order]


def select_rows(data: SplitData, outputs: Optional[dict], num: int) -> list[Row]:
    """Up to `num` examples with their predictions when outputs are given."""
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}.")
    if outputs is None:
        return rows_from_dataset(data, num)
    checked = _check_outputs(outputs, data)
    return _rows_by_inputs(data, checked, num) if "inputs" in checked else _rows_by_order(data, checked, num)


# ---------------------------------------------------------------------------------------------
# Small helpers shared by the kinds
# ---------------------------------------------------------------------------------------------
def _object_grid(shape: tuple[int, int], value: str) -> np.ndarray:
    grid = np.empty(shape, dtype=object)
    grid.fill(value)
    return grid


def _exact_match(preds: np.ndarray, labels: np.ndarray, metadata: PuzzleDatasetMetadata) -> bool:
    """The training metric's exact accuracy: every label position that is not ignored is predicted."""
    scored = labels != IGNORE_LABEL_ID
    if metadata.ignore_label_id is not None:
        scored &= labels != metadata.ignore_label_id
    return bool((preds[scored] == labels[scored]).all())


def _row_name(row: Row, data: SplitData) -> str:
    name = f"{data.split} #{row.index}"
    if data.names is not None and 0 < row.identifier < len(data.names):
        name += f" \u00b7 {data.names[row.identifier]}"
    return name


# ---------------------------------------------------------------------------------------------
# ARC
# ---------------------------------------------------------------------------------------------
def _is_colour(tokens: np.ndarray) -> np.ndarray:
    return (tokens >= ARC_FIRST_COLOUR_TOKEN) & (tokens < ARC_FIRST_COLOUR_TOKEN + len(ARC_PALETTE))


def arc_grid(tokens: np.ndarray) -> np.ndarray:
    """Colours 0..9 of an input or label canvas: the bounding box of its colour tokens.

    A bounding box (not the top-left corner) because train-split grids are translated in the canvas.
    """
    canvas = np.asarray(tokens).reshape(ARC_GRID_SIDE, ARC_GRID_SIDE)
    rows, cols = np.nonzero(_is_colour(canvas))
    if rows.size == 0:
        return np.zeros((0, 0), dtype=np.int64)
    box = canvas[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    return box.astype(np.int64) - ARC_FIRST_COLOUR_TOKEN


def arc_prediction_grid(tokens: np.ndarray, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """The ARC evaluator's crop (SPEC section 6) from `origin`: the largest rectangle of colour tokens.

    Rows are scanned downwards; the column limit shrinks at the first non-colour token of each row.
    """
    canvas = np.asarray(tokens).reshape(ARC_GRID_SIDE, ARC_GRID_SIDE)[origin[0]:, origin[1]:]
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
    return canvas[:best_rows, :best_cols].astype(np.int64) - ARC_FIRST_COLOUR_TOKEN


def _label_origin(tokens: np.ndarray) -> tuple[int, int]:
    """Top-left corner of the label grid in its canvas (0, 0 on the test split)."""
    canvas = np.asarray(tokens).reshape(ARC_GRID_SIDE, ARC_GRID_SIDE)
    rows, cols = np.nonzero(_is_colour(canvas))
    return (int(rows.min()), int(cols.min())) if rows.size else (0, 0)


def arc_panel(title: str, grid: np.ndarray, expected: Optional[np.ndarray] = None) -> Panel:
    """An ARC grid; with `expected`, judged right/wrong and differing cells outlined (when shapes match)."""
    palette = np.array(ARC_PALETTE, dtype=object)
    panel = Panel(title, palette[np.asarray(grid, dtype=np.int64)].reshape(grid.shape))
    if expected is not None:
        panel.verdict = grid.shape == expected.shape and bool((grid == expected).all())
        if grid.shape == expected.shape:
            panel.errors = grid != expected
    return panel


def arc_example(row: Row, data: SplitData) -> Example:
    """Input, expected output and (with outputs) the prediction the evaluator would score."""
    expected = arc_grid(row.labels)
    panels = [arc_panel("input", arc_grid(row.inputs)), arc_panel("expected", expected)]
    if row.preds is not None:
        panels.append(arc_panel("prediction", arc_prediction_grid(row.preds, _label_origin(row.labels)), expected))
    return Example(_row_name(row, data), panels, panels[-1].verdict)


ARC_LEGEND = [(colour, str(i)) for i, colour in enumerate(ARC_PALETTE)]


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
    if grid is None or grid.ndim != 2 or grid.size and (grid.min() < 0 or grid.max() >= len(ARC_PALETTE)):
        raise ValueError(f"{where} is not a grid of colours 0..9 (a list of equally long rows).")
    return grid


def arc_submission_examples(dataset_dir: str, submission_path: str, num: int) -> list[Example]:
    """Input, expected, attempt 1 and attempt 2 of each test pair of the tasks in an ARC submission.json."""
    puzzles = _read_json_file(os.path.join(dataset_dir, "test_puzzles.json"), "ARC test puzzles (written by the builder)")
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


# ---------------------------------------------------------------------------------------------
# Sudoku
# ---------------------------------------------------------------------------------------------
def _sudoku_digits(tokens: np.ndarray) -> np.ndarray:
    """Tokens -> 9x9 digits, 0 = blank (token = digit + 1; PAD and -100 also read as blank)."""
    return np.clip(np.asarray(tokens, dtype=np.int64) - 1, 0, 9).reshape(SUDOKU_SIDE, SUDOKU_SIDE)


def sudoku_panel(title: str, clues: np.ndarray, digits: np.ndarray, solution: Optional[np.ndarray] = None) -> Panel:
    """A board: clue cells shaded with bold digits, filled digits in blue, wrong digits red on pink.

    `digits` is the full board to show; with `solution`, every cell that differs is wrong (also a
    changed clue: the exact-accuracy metric scores every cell).
    """
    is_clue = clues != 0
    texts = np.where(digits > 0, digits.astype(str), "").astype(object)
    styles = np.where(is_clue, STYLE_CLUE, np.where(digits > 0, STYLE_FILL, "")).astype(object)
    colours = np.where(is_clue, SUDOKU_CLUE_BG, SUDOKU_EMPTY_BG).astype(object)
    panel = Panel(title, colours, texts, styles, block=SUDOKU_BLOCK)
    if solution is not None:
        wrong = digits != solution
        texts[wrong & (digits == 0)] = "?"  # a blank prediction is a missing digit: show it
        styles[wrong] = STYLE_WRONG
        colours[wrong] = SUDOKU_WRONG_BG
        panel.errors, panel.verdict = wrong, not wrong.any()
    return panel


def sudoku_example(row: Row, data: SplitData) -> Example:
    clues, solution = _sudoku_digits(row.inputs), _sudoku_digits(row.labels)
    panels = [sudoku_panel("puzzle", clues, clues), sudoku_panel("solution", clues, solution)]
    verdict = None
    if row.preds is not None:
        panels.append(sudoku_panel("prediction", clues, _sudoku_digits(row.preds), solution))
        verdict = _exact_match(row.preds, row.labels, data.metadata)
        panels[-1].verdict = verdict
    return Example(_row_name(row, data), panels, verdict)


SUDOKU_LEGEND = [(SUDOKU_CLUE_BG, "clue"), (SUDOKU_EMPTY_BG, "filled digit (blue)"),
                 (SUDOKU_WRONG_BG, "wrong digit (red)")]


# ---------------------------------------------------------------------------------------------
# Maze
# ---------------------------------------------------------------------------------------------
def _maze_tokens(tokens: np.ndarray) -> np.ndarray:
    return np.asarray(tokens, dtype=np.int64).reshape(MAZE_SIDE, MAZE_SIDE)


def _maze_base_colours(maze: np.ndarray) -> np.ndarray:
    """Walls dark, everything else open, S and G marked (paths are painted on top)."""
    colours = _object_grid(maze.shape, MAZE_COLOURS["open"])
    colours[maze == MAZE_WALL] = MAZE_COLOURS["wall"]
    colours[maze == MAZE_START] = MAZE_COLOURS["start"]
    colours[maze == MAZE_GOAL] = MAZE_COLOURS["goal"]
    return colours


def maze_panel(title: str, maze: np.ndarray, truth: Optional[np.ndarray] = None,
               predicted: Optional[np.ndarray] = None) -> Panel:
    """The maze with the true path; with a prediction, path cells coloured by both / missed / extra."""
    colours = _maze_base_colours(maze)
    panel = Panel(title, colours, grid_lines=False)
    if truth is None:
        return panel
    on_true = truth == MAZE_PATH
    if predicted is None:
        colours[on_true] = MAZE_COLOURS["path"]
        return panel
    on_pred = predicted == MAZE_PATH
    colours[on_true & on_pred] = MAZE_COLOURS["path"]
    colours[on_true & ~on_pred] = MAZE_COLOURS["missed"]
    colours[~on_true & on_pred] = MAZE_COLOURS["extra"]
    # Other differences (a wall or S/G overwritten) have no colour of their own: outline them.
    panel.errors = (predicted != truth) & ~(on_true ^ on_pred)
    panel.verdict = bool((predicted == truth).all())
    return panel


def maze_example(row: Row, data: SplitData) -> Example:
    maze, truth = _maze_tokens(row.inputs), _maze_tokens(row.labels)
    panels = [maze_panel("maze", maze), maze_panel("true path", maze, truth)]
    verdict = None
    if row.preds is not None:
        panels.append(maze_panel("predicted vs true path", maze, truth, _maze_tokens(row.preds)))
        verdict = _exact_match(row.preds, row.labels, data.metadata)
        panels[-1].verdict = verdict
    return Example(_row_name(row, data), panels, verdict)


MAZE_LEGEND = [(MAZE_COLOURS["wall"], "wall"), (MAZE_COLOURS["start"], "S start"), (MAZE_COLOURS["goal"], "G goal"),
               (MAZE_COLOURS["path"], "path (true and predicted)"), (MAZE_COLOURS["missed"], "true path, missed"),
               (MAZE_COLOURS["extra"], "predicted, not on the true path")]


# ---------------------------------------------------------------------------------------------
# Generic token grids (copy task, unknown datasets)
# ---------------------------------------------------------------------------------------------
def generic_shape(seq_len: int) -> tuple[int, int]:
    """A square when seq_len is a perfect square, else rows of at most 30 tokens."""
    side = math.isqrt(seq_len)
    if side * side == seq_len:
        return side, side
    width = min(seq_len, 30)
    return -(-seq_len // width), width


def generic_panel(title: str, tokens: np.ndarray, expected: Optional[np.ndarray] = None) -> Panel:
    tokens = np.asarray(tokens, dtype=np.int64)
    rows, cols = generic_shape(tokens.size)
    padded = np.full(rows * cols, -1, dtype=np.int64)  # -1: cells past the sequence end
    padded[:tokens.size] = tokens
    grid = padded.reshape(rows, cols)
    colours = np.array([GENERIC_PALETTE[t % len(GENERIC_PALETTE)] if t >= 0 else "#FFFFFF" for t in padded],
                       dtype=object).reshape(rows, cols)
    texts = np.array([str(t) if t >= 0 else "" for t in padded], dtype=object).reshape(rows, cols)
    panel = Panel(title, colours, texts)
    if expected is not None:
        wanted = np.full(rows * cols, -1, dtype=np.int64)
        wanted[:expected.size] = expected
        panel.errors = grid != wanted.reshape(rows, cols)
        panel.styles = np.where(panel.errors, STYLE_WRONG, "").astype(object)
    return panel


def generic_example(row: Row, data: SplitData) -> Example:
    labels = np.asarray(row.labels, dtype=np.int64)
    panels = [generic_panel("input", row.inputs), generic_panel("label", labels)]
    verdict = None
    if row.preds is not None:
        verdict = _exact_match(row.preds, row.labels, data.metadata)
        panels.append(generic_panel("prediction", row.preds, labels))
        panels[-1].verdict = verdict
    return Example(_row_name(row, data), panels, verdict)


# ---------------------------------------------------------------------------------------------
# Building a sheet
# ---------------------------------------------------------------------------------------------
EXAMPLE_BUILDERS = {KIND_ARC: arc_example, KIND_SUDOKU: sudoku_example, KIND_MAZE: maze_example,
                    KIND_GENERIC: generic_example}
LEGENDS = {KIND_ARC: ARC_LEGEND, KIND_SUDOKU: SUDOKU_LEGEND, KIND_MAZE: MAZE_LEGEND, KIND_GENERIC: []}


def _summary(examples: list[Example]) -> str:
    judged = [e.verdict for e in examples if e.verdict is not None]
    return f"{sum(judged)}/{len(judged)} shown examples right" if judged else "no predictions: puzzles and labels only"


def build_sheet(dataset_dir: str, outputs: Union[dict, str, None] = None, num: int = 8, split: str = "test",
                submission: Optional[str] = None) -> Sheet:
    """Describe `num` examples of a split, with predictions from `outputs` (a dict or a saved file/run dir)
    or, for ARC, the attempts of an evaluator `submission.json`."""
    data = load_split(dataset_dir, split)
    if submission is not None:
        if data.kind != KIND_ARC:
            raise ValueError(f"--submission is for ARC datasets; {dataset_dir!r} is a {data.kind} dataset.")
        examples = arc_submission_examples(dataset_dir, submission, num)
        return Sheet(f"ARC submission {os.path.basename(submission)}", data.kind, examples, ARC_LEGEND,
                     f"{_summary(examples)} (right = either attempt equals the expected output)")
    if isinstance(outputs, str):
        outputs = load_outputs(outputs)
    examples = [EXAMPLE_BUILDERS[data.kind](row, data) for row in select_rows(data, outputs, num)]
    note = _summary(examples)
    if data.kind == KIND_GENERIC:
        note += (f"; dataset kind not recognised (vocab {data.metadata.vocab_size}, seq_len "
                 f"{data.metadata.seq_len}): showing raw token ids")
    return Sheet(f"{data.kind} \u00b7 {dataset_dir} \u00b7 {split}", data.kind, examples, LEGENDS[data.kind], note)


# ---------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------
HTML_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:16px;color:#222}
h1{font-size:18px} h2{font-size:14px;margin:6px 0}
.note{color:#555} .legend span{display:inline-block;margin-right:12px;font-size:12px}
.swatch{display:inline-block;width:12px;height:12px;border:1px solid #888;vertical-align:middle;margin-right:4px}
.example{border:2px solid #ccc;border-radius:6px;padding:8px;margin:10px 0}
.example.right{border-color:#2E7D32} .example.wrong{border-color:#C62828}
.badge{font-weight:bold;margin-left:8px} .right>h2 .badge,.panel.right .badge{color:#2E7D32}
.wrong>h2 .badge,.panel.wrong .badge{color:#C62828}
.panels{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
.panel{margin:0} .panel figcaption{font-size:12px;margin-bottom:3px}
table.grid{border-collapse:collapse} table.grid td{padding:0;text-align:center;vertical-align:middle}
table.lines td{border:1px solid #555}
table.arc td{width:14px;height:14px} table.maze td{width:7px;height:7px}
table.sudoku td{width:24px;height:24px;font-size:15px;border:1px solid #999}
table.sudoku td.br{border-right:2px solid #222} table.sudoku td.bb{border-bottom:2px solid #222}
table.sudoku{border:2px solid #222} table.generic td{min-width:18px;height:18px;font-size:11px}
td.clue{font-weight:bold;color:#000} td.fill{color:#0074D9} td.wrong{color:#C62828;font-weight:bold}
td.err{outline:2px solid #E00000;outline-offset:-2px}
.empty{font-size:12px;color:#888;font-style:italic}
"""


class _ColourClasses:
    """One short CSS class per distinct colour: a 30x30 grid would otherwise repeat an inline style 900 times."""

    def __init__(self):
        self.classes: dict[str, str] = {}

    def of(self, colour: str) -> str:
        return self.classes.setdefault(colour, f"k{len(self.classes)}")

    def css(self) -> str:
        return "".join(f".{name}{{background:{colour}}}" for colour, name in self.classes.items())


def _cell_html(panel: Panel, r: int, c: int, classes: _ColourClasses) -> str:
    names = [classes.of(panel.colours[r, c])]
    if panel.styles is not None and panel.styles[r, c]:
        names.append(panel.styles[r, c])
    if panel.errors is not None and panel.errors[r, c]:
        names.append("err")
    if panel.block and (c + 1) % panel.block == 0 and c + 1 < panel.colours.shape[1]:
        names.append("br")
    if panel.block and (r + 1) % panel.block == 0 and r + 1 < panel.colours.shape[0]:
        names.append("bb")
    text = html.escape(panel.texts[r, c]) if panel.texts is not None else ""
    return f'<td class="{" ".join(names)}">{text}</td>'


def _panel_html(panel: Panel, kind: str, classes: _ColourClasses) -> str:
    state = "" if panel.verdict is None else (" right" if panel.verdict else " wrong")
    badge = "" if panel.verdict is None else f'<span class="badge">{VERDICT_MARK[panel.verdict]}</span>'
    caption = f"<figcaption>{html.escape(panel.title)}{badge}</figcaption>"
    height, width = panel.colours.shape
    if height == 0 or width == 0:
        return f'<figure class="panel{state}">{caption}<div class="empty">empty grid</div></figure>'
    lines = " lines" if panel.grid_lines else ""
    body = "".join("<tr>" + "".join(_cell_html(panel, r, c, classes) for c in range(width)) + "</tr>"
                   for r in range(height))
    return f'<figure class="panel{state}">{caption}<table class="grid {kind}{lines}">{body}</table></figure>'


def _example_html(example: Example, kind: str, classes: _ColourClasses) -> str:
    state = "" if example.verdict is None else (" right" if example.verdict else " wrong")
    badge = "" if example.verdict is None else f'<span class="badge">{VERDICT_MARK[example.verdict]}</span>'
    panels = "".join(_panel_html(p, kind, classes) for p in example.panels)
    return (f'<section class="example{state}"><h2>{html.escape(example.name)}{badge}</h2>'
            f'<div class="panels">{panels}</div></section>')


def sheet_html(sheet: Sheet) -> str:
    """A complete HTML document: CSS inline, no scripts, fonts or images from elsewhere."""
    classes = _ColourClasses()
    examples = "\n".join(_example_html(e, sheet.kind, classes) for e in sheet.examples)
    legend = "".join(f'<span><i class="swatch" style="background:{c}"></i>{html.escape(t)}</span>'
                     for c, t in sheet.legend)
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(sheet.title)}</title><style>{HTML_CSS}{classes.css()}</style></head>\n<body>"
            f"<h1>{html.escape(sheet.title)}</h1><p class=\"note\">{html.escape(sheet.note)}</p>"
            f"<div class=\"legend\">{legend}</div>\n{examples}\n</body></html>\n")


# ---------------------------------------------------------------------------------------------
# PNG (matplotlib, Agg canvas: no display needed)
# ---------------------------------------------------------------------------------------------
def _hex_to_rgb(colours: np.ndarray) -> np.ndarray:
    """(H, W) "#RRGGBB" -> (H, W, 3) floats in [0, 1]."""
    flat = [(int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16)) for c in colours.ravel()]
    return np.array(flat, dtype=np.float64).reshape(colours.shape + (3,)) / 255.0


def _draw_lines(ax, panel: Panel) -> None:
    height, width = panel.colours.shape
    ax.add_patch(Rectangle((-0.5, -0.5), width, height, facecolor="none", edgecolor="#222222", linewidth=1.0))
    if panel.grid_lines:
        ax.hlines(np.arange(height + 1) - 0.5, -0.5, width - 0.5, colors="#555555", linewidth=0.5)
        ax.vlines(np.arange(width + 1) - 0.5, -0.5, height - 0.5, colors="#555555", linewidth=0.5)
    if panel.block:
        ax.hlines(np.arange(0, height + 1, panel.block) - 0.5, -0.5, width - 0.5, colors="#222222", linewidth=2)
        ax.vlines(np.arange(0, width + 1, panel.block) - 0.5, -0.5, height - 0.5, colors="#222222", linewidth=2)


def _draw_texts(ax, panel: Panel) -> None:
    if panel.texts is None:
        return
    height, width = panel.colours.shape
    size = max(4.0, min(12.0, 110.0 / max(height, width)))
    style_colour = {STYLE_CLUE: "#000000", STYLE_FILL: "#0074D9", STYLE_WRONG: "#C62828"}
    for (r, c), text in np.ndenumerate(panel.texts):
        if text:
            style = panel.styles[r, c] if panel.styles is not None else ""
            ax.text(c, r, text, ha="center", va="center", fontsize=size, color=style_colour.get(style, "#222222"),
                    fontweight="bold" if style in (STYLE_CLUE, STYLE_WRONG) else "normal")


def _draw_errors(ax, panel: Panel) -> None:
    if panel.errors is None or not panel.errors.any():
        return
    boxes = [Rectangle((c - 0.5, r - 0.5), 1, 1) for r, c in zip(*np.nonzero(panel.errors))]
    ax.add_collection(PatchCollection(boxes, facecolor="none", edgecolor=ERROR_OUTLINE, linewidth=2.0))


def _centre_in(ax, shape: tuple[int, int], extent: tuple[int, int]) -> None:
    """Show the grid centred in an `extent`-sized window, so every panel of an example has the same cell
    size (an ARC output may be much smaller than its input: the picture should say so)."""
    pad_rows, pad_cols = (extent[0] - shape[0]) / 2, (extent[1] - shape[1]) / 2
    ax.set_xlim(-0.5 - pad_cols, shape[1] - 0.5 + pad_cols)
    ax.set_ylim(shape[0] - 0.5 + pad_rows, -0.5 - pad_rows)  # row 0 at the top, as imshow draws it


def draw_panel(ax, panel: Panel, extent: Optional[tuple[int, int]] = None) -> None:
    """One grid on one axes: cells as an image (nearest: exact colours), then lines, texts, error outlines."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)  # the grid draws its own border (the axes box may be larger)
    title = panel.title + ("" if panel.verdict is None else f"  {VERDICT_MARK[panel.verdict]}")
    ax.set_title(title, fontsize=9, color=VERDICT_COLOUR.get(panel.verdict, "#222222"))
    if 0 in panel.colours.shape:
        ax.text(0.5, 0.5, "empty grid", ha="center", va="center", transform=ax.transAxes, fontsize=8, color="#888888")
        return
    ax.imshow(_hex_to_rgb(panel.colours), interpolation="nearest")
    _draw_lines(ax, panel)
    _draw_texts(ax, panel)
    _draw_errors(ax, panel)
    _centre_in(ax, panel.colours.shape, extent or panel.colours.shape)


def _extent(example: Example) -> tuple[int, int]:
    """The largest panel of an example, in cells."""
    return (max(p.colours.shape[0] for p in example.panels), max(p.colours.shape[1] for p in example.panels))


def sheet_figure(sheet: Sheet):
    """A matplotlib Figure: one row per example, one column per panel; size = (cols, rows) x PANEL_INCHES."""
    rows = max(1, len(sheet.examples))
    cols = max([len(e.panels) for e in sheet.examples] + [1])
    header = 0.9  # inches for the title, note and legend
    fig = Figure(figsize=(cols * PANEL_INCHES, rows * PANEL_INCHES + header), dpi=PNG_DPI)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.04, right=0.99, bottom=0.02, top=1 - header / fig.get_figheight(),
                        wspace=0.15, hspace=0.35)
    fig.suptitle(f"{sheet.title}\n{sheet.note}", fontsize=10, y=0.995, va="top")
    if sheet.legend:
        handles = [Patch(facecolor=c, edgecolor="#888888", label=t) for c, t in sheet.legend]
        fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 1 - 0.45 / fig.get_figheight()),
                   ncol=min(len(handles), 10), fontsize=7, frameon=False, handlelength=1.0)
    axes = fig.subplots(rows, cols, squeeze=False)
    for r, example in enumerate(sheet.examples):
        for c, panel in enumerate(example.panels):
            draw_panel(axes[r, c], panel, _extent(example))
        axes[r, 0].set_ylabel(example.name[:40], fontsize=8,
                              color=VERDICT_COLOUR.get(example.verdict, "#222222"))
    for ax in axes.ravel():
        if not ax.has_data() and not ax.texts and not ax.get_title():
            ax.set_axis_off()  # cells beyond an example's panels
    return fig


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
def write_sheet(sheet: Sheet, out_path: str) -> str:
    """Write the sheet as HTML or PNG, by the extension of `out_path`; returns the path."""
    extension = os.path.splitext(out_path)[1].lower()
    if extension not in HTML_FORMATS + PNG_FORMATS:
        raise ValueError(f"Cannot write {out_path!r}: use a .html or .png file name.")
    directory = os.path.dirname(out_path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    if extension in HTML_FORMATS:
        with open(out_path, "w", encoding="utf-8") as f:
            f.write(sheet_html(sheet))
    else:
        sheet_figure(sheet).savefig(out_path, dpi=PNG_DPI)
    return out_path


def render_predictions(dataset_dir: str, outputs: Union[dict, str, None], out_path: str, num: int = 8,
                       split: str = "test") -> str:
    """Draw `num` examples of `split` with the model's predictions (outputs dict, saved file or run dir; None
    draws puzzles and labels only) to `out_path` (.html or .png). Returns `out_path`."""
    return write_sheet(build_sheet(dataset_dir, outputs, num=num, split=split), out_path)
