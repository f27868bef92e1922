"""Training curves from a run's local `metrics.jsonl` (written by the run logger), as a PNG.

    python visualize.py curves checkpoints/PROJECT/RUN            # -> RUN/curves.png
    python visualize.py curves path/to/metrics.jsonl --out curves.png

Four panels: losses, exact accuracy (train and every evaluated set, TTA accuracy and the ARC evaluator's pass@k
beside it), ACT steps, learning rate. Several runs, overlaid: viz.compare. Train lines are
`{"step": N, "train/<metric>": ...}`; evaluation lines are `{"step": N, "<set>/<metric>": ...}`
(e.g. `all/exact_accuracy`, `ARC/pass@2`).
"""
from __future__ import annotations

import json
import math
import os
import warnings
from typing import Optional

import numpy as np
from PIL import Image

from rundir.layout import CURVES_FILE, METRICS_FILE
from utils.errors import UserFacingError
from viz.files import write_picture
from viz.png import PNG_DPI, agg_figure

TRAIN_PREFIX = "train/"
# Train metrics divided by the number of sequences that halted in the step: at a step where none
# halted (count 0) the logged value is a meaningless 0, so such points are left out.
PER_HALTED_METRICS = ("accuracy", "exact_accuracy", "q_halt_accuracy", "steps")
# Each panel: (title, the metric names it plots (last key component) in groups drawn in this order, y label,
# log y-axis when every value is > 0 (losses of very different sizes)).
PANELS = (
    ("Loss", (("lm_loss", "q_halt_loss", "q_continue_loss"),), "loss", True),
    ("Exact accuracy", (("exact_accuracy",), ("tta_exact_accuracy",), ("pass@1", "pass@2")), "fraction of puzzles",
     False),
    ("ACT steps", (("steps",),), "ACT steps per puzzle", False),
    ("Learning rate", (("lr",),), "learning rate", False),
)
PANEL_TITLES = tuple(panel[0] for panel in PANELS)
ACCURACY_LIMITS = (-0.02, 1.02)
# Written into every curves PNG: what tells a picture this tool may replace from one it must not.
WRITTEN_BY = "TRM visualize.py curves"
FIGURE_INCHES = (12.0, 8.0)
SMOOTH_MIN_POINTS = 50  # below this many points a raw train curve is readable as it is
NOT_SMOOTHED = ("lr",)  # a schedule, not a noisy batch estimate: smoothing would only blur its corners
EVAL_MARKERS = ("o", "s", "^", "D", "v")


def metrics_file(path: str) -> str:
    """`path` itself, or `path/metrics.jsonl` for a run directory."""
    candidate = os.path.join(path, METRICS_FILE) if os.path.isdir(path) else path
    if not os.path.isfile(candidate):
        where = f"run directory {path!r} has no {METRICS_FILE}" if os.path.isdir(path) else f"{path!r} does not exist"
        raise FileNotFoundError(f"No metrics to plot: {where}. Pass a run directory (checkpoint_path) or its "
                                f"{METRICS_FILE}.")
    return candidate


def read_metrics(path: str) -> list[dict]:
    """Records of a metrics.jsonl (or of a run directory's).

    A malformed last line is skipped with a warning (the run may be writing it right now); a malformed
    line elsewhere is an error, since the file is then not what RunLogger writes.
    """
    file_path = metrics_file(path)
    with open(file_path, "r", encoding="utf-8") as f:
        lines = f.read().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines):
                warnings.warn(f"{file_path}: skipping an incomplete last line ({err})", stacklevel=2)
                continue
            raise ValueError(f"{file_path} line {number} is not valid JSON ({err}); it is not a {METRICS_FILE} "
                             f"written by training.") from None
        if not isinstance(record, dict) or not isinstance(record.get("step"), (int, float)):
            raise ValueError(f"{file_path} line {number} has no numeric 'step'; it is not a {METRICS_FILE} "
                             f"written by training.")
        records.append(record)
    return records


def series(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one metric, sorted by step, one value per step.

    A resumed run appends to the same file and re-logs the steps after its checkpoint: the later
    line of a step wins, so the curve shows the run that continued.
    """
    by_step: dict[float, float] = {}
    skip_empty = key.startswith(TRAIN_PREFIX) and key[len(TRAIN_PREFIX):] in PER_HALTED_METRICS
    for record in records:
        value = record.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            continue
        if skip_empty and record.get(TRAIN_PREFIX + "count") == 0:
            continue
        by_step[record["step"]] = float(value)
    steps = np.array(sorted(by_step), dtype=np.float64)
    return steps, np.array([by_step[s] for s in steps], dtype=np.float64)


def smooth(values: np.ndarray) -> np.ndarray:
    """Running mean over ~2% of the points (per-step train metrics are noisy batch estimates)."""
    window = max(1, len(values) // 50)
    if window == 1:
        return values
    cumulative = np.cumsum(np.insert(values, 0, 0.0))
    head = cumulative[1:window] / np.arange(1, window)  # shorter windows at the start: no lag, no gap
    return np.concatenate([head, (cumulative[window:] - cumulative[:-window]) / window])


def panel_keys(records: list[dict], groups: tuple[tuple[str, ...], ...]) -> list[str]:
    """The metric keys a panel plots: those ending in each group's names, group by group."""
    return [key for suffixes in groups for key in _keys_ending(records, suffixes)]


def _keys_ending(records: list[dict], suffixes: tuple[str, ...]) -> list[str]:
    """Metric keys whose last component is one of `suffixes`, train first, then evaluation sets, in file order."""
    keys: dict[str, None] = {}
    for record in records:
        for key in record:
            if "/" in key and key.rsplit("/", 1)[1] in suffixes:
                keys.setdefault(key)
    return sorted(keys, key=lambda k: not k.startswith(TRAIN_PREFIX))


def metric_markers(keys: list[str]) -> dict[str, tuple[int, str]]:
    """(metric index, marker) per key: the index of its metric (last component) among the keys' metrics, so that
    a train line and the evaluation points of one metric match; one marker per evaluation set (none for train)."""
    metrics = list(dict.fromkeys(key.rsplit("/", 1)[1] for key in keys))
    eval_sets = list(dict.fromkeys(key.rsplit("/", 1)[0] for key in keys if not key.startswith(TRAIN_PREFIX)))
    styles = {}
    for key in keys:
        set_name, metric = key.rsplit("/", 1)
        marker = "" if key.startswith(TRAIN_PREFIX) else EVAL_MARKERS[eval_sets.index(set_name) % len(EVAL_MARKERS)]
        styles[key] = (metrics.index(metric), marker)
    return styles


def _styles(keys: list[str]) -> dict[str, tuple[str, str]]:
    """(colour, marker) per key: one colour per metric, one marker per evaluation set."""
    return {key: (f"C{index % 10}", marker) for key, (index, marker) in metric_markers(keys).items()}


def _plot_metric(ax, steps: np.ndarray, values: np.ndarray, key: str, colour: str, marker: str) -> None:
    """Train: a line (raw faint plus smoothed when long and noisy); evaluation: marked points."""
    if marker:
        ax.plot(steps, values, color=colour, marker=marker, markersize=4, linewidth=1.0, linestyle="--", label=key)
        return
    smoothed = steps.size >= SMOOTH_MIN_POINTS and key.rsplit("/", 1)[1] not in NOT_SMOOTHED
    ax.plot(steps, values, color=colour, alpha=0.3 if smoothed else 1.0, linewidth=0.8 if smoothed else 1.5,
            label=None if smoothed else key)
    if smoothed:
        ax.plot(steps, smooth(values), color=colour, linewidth=1.5, label=f"{key} (smoothed)")


def _fill_panel(ax, records: list[dict], title: str, keys: list[str], ylabel: str,
                log_if_positive: bool = False) -> None:
    """One panel; `log_if_positive`: log y-axis when every value is > 0 (losses of very different sizes)."""
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    data = {key: series(records, key) for key in keys}
    data = {key: sv for key, sv in data.items() if sv[0].size}
    if not data:
        ax.text(0.5, 0.5, "no data logged", ha="center", va="center", transform=ax.transAxes, color="#888888")
        return
    styles = _styles(list(data))
    for key, (steps, values) in data.items():
        _plot_metric(ax, steps, values, key, *styles[key])
    if log_if_positive and min(values.min() for _, values in data.values()) > 0:
        ax.set_yscale("log")
    ax.legend(fontsize=7)


def curves_figure(records_or_path, title: Optional[str] = None):
    """The curves as a matplotlib Figure (Agg canvas); its four axes are titled PANEL_TITLES."""
    records = read_metrics(records_or_path) if isinstance(records_or_path, str) else records_or_path
    if not any(k != "step" for r in records for k in r):
        raise ValueError("The metrics hold no values yet (train for a few steps first).")
    fig = agg_figure(figsize=FIGURE_INCHES, layout="constrained")
    if title:
        fig.suptitle(title)
    for ax, (panel_title, groups, ylabel, log_if_positive) in zip(fig.subplots(2, 2).ravel(), PANELS):
        _fill_panel(ax, records, panel_title, panel_keys(records, groups), ylabel, log_if_positive)
    fig.axes[1].set_ylim(*ACCURACY_LIMITS)
    return fig


def save_curves(fig, out_path: str) -> str:
    """`fig` as a PNG at `out_path`, atomically, marked as written by this tool (`written_here`)."""
    if os.path.splitext(out_path)[1].lower() != ".png":
        raise ValueError(f"Cannot write {out_path!r}: the curves are a PNG; use a .png file name.")
    return write_picture(out_path, lambda f: fig.savefig(f, format="png", dpi=PNG_DPI,
                                                         metadata={"Software": WRITTEN_BY}))


def written_here(png_path: str) -> bool:
    """Whether the file at `png_path` is a curves picture this tool wrote (its PNG text names WRITTEN_BY), or
    the curves.png of a run directory (the run's own, which every run writes)."""
    run_dir = os.path.dirname(os.path.abspath(png_path))
    if os.path.basename(png_path) == CURVES_FILE and os.path.isfile(os.path.join(run_dir, METRICS_FILE)):
        return True
    try:
        with Image.open(png_path) as image:
            return image.format == "PNG" and image.info.get("Software") == WRITTEN_BY
    except (OSError, ValueError):  # not an image at all (PIL's UnidentifiedImageError is an OSError)
        return False


def refuse_foreign(paths: list[str], anchor: str) -> None:
    """Stop before writing `paths` if one exists that this tool did not write: they are ours when `anchor` (the
    picture written with them) is."""
    present = [path for path in paths if os.path.lexists(path)]
    if present and not (os.path.isfile(anchor) and written_here(anchor)):
        raise UserFacingError(f"{present[0]} exists and was not written by visualize.py curves "
                              f"({anchor} is not a curves picture it wrote); move it away or pass another --out.")


def default_out_path(path: str) -> str:
    """curves.png beside the metrics file."""
    return os.path.join(os.path.dirname(metrics_file(path)), CURVES_FILE)


def plot_curves(metrics_path: str, out_path: Optional[str] = None) -> str:
    """Write the curves of a run (directory or metrics.jsonl) to `out_path` (default: curves.png beside it); a file
    there that this tool did not write is refused."""
    out_path = out_path or default_out_path(metrics_path)
    refuse_foreign([out_path], out_path)
    run_name = os.path.basename(os.path.dirname(os.path.abspath(metrics_file(metrics_path))))
    return save_curves(curves_figure(metrics_path, title=run_name), out_path)
