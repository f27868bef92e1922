"""Resume lineage: a resume from an older training state starts a new lineage (docs/running.md, "Reliability").

What a run directory holds of steps after the resumed one (training states, weights, saved outputs, evaluator
directories, and a best checkpoint recorded later) belongs to the attempt that went on from there and was
abandoned: it is moved aside into `abandoned_after_step_N/` with a copy of that attempt's metrics.jsonl, so that
resume=auto, which=last and pruning follow the current lineage and nothing of the old one is lost.
"""
import os
import shutil

from rundir.best import read_best
from rundir.layout import BEST_FILE, BEST_WEIGHTS, METRICS_FILE, abandoned_dir, entries_after
from utils.atomic import fsync_dir
from utils.cli import quoted

MAX_NAMED = 4  # entries named in the notice


def abandon_later_attempt(run_dir: str, step: int) -> str | None:
    """Move what `run_dir` holds of steps after `step` into a new abandoned-attempt directory (said in one line);
    the directory, or None when there was nothing to move."""
    names = entries_after(run_dir, step)
    best = read_best(run_dir)
    if best is not None and best["step"] > step:
        names += [name for name in (BEST_WEIGHTS, BEST_FILE) if os.path.exists(os.path.join(run_dir, name))]
    if not names:
        return None
    destination = abandoned_dir(run_dir, step)
    os.mkdir(destination)
    metrics = os.path.join(run_dir, METRICS_FILE)
    if os.path.exists(metrics):  # the run truncates its log to `step` next: keep the abandoned attempt's lines
        shutil.copy2(metrics, os.path.join(destination, METRICS_FILE))
    for name in sorted(names, key=lambda n: n != BEST_FILE):  # best.json first: never naming weights moved away
        os.replace(os.path.join(run_dir, name), os.path.join(destination, name))
    fsync_dir(run_dir)
    more = f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else ""
    print(f"Resumed from an older state: moved what the abandoned attempt saved after step {step} "
          f"({', '.join(names[:MAX_NAMED])}{more}) and a copy of its {METRICS_FILE} to {quoted(destination)}",
          flush=True)
    return destination
