"""Several runs' curves on the four panels of viz.curves: one colour per run, one line style per metric, one
marker per evaluated set. Train curves long enough to be smoothed are drawn smoothed only (the raw batch
estimates of several runs would hide each other). A legend per panel names the metrics, one below names the runs.
"""
from __future__ import annotations

import math

import numpy as np
from matplotlib import colormaps
from matplotlib.lines import Line2D

from viz.curves import (
    ACCURACY_LIMITS,
    FIGURE_INCHES,
    NOT_SMOOTHED,
    PANELS,
    SMOOTH_MIN_POINTS,
    TRAIN_PREFIX,
    metric_markers,
    panel_keys,
    series,
    smooth,
)
from viz.png import agg_figure

LINE_STYLES = ("-", "--", ":", "-.")
LEGEND_INCHES_PER_ROW = 0.22  # the runs' legend below the panels
RUNS_PER_COLUMN = 8  # more runs: the legend in two columns
KEY_COLOUR = "#555555"  # the metrics' legend: the style of a metric, in no run's colour


def run_colours(count: int) -> list:
    """A distinct colour per run: the 10 of tab10, the 20 of tab20, else evenly spaced along viridis."""
    if count <= 20:
        table = colormaps["tab10" if count <= 10 else "tab20"]
        return [table(i) for i in range(count)]
    return [colormaps["viridis"](x) for x in np.linspace(0.0, 0.95, count)]


def key_styles(keys: list[str]) -> dict[str, tuple[str, str]]:
    """(line style, marker) per key: one line style per metric, one marker per evaluated set (none for train)."""
    return {key: (LINE_STYLES[index % len(LINE_STYLES)], marker)
            for key, (index, marker) in metric_markers(keys).items()}


def shown_values(key: str, steps: np.ndarray, values: np.ndarray) -> np.ndarray:
    """What is drawn of one series: long train curves smoothed (as in viz.curves), the rest as logged."""
    if key.startswith(TRAIN_PREFIX) and steps.size >= SMOOTH_MIN_POINTS and key.rsplit("/", 1)[1] not in NOT_SMOOTHED:
        return smooth(values)
    return values


def _overlay_panel(ax, runs: list, colours: list, panel: tuple) -> None:
    title, groups, ylabel, log_if_positive = panel
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    keys = list(dict.fromkeys(key for run in runs for key in panel_keys(run.records, groups)))
    styles, drawn, lowest = key_styles(keys), {}, np.inf
    for run, colour in zip(runs, colours):
        for key in keys:
            steps, values = series(run.records, key)
            if not steps.size:
                continue
            linestyle, marker = styles[key]
            ax.plot(steps, shown_values(key, steps, values), color=colour, linestyle=linestyle, marker=marker,
                    markersize=4, linewidth=1.2 if marker else 1.5, label=f"{key} [{run.label}]")
            drawn[key], lowest = styles[key], min(lowest, values.min())
    if not drawn:
        ax.text(0.5, 0.5, "no data logged", ha="center", va="center", transform=ax.transAxes, color="#888888")
        return
    if log_if_positive and lowest > 0:
        ax.set_yscale("log")
    ax.legend(handles=[Line2D([], [], color=KEY_COLOUR, linestyle=linestyle, marker=marker, markersize=4, label=key)
                       for key, (linestyle, marker) in drawn.items()], fontsize=7, handlelength=3)


def overlay_figure(runs: list):
    """The runs' curves overlaid, as a matplotlib Figure (Agg canvas); its first four axes are the PANELS."""
    if not any(k != "step" for run in runs for r in run.records for k in r):
        raise ValueError("The runs' metrics hold no values yet (train for a few steps first).")
    width, height = FIGURE_INCHES
    columns = 1 if len(runs) <= RUNS_PER_COLUMN else 2
    rows = math.ceil(len(runs) / columns)
    fig = agg_figure(figsize=(width, height + LEGEND_INCHES_PER_ROW * (rows + 1)), layout="constrained")
    fig.suptitle(f"{len(runs)} runs")
    colours = run_colours(len(runs))
    for ax, panel in zip(fig.subplots(2, 2).ravel(), PANELS):
        _overlay_panel(ax, runs, colours, panel)
    fig.axes[1].set_ylim(*ACCURACY_LIMITS)
    fig.legend(handles=[Line2D([], [], color=colour, linewidth=2.5, label=run.label)
                        for run, colour in zip(runs, colours)], loc="outside lower center", fontsize=8, ncols=columns)
    return fig
