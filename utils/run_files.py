"""What a run directory holds, by name: the one place that spells these file names.

    all_config.yaml            the resolved training configuration
    metrics.jsonl              one JSON line per logged step (train/*, <set>/*, evaluator metrics)
    step_N                     weights of the evaluated model (EMA weights with ema=True)
    step_best, best.json       the weights of the best evaluation and its step, metric and value
    train_state_step_N/        the full, resumable training state (utils/checkpoint.py)
    step_N_all_preds.R         outputs an evaluation saved on rank R (eval_save_outputs)
    evaluator_<NAME>_step_N/   what an evaluator wrote (e.g. the ARC submission.json)
    run.lock                   held by the run using the directory (utils/run_lock.py)
    wandb_id                   the wandb run id, reused when the run resumes
"""
import os
import re

CONFIG_FILE = "all_config.yaml"
METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
PREDICTIONS_PICTURE = "predictions.html"
WEIGHTS_FILE = re.compile(r"step_(\d+)")
BEST_WEIGHTS = "step_best"
BEST_FILE = "best.json"
OUTPUTS_FILE = re.compile(r"step_(\d+)_all_preds\.(\d+)")


def weights_path(run_dir: str, step: int) -> str:
    return os.path.join(run_dir, f"step_{step}")


def outputs_path(run_dir: str, step: int, rank: int = 0) -> str:
    return os.path.join(run_dir, f"step_{step}_all_preds.{rank}")


def evaluator_dir(run_dir: str, evaluator_name: str, step: int) -> str:
    return os.path.join(run_dir, f"evaluator_{evaluator_name}_step_{step}")


def weight_steps(run_dir: str) -> list[int]:
    """Steps N of the `step_N` weight files in `run_dir`, ascending."""
    return sorted(int(m.group(1)) for name in os.listdir(run_dir) if (m := WEIGHTS_FILE.fullmatch(name)))
