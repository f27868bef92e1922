"""What a finished run prints and draws: where everything is, the pictures, the test exact accuracy."""
import os

from rundir.layout import BEST_WEIGHTS, CURVES_FILE, METRICS_FILE, PREDICTIONS_PICTURE, outputs_path, weights_path
from rundir.states import safe_load
from training.config import PretrainConfig
from training.state import TrainState
from training.tta import TTA_METRIC, TTA_VALID_METRIC
from utils.cli import command_line, quoted

HEADLINE_METRICS = ("exact_accuracy", TTA_METRIC, TTA_VALID_METRIC)
PRINTED_NAMES = {"curves": "curves", "predictions": "pictures"}  # the report's words for draw_pictures' keys


def headline(results: dict) -> str:
    """One line of an evaluation: each set's exact (and TTA) accuracy, and every evaluator's pass@k."""
    parts = []
    for name, value in results.items():
        if isinstance(value, dict):
            parts += [f"{name}/{k} {value[k]:.4f}" for k in HEADLINE_METRICS if k in value]
        elif "pass@" in name:
            parts.append(f"{name} {value:.4f}")
    return "   ".join(parts) or "no metrics"


def report_run(config: PretrainConfig, state: TrainState, last_eval: dict | None,
               pictures: dict[str, str] | None = None) -> None:
    """Where everything is (`pictures`: those `draw_pictures` drew), the best checkpoint, and (last lines) the test
    exact accuracy."""
    run_dir = config.checkpoint_path
    weights = weights_path(run_dir, state.step)
    saved = os.path.exists(weights)
    print(f"checkpoint: {quoted(weights) if saved else 'none saved'}")
    if state.last_checkpoint:
        print(f"training state: {quoted(state.last_checkpoint)}")
    if state.best is not None:
        print(f"best: {quoted(os.path.join(run_dir, BEST_WEIGHTS))} (step {state.best['step']}, "
              f"{state.best['metric']} {state.best['value']:.4f})")
    print(f"metrics: {quoted(os.path.join(run_dir, METRICS_FILE))}")
    if saved:  # the next command, ready to paste (paths quoted: the published run name has a space)
        print(f"evaluate: {command_line('evaluate.py', checkpoint=weights)}")
    trained = min(state.step, state.total_steps)
    estimate = "" if trained == state.total_steps else f" (the lr schedule's estimate, by the published formula: " \
                                                       f"{state.total_steps})"
    print(f"steps: {trained}{estimate}")
    for name, path in (pictures or {}).items():
        print(f"{PRINTED_NAMES[name]}: {quoted(path)}")
    results = last_eval or {}
    for name, value in results.items():
        if not isinstance(value, dict) and "pass@" in name:
            print(f"{name}: {value:.4f}")
    sets = {name: m for name, m in results.items() if isinstance(m, dict) and "exact_accuracy" in m}
    for metric in (TTA_VALID_METRIC, TTA_METRIC, "exact_accuracy"):  # the published one last
        scored = {name: m[metric] for name, m in sets.items() if metric in m}
        if not scored:
            continue
        if len(scored) > 1:
            for name, value in scored.items():
                print(f"{name} {metric}: {value:.4f}")
        print(f"test {metric}: {sum(scored.values()) / len(scored):.4f}")


def draw_pictures(config: PretrainConfig, step: int) -> dict[str, str]:
    """Training curves, and the last evaluation's predictions when they were saved (eval_save_outputs):
    `{"curves": path, "predictions": path}`."""
    from viz.curves import plot_curves
    from viz.puzzles import render_predictions

    run_dir = config.checkpoint_path
    pictures = {"curves": plot_curves(os.path.join(run_dir, METRICS_FILE), os.path.join(run_dir, CURVES_FILE))}
    outputs_file = outputs_path(run_dir, step)
    if os.path.exists(outputs_file):
        outputs = safe_load(outputs_file, what="saved outputs",
                            fix="Write it again with evaluate.py and eval_save_outputs set.")
        data_dir = (config.data_paths_test or config.data_paths)[0]
        pictures["predictions"] = render_predictions(data_dir, outputs, os.path.join(run_dir, PREDICTIONS_PICTURE))
    return pictures
