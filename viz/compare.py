"""Several runs side by side: their curves overlaid (viz.overlay) and a table of final and best metrics.

    python visualize.py curves checkpoints/PROJECT/SWEEP          # every run directory under it
    python visualize.py curves RUN_A RUN_B --out l_cycles.png      # -> l_cycles.png, l_cycles.csv, l_cycles.md

A run directory is one holding a metrics.jsonl. Each run is labelled by the keys of its resolved config
(all_config.yaml) whose values differ between the runs (`arch.L_cycles=2`), or by its name when none differ.
"""
from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import yaml

from rundir.layout import CONFIG_FILE, METRICS_FILE
from utils.atomic import write_atomically
from utils.errors import UserFacingError
from viz.curves import TRAIN_PREFIX, read_metrics, refuse_foreign, save_curves, series, smooth
from viz.overlay import overlay_figure

DEFAULT_OUT = "runs.png"  # with runs.csv and runs.md beside it
TABLE_SUFFIXES = (".csv", ".md")
# Keys that say where a run is, which group it is in or how it was started, not what it is: they differ between
# any two runs, or any two sweeps.
NOT_SETTINGS = ("run_name", "checkpoint_path", "project_name", "wandb_group", "resume", "stop_at_step")
ABSENT = "unset"  # a key one run's config lacks
# The table's metrics: of each evaluated set these (and ARC/pass@k), then the training loss.
EVAL_TABLE_METRICS = ("exact_accuracy", "tta_exact_accuracy")
TRAIN_TABLE_METRICS = (TRAIN_PREFIX + "lm_loss",)
FINAL, BEST = " final", " best"  # the columns of a metric: "<metric> final", "<metric> best", ...
BEST_STEP = " best step"  # ... and "<metric> best step", the step of the best value
BEST_AT = " best (step)"  # the Markdown table's column of both


@dataclass
class Run:
    name: str
    path: str  # the run directory
    records: list[dict]
    settings: Optional[dict[str, Any]]  # the flattened resolved config; None when the run has none
    label: str = field(default="")


# ---------------------------------------------------------------------------------------------
# Finding and reading runs
# ---------------------------------------------------------------------------------------------
def is_run_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, METRICS_FILE))


def run_dirs_under(folder: str) -> list[str]:
    """Run directories in `folder` at any depth, sorted; a run directory's own subdirectories are not searched."""
    found = []
    for parent, subdirs, _ in os.walk(folder):
        if is_run_dir(parent):
            found.append(parent)
            subdirs.clear()
        else:
            subdirs.sort()
    return sorted(found)


def find_runs(paths: list[str]) -> list[str]:
    """The run directories `paths` name: each a run directory, its metrics.jsonl, or a folder holding runs."""
    runs: dict[str, None] = {}
    for path in paths:
        if os.path.isfile(path) and os.path.basename(path) == METRICS_FILE:
            found = [os.path.dirname(os.path.abspath(path))]
        elif os.path.isdir(path):
            found = [path] if is_run_dir(path) else run_dirs_under(path)
            if not found:
                raise FileNotFoundError(f"No runs in {path!r}: no directory in it holds a {METRICS_FILE}. Pass run "
                                        f"directories (checkpoint_path), a sweep directory or a folder holding them.")
        else:
            raise FileNotFoundError(f"{path!r} is neither a run directory nor a {METRICS_FILE}; pass run directories "
                                    "(checkpoint_path), a sweep directory or a folder holding them.")
        runs.update(dict.fromkeys(os.path.abspath(p) for p in found))
    return list(runs)


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys (`arch.L_cycles`); lists and scalars are values."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def read_settings(run_dir: str) -> Optional[dict[str, Any]]:
    """The run's resolved config, flattened; None when it has no config file."""
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        try:
            config = yaml.safe_load(f)
        except yaml.YAMLError as err:
            raise UserFacingError(f"{path} is not readable YAML ({type(err).__name__}); the legend needs the "
                                  f"{CONFIG_FILE} the run wrote: restore it, or move it away to label the run by "
                                  "its name.") from None
    if not isinstance(config, dict):
        raise UserFacingError(f"{path} is not a training config (expected a YAML mapping); restore the {CONFIG_FILE} "
                              "the run wrote, or move it away to label the run by its name.")
    return flatten(config)


def run_names(run_dirs: list[str]) -> list[str]:
    """Each run's directory name, or its path below the runs' common folder where two names are the same."""
    names = [os.path.basename(d) for d in run_dirs]
    if len(set(names)) == len(names):
        return names
    common = os.path.commonpath(run_dirs)
    return [os.path.relpath(d, common) for d in run_dirs]


def load_runs(paths: list[str]) -> list[Run]:
    run_dirs = find_runs(paths)
    runs = [Run(name, d, read_metrics(d), read_settings(d)) for name, d in zip(run_names(run_dirs), run_dirs)]
    label_runs(runs)
    return runs


# ---------------------------------------------------------------------------------------------
# Labels: what differs between the runs
# ---------------------------------------------------------------------------------------------
def shown(value: Any) -> str:
    """A config value as an override would spell it (`[a,b]`, `null`)."""
    if isinstance(value, list):
        return "[" + ",".join(shown(v) for v in value) + "]"
    if value is None:
        return "null"
    return str(value)


def differing_keys(settings: list[dict[str, Any]]) -> list[str]:
    """Keys whose values are not the same in every config (a key missing from one differs), in config order."""
    keys = list(dict.fromkeys(key for flat in settings for key in flat))
    return [key for key in keys if key not in NOT_SETTINGS
            and len({shown(flat[key]) if key in flat else ABSENT for flat in settings}) > 1]


def label_runs(runs: list[Run]) -> list[str]:
    """Set each run's label from the keys that differ (`key=value, ...`), its name where none do or it has no
    config; a label two runs share gets their names."""
    keys = differing_keys([run.settings for run in runs if run.settings is not None])
    for run in runs:
        if run.settings is None or not keys:
            run.label = run.name
        else:
            run.label = ", ".join(f"{key}={shown(run.settings[key]) if key in run.settings else ABSENT}"
                                  for key in keys)
    labels = [run.label for run in runs]
    for run in runs:
        if labels.count(run.label) > 1 and run.label != run.name:
            run.label = f"{run.label} ({run.name})"
    return [run.label for run in runs]


# ---------------------------------------------------------------------------------------------
# The table of final and best metrics
# ---------------------------------------------------------------------------------------------
def lower_is_better(key: str) -> bool:
    """Losses are minimised; accuracies and pass@k maximised."""
    return key.rsplit("/", 1)[-1].endswith("loss")


def _table_order(key: str) -> tuple[str, int, int]:
    """By set, then exact accuracy, TTA accuracy, pass@k by k."""
    set_name, metric = key.rsplit("/", 1)
    if metric in EVAL_TABLE_METRICS:
        return set_name, EVAL_TABLE_METRICS.index(metric), 0
    k = metric.removeprefix("pass@")
    return set_name, len(EVAL_TABLE_METRICS), int(k) if k.isdigit() else 0


def table_metrics(runs: list[Run]) -> list[str]:
    """The metrics the table shows: each evaluated set's exact (and TTA) accuracy and pass@k, then the train loss."""
    keys: dict[str, None] = {}
    for run in runs:
        for record in run.records:
            for key in record:
                set_name, _, metric = key.rpartition("/")
                if set_name and set_name + "/" != TRAIN_PREFIX and (metric in EVAL_TABLE_METRICS
                                                                    or metric.startswith("pass@")):
                    keys.setdefault(key)
    evaluated = sorted(keys, key=_table_order)
    trained = [key for key in TRAIN_TABLE_METRICS if any(key in record for run in runs for record in run.records)]
    return evaluated + trained


def final_and_best(records: list[dict], key: str) -> Optional[tuple[float, float, int]]:
    """(final value, best value, step of the best) of one metric; None when never logged. Train metrics are per
    batch and noisy: they are taken from the smoothed curve, as plotted."""
    steps, values = series(records, key)
    if not steps.size:
        return None
    if key.startswith(TRAIN_PREFIX):
        values = smooth(values)
    best = int(np.argmin(values) if lower_is_better(key) else np.argmax(values))
    return float(values[-1]), float(values[best]), int(steps[best])


def summary_rows(runs: list[Run]) -> list[dict[str, Any]]:
    """One row per run: its name, the differing keys' values, its last step, then per metric the final value, the
    best (max for accuracies, min for losses) and the step of the best; None where a run lacks a metric."""
    keys = differing_keys([run.settings for run in runs if run.settings is not None])
    rows = []
    for run in runs:
        row: dict[str, Any] = {"run": run.name}
        for key in keys:
            row[key] = shown(run.settings[key]) if run.settings and key in run.settings else ABSENT
        row["last step"] = max((r["step"] for r in run.records), default=None)
        for metric in table_metrics(runs):
            numbers = final_and_best(run.records, metric)
            final, best, best_step = numbers if numbers else (None, None, None)
            row.update({metric + FINAL: final, metric + BEST: best, metric + BEST_STEP: best_step})
        rows.append(row)
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table, columns aligned (also how it is printed); each best value is followed by its
    step in parentheses, to keep the table narrow."""
    shown_rows = []
    for row in rows:
        shown_row = {}
        for column, value in row.items():
            if column.endswith(BEST_STEP):
                shown_row[column.removesuffix(BEST_STEP) + BEST_AT] += f" ({value})" if value is not None else ""
            elif column.endswith(BEST):
                shown_row[column.removesuffix(BEST) + BEST_AT] = _cell(value)
            else:
                shown_row[column] = _cell(value).replace("|", "\\|")
        shown_rows.append(shown_row)
    header = list(shown_rows[0])
    cells = [header] + [[row[c] for c in header] for row in shown_rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(text.ljust(w) for text, w in zip(line, widths)) + " |" for line in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines) + "\n"


def csv_table(rows: list[dict[str, Any]]) -> str:
    """The rows as CSV, numbers at full precision, an empty cell where a run lacks a metric."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    return out.getvalue()


# ---------------------------------------------------------------------------------------------
# Writing the comparison
# ---------------------------------------------------------------------------------------------
def output_paths(out: str) -> tuple[str, str, str]:
    """The picture and, beside it with the same name, the CSV and Markdown tables."""
    stem = os.path.splitext(out)[0]
    return out, stem + TABLE_SUFFIXES[0], stem + TABLE_SUFFIXES[1]


def check_out(out: str) -> tuple[str, str, str]:
    """The three output paths, refused when one exists that this tool did not write or they would go into a run
    directory (which holds only what its run writes)."""
    if os.path.splitext(out)[1].lower() != ".png":
        raise UserFacingError(f"Cannot write {out!r}: the overlaid curves are a PNG; pass --out NAME.png (the tables "
                              "go beside it as NAME.csv and NAME.md).")
    directory = os.path.dirname(os.path.abspath(out))
    while not is_run_dir(directory) and os.path.dirname(directory) != directory:
        directory = os.path.dirname(directory)
    if is_run_dir(directory):
        raise UserFacingError(f"--out {out} is inside the run directory {directory}, which holds only what its run "
                              "writes; pass a path outside it.")
    paths = output_paths(out)
    refuse_foreign(list(paths), paths[0])
    return paths


def compare_runs(runs: list[Run], out: str = DEFAULT_OUT) -> tuple[list[str], str]:
    """Write the overlaid curves to `out` and the table beside it; (paths written, the table as Markdown)."""
    picture, csv_path, md_path = check_out(out)
    rows = summary_rows(runs)
    save_curves(overlay_figure(runs), picture)  # first: the picture is what marks the tables beside it as ours
    markdown = markdown_table(rows)
    write_atomically(csv_path, lambda f: f.write(csv_table(rows)), "w")
    write_atomically(md_path, lambda f: f.write(markdown), "w")
    return [picture, csv_path, md_path], markdown
