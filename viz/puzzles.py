"""Pictures of puzzles, labels and model predictions: a self-contained HTML page or a PNG.

    python visualize.py puzzles --data data/sudoku-demo --outputs RUN_DIR/step_N_all_preds.0 --out pictures.html
    python visualize.py puzzles --data data/arc1concept-aug-1000 \
        --submission RUN_DIR/evaluator_ARC_step_N/submission.json

The task is recognised from the split's `dataset.json` by `dataset.tasks.task_of` (docs/data-format.md,
docs/builders.md), or named with `task=`; `RENDERERS` holds each task's renderer, the class its registry
entry names (`dataset.tasks.TASKS[task].renderer`): ARC grids in the standard ARC palette, Sudoku boards
with clues and filled digits in different styles, mazes with the predicted path over the true one,
anything else a grid of token ids.
"""
from __future__ import annotations

import importlib
import os
from typing import Optional, Union

from dataset.tasks import TASKS, Task
from viz.data import load_outputs, load_split, select_rows
from viz.html import HTML_FORMATS, write_html
from viz.png import PNG_FORMATS, write_png
from viz.sheet import Renderer, Sheet, summary


def task_renderer(task: Task) -> Renderer:
    """The renderer the task's entry names (`module.Class`: dataset/ names it without importing viz/)."""
    module, _, name = task.renderer.rpartition(".")
    return getattr(importlib.import_module(module), name)()


RENDERERS: dict[str, Renderer] = {name: task_renderer(task) for name, task in TASKS.items()}  # task name -> renderer
WRITERS = {**{ext: write_html for ext in HTML_FORMATS}, **{ext: write_png for ext in PNG_FORMATS}}


def renderer_for(task: str, seq_len: int, dataset_dir: str) -> Renderer:
    """The renderer of `task`, if it can draw sequences of `seq_len` tokens."""
    if task not in RENDERERS:
        raise ValueError(f"Unknown task {task!r}; choose one of {', '.join(RENDERERS)}.")
    renderer = RENDERERS[task]
    if renderer.seq_len is not None and renderer.seq_len != seq_len:
        raise ValueError(f"Cannot draw {dataset_dir!r} as {task}: {task} puzzles have {renderer.seq_len} tokens, "
                         f"this dataset's have {seq_len}.")
    return renderer


def build_sheet(dataset_dir: str, outputs: Union[dict, str, None] = None, num: int = 8, split: str = "test",
                submission: Optional[str] = None, task: Optional[str] = None) -> Sheet:
    """Describe `num` examples of a split, with predictions from `outputs` (a dict or a saved file/run dir)
    or, for ARC, the attempts of an evaluator `submission.json`. `task` overrides the detected task."""
    data = load_split(dataset_dir, split)
    renderer = renderer_for(task or data.task, data.metadata.seq_len, dataset_dir)
    if submission is not None:
        return renderer.submission_sheet(dataset_dir, submission, num)
    if isinstance(outputs, str):
        outputs = load_outputs(outputs)
    examples = [renderer.example(row, data) for row in select_rows(data, outputs, num, renderer.leads)]
    return Sheet(f"{renderer.name} \u00b7 {dataset_dir} \u00b7 {split}", renderer.name, examples, renderer.legend,
                 summary(examples) + renderer.note(data), outline=renderer.outline)


def write_sheet(sheet: Sheet, out_path: str) -> str:
    """Write the sheet as HTML or PNG, by the extension of `out_path`; returns the path."""
    extension = os.path.splitext(out_path)[1].lower()
    if extension not in WRITERS:
        raise ValueError(f"Cannot write {out_path!r}: use a .html or .png file name.")
    return WRITERS[extension](sheet, out_path)


def render_predictions(dataset_dir: str, outputs: Union[dict, str, None], out_path: str, num: int = 8,
                       split: str = "test", task: Optional[str] = None) -> str:
    """Draw `num` examples of `split` with the model's predictions (outputs dict, saved file or run dir; None
    draws puzzles and labels only) to `out_path` (.html or .png). Returns `out_path`."""
    return write_sheet(build_sheet(dataset_dir, outputs, num=num, split=split, task=task), out_path)
