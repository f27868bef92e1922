"""Pictures of puzzles and predictions (HTML, PNG) and training curves (PNG); `visualize.py` is the CLI.

    viz.puzzles   build_sheet / write_sheet / render_predictions, RENDERERS (task name -> renderer)
    viz.answers   the pictures of predict.py: puzzles without solutions and a model's answers
    viz.curves    plot_curves / curves_figure from a run's metrics.jsonl
    viz.compare   several runs: found, labelled by what differs, overlaid (viz.overlay), a table of final/best metrics
    viz.data      reading a dataset split and saved outputs (step_N_all_preds.R), matching them
    viz.sheet     the task-independent description (Sheet, Example, Panel) and the Renderer base
    viz.arc, viz.sudoku, viz.maze, viz.generic    one renderer each, with its colours and legend
    viz.html, viz.png, viz.files                  the two output formats and the atomic file write
"""
from viz.curves import curves_figure, plot_curves
from viz.puzzles import RENDERERS, build_sheet, render_predictions, write_sheet

__all__ = ["RENDERERS", "build_sheet", "curves_figure", "plot_curves", "render_predictions", "write_sheet"]
