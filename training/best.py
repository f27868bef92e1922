"""The best checkpoint of a run: after each evaluation, `checkpoint_best_metric` decides (README "The best
checkpoint"). The last step is often not the best one (on ARC-AGI-2 an earlier step can score several
times the last one), so the run keeps the evaluated weights of its best evaluation as `step_best` and
says which step that was in `best.json`; both are written atomically, and pruning never touches them.
"""
import json
import math
import os

from torch import nn

from rundir.layout import BEST_FILE, BEST_WEIGHTS
from rundir.states import read_best
from training.checkpointing import save_model_weights
from training.config import PretrainConfig
from utils.atomic import write_atomically
from utils.errors import ConfigError


def best_on_resume(run_dir: str, step: int) -> dict | None:
    """The best so far for a run resumed at `step`: a best recorded later belongs to a superseded attempt."""
    best = read_best(run_dir)
    return best if best is not None and best["step"] <= step else None


def improves(value: float, best: dict | None, mode: str) -> bool:
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best["value"] if mode == "max" else value < best["value"]


def metric_value(flat_metrics: dict, metric: str) -> float:
    if metric not in flat_metrics:
        raise ConfigError(f"checkpoint_best_metric={metric!r} is not among this run's evaluation metrics: "
                          f"{', '.join(sorted(flat_metrics))}.")
    return float(flat_metrics[metric])


def update_best(config: PretrainConfig, flat_metrics: dict, step: int, eval_model: nn.Module,
                best: dict | None) -> dict | None:
    """Rank 0, after an evaluation: the new best (weights and best.json written) if it improved, else `best`."""
    metric, mode = config.checkpoint_best_metric, config.checkpoint_best_mode
    value = metric_value(flat_metrics, metric)
    if not improves(value, best, mode):
        return best
    run_dir = config.checkpoint_path
    save_model_weights(os.path.join(run_dir, BEST_WEIGHTS), eval_model)
    best = {"step": step, "metric": metric, "value": value, "mode": mode}
    write_atomically(os.path.join(run_dir, BEST_FILE), lambda f: json.dump(best, f, indent=1), mode="w")
    return best
