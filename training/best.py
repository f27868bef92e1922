"""The best checkpoint of a run: after each evaluation, `checkpoint_best_metric` decides (README "The best
checkpoint"). The last step is often not the best one (on ARC-AGI-2 an earlier step can score several
times the last one), so the run keeps the evaluated weights of its best evaluation as `step_best` and
says which step that was in `best.json`; both are written as one unit (rundir/best.py), and pruning never
touches them.
"""
import math

import torch
from torch import nn

from models.weights import uncompiled
from rundir.best import commit_best, read_best
from training.config import PretrainConfig
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
    state_dict = uncompiled(eval_model).state_dict()  # published key names, as save_model_weights writes them
    return commit_best(config.checkpoint_path, {"step": step, "metric": metric, "value": value, "mode": mode},
                       lambda f: torch.save(state_dict, f), previous=best)
