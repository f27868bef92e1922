"""What a finished run prints and draws: where everything is, the pictures, the test exact accuracy."""
import os

import torch

from training.state import TrainState
from utils.config import PretrainConfig
from utils.run_files import CURVES_FILE, METRICS_FILE, PREDICTIONS_PICTURE, outputs_path


def report_run(config: PretrainConfig, state: TrainState, last_eval: dict | None) -> None:
    """Where everything is, and (last line) the test exact accuracy."""
    run_dir = config.checkpoint_path
    print(f"checkpoint: {state.last_checkpoint or 'none saved'}")
    print(f"metrics: {os.path.join(run_dir, METRICS_FILE)}")
    if config.pictures:
        for line in draw_pictures(config, state.step):
            print(line)
    sets = {name: m for name, m in (last_eval or {}).items() if isinstance(m, dict) and "exact_accuracy" in m}
    if sets:
        for name, m in sets.items():
            if len(sets) > 1:
                print(f"{name} exact_accuracy: {m['exact_accuracy']:.4f}")
        print(f"test exact_accuracy: {sum(m['exact_accuracy'] for m in sets.values()) / len(sets):.4f}")


def draw_pictures(config: PretrainConfig, step: int) -> list[str]:
    """Training curves, and the last evaluation's predictions when they were saved (eval_save_outputs)."""
    from viz.curves import plot_curves
    from viz.puzzles import render_predictions

    run_dir = config.checkpoint_path
    lines = [f"curves: {plot_curves(os.path.join(run_dir, METRICS_FILE), os.path.join(run_dir, CURVES_FILE))}"]
    outputs_file = outputs_path(run_dir, step)
    if os.path.exists(outputs_file):
        outputs = torch.load(outputs_file, weights_only=True)
        data_dir = (config.data_paths_test or config.data_paths)[0]
        picture = render_predictions(data_dir, outputs, os.path.join(run_dir, PREDICTIONS_PICTURE))
        lines.append(f"pictures: {picture}")
    return lines
