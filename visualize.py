"""Look at a dataset, a model's predictions, or a training run without wandb.

    python visualize.py puzzles --data data/sudoku-demo [--split test] [--outputs RUN_DIR_OR_step_N_all_preds.0]
                                [--submission submission.json] [--task arc|sudoku|maze|generic] [--num 8]
                                [--out pictures.html] [--out pictures.png]
    python visualize.py curves RUN_DIR_OR_metrics.jsonl [--out curves.png]
    python visualize.py curves RUN_DIR [RUN_DIR ...] | SWEEP_DIR [--out runs.png]   (also runs.csv, runs.md)

`puzzles` draws inputs, labels and (with --outputs, the tensors an evaluation saves with
eval_save_outputs=[inputs,labels,puzzle_identifiers,preds]) predictions, right/wrong marked; for ARC,
--submission draws the evaluator's attempt 1 and 2. `curves` plots loss, exact accuracy, ACT steps and
learning rate from the run's metrics.jsonl; given several runs (or a folder holding them), it overlays them,
labelled by the config keys that differ, and prints and writes a table of their final and best metrics. The
drawing is done by the `viz` package.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional

from rundir.layout import CURVES_FILE, METRICS_FILE, OUTPUTS_PATTERN
from utils.cli import DefaultsHelpFormatter, new_parser, positive_int, quoted
from utils.errors import UserFacingError
from viz import RENDERERS, build_sheet, plot_curves, write_sheet
from viz.compare import DEFAULT_OUT, compare_runs, find_runs, is_run_dir, load_runs

DEFAULT_PICTURES = "pictures.html"


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True,
                                     help="what to draw; `python visualize.py COMMAND --help` lists its options")

    puzzles = commands.add_parser("puzzles", help="draw puzzles, labels and predictions (HTML and/or PNG)",
                                  formatter_class=DefaultsHelpFormatter)
    puzzles.add_argument("--data", required=True, help="built dataset directory (required)")
    puzzles.add_argument("--split", default="test", choices=("train", "test"),
                         help="split to draw (default: %(default)s)")
    puzzles.add_argument("--outputs", default=None,
                         help=f"saved evaluation outputs: a {OUTPUTS_PATTERN} file, or a run directory (latest step); "
                              "default: none, puzzles and labels only")
    puzzles.add_argument("--submission", default=None,
                         help="ARC only: an evaluator submission.json (attempts 1 and 2); default: none")
    puzzles.add_argument("--task", default=None, choices=tuple(RENDERERS),
                         help="draw the dataset as this task (default: recognised from vocab_size and seq_len)")
    puzzles.add_argument("--num", type=positive_int, default=8, help="examples to draw (default: %(default)s)")
    puzzles.add_argument("--out", action="append", default=None,
                         help=f".html or .png file; repeat for both (default: {DEFAULT_PICTURES})")

    curves = commands.add_parser("curves", help=f"plot training curves from {METRICS_FILE} (PNG); several runs: "
                                                "overlaid, with a table of final and best metrics",
                                 formatter_class=DefaultsHelpFormatter)
    curves.add_argument("runs", nargs="+", metavar="RUN",
                        help=f"run directory (checkpoint_path) or its {METRICS_FILE}; several, or a sweep directory "
                             "or any folder holding run directories, to compare them")
    curves.add_argument("--out", default=None,
                        help=f"PNG path (default: one run: {CURVES_FILE} beside its {METRICS_FILE}; several: "
                             f"{DEFAULT_OUT}); several runs also write NAME.csv and NAME.md beside NAME.png")
    return parser


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def run_puzzles(args: argparse.Namespace) -> list[str]:
    if args.outputs and args.submission:
        raise ValueError("Pass either --outputs or --submission, not both.")
    sheet = build_sheet(args.data, args.outputs, num=args.num, split=args.split, submission=args.submission,
                        task=args.task)
    return [write_sheet(sheet, path) for path in (args.out or [DEFAULT_PICTURES])]


def run_curves(args: argparse.Namespace) -> list[str]:
    """One run: its curves (to curves.png beside it by default); several: overlaid, the table printed and written."""
    one = args.runs[0]
    if len(args.runs) == 1 and (os.path.isfile(one) or is_run_dir(one)):
        return [plot_curves(one, args.out)]
    if len(runs := find_runs(args.runs)) == 1:
        return [plot_curves(runs[0], args.out)]
    written, table = compare_runs(load_runs(runs), args.out or DEFAULT_OUT)
    print(table, end="")
    return written


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    try:
        written = run_puzzles(args) if args.command == "puzzles" else run_curves(args)
    except (FileNotFoundError, ValueError, UserFacingError) as err:
        # Problems with the inputs the user named: one line, no traceback.
        sys.exit(f"error: {err}")
    for path in written:
        print(f"Wrote {quoted(path)}")


if __name__ == "__main__":
    main()
