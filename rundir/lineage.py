"""Resume lineage: a resume from an older training state starts a new lineage (docs/running.md, "Reliability").

What a run directory holds of steps after the resumed one (training states, weights, saved outputs, evaluator
directories, and a best checkpoint recorded later) belongs to the attempt that went on from there and was
abandoned: it is moved aside into `abandoned_after_step_N/` with a copy of that attempt's metrics.jsonl, so that
resume=auto, which=last and pruning follow the current lineage and nothing of the old one is lost.
"""
import os

from rundir.best import read_best
from rundir.layout import (
    BEST_FILE,
    BEST_WEIGHTS,
    METRICS_FILE,
    UNFINISHED_MOVE_FILE,
    abandoned_dir,
    entries_after,
    unfinished_moves,
)
from utils.atomic import copy_file_atomically, fsync_dir, temporary_path, write_synced
from utils.cli import quoted

MAX_NAMED = 4  # entries named in the notice


def abandon_later_attempt(run_dir: str, step: int) -> str | None:
    """Move what `run_dir` holds of steps after `step` into a new abandoned-attempt directory (said in one line);
    the directory, or None when there was nothing to move."""
    names = entries_after(run_dir, step)
    best = read_best(run_dir)
    if best is not None and best["step"] > step:
        names += [name for name in (BEST_WEIGHTS, BEST_FILE) if os.path.exists(os.path.join(run_dir, name))]
    unfinished = dict(unfinished_moves(run_dir))
    destination = unfinished.pop(step, None)  # a move from this same step cut short by a kill: finish it there
    for _, superseded in unfinished.items():  # a move from another step: what it left is moved from here on
        os.remove(os.path.join(superseded, UNFINISHED_MOVE_FILE))
    if not names:
        if destination is not None:
            os.remove(os.path.join(destination, UNFINISHED_MOVE_FILE))
        return destination
    if destination is None:
        destination = _new_abandoned_dir(run_dir, step)
    metrics = os.path.join(run_dir, METRICS_FILE)
    kept_metrics = os.path.join(destination, METRICS_FILE)
    if os.path.exists(metrics) and not os.path.exists(kept_metrics):  # the run truncates its log to `step` next
        copy_file_atomically(metrics, kept_metrics)
    for name in sorted(names, key=lambda n: n != BEST_FILE):  # best.json first: never naming weights moved away
        os.replace(os.path.join(run_dir, name), os.path.join(destination, name))
    fsync_dir(run_dir)
    os.remove(os.path.join(destination, UNFINISHED_MOVE_FILE))
    more = f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else ""
    print(f"Resumed from an older state: moved what the abandoned attempt saved after step {step} "
          f"({', '.join(names[:MAX_NAMED])}{more}) and a copy of its {METRICS_FILE} to {quoted(destination)}",
          flush=True)
    return destination


def _new_abandoned_dir(run_dir: str, step: int) -> str:
    """A new abandoned-attempt directory holding the unfinished-move marker from the instant it has its name, so
    that resume=auto never takes a later state of the abandoned attempt for the newest of the current lineage."""
    destination = abandoned_dir(run_dir, step)
    tmp = temporary_path(destination)
    os.mkdir(tmp)
    write_synced(os.path.join(tmp, UNFINISHED_MOVE_FILE), lambda f: f.write(b""))
    os.replace(tmp, destination)
    fsync_dir(run_dir)
    return destination
