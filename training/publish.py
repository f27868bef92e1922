"""What a finished run leaves besides its metrics: the pictures (`pictures`), sent to wandb as media, and the final
weights as a wandb artifact (`wandb_log_weights`). Rank 0, before the wandb run closes."""
import os

from tqdm import tqdm

from rundir.layout import weights_name, weights_path
from rundir.metrics import RunLogger
from training.config import PretrainConfig
from training.report import draw_pictures
from training.state import TrainState
from utils.cli import quoted

PICTURES_SECTION = "pictures"  # wandb keys pictures/curves, pictures/predictions: one panel section


def publish_run(config: PretrainConfig, state: TrainState, logger: RunLogger) -> dict[str, str]:
    """Draw the pictures (with `pictures: true`) and send them to wandb at the last step, then the final weights
    (with `wandb_log_weights`); returns the pictures drawn, `{"curves": path, "predictions": path}`."""
    pictures = draw_pictures(config, state.step) if config.pictures else {}
    logger.log_pictures({f"{PICTURES_SECTION}/{name}": path for name, path in pictures.items()}, step=state.step)
    if config.wandb_log_weights:
        publish_weights(config, state.step, logger)
    return pictures


def publish_weights(config: PretrainConfig, step: int, logger: RunLogger) -> None:
    """The final `step_N` weights as a wandb model artifact; says so when there is none to send."""
    weights = weights_path(config.checkpoint_path, step)
    # tqdm.write: the progress bar is still open
    if logger.wandb_mode == "disabled":
        tqdm.write("wandb_log_weights: wandb is disabled (wandb_mode or WANDB_MODE), so no weights artifact was "
                   "logged; the weights stay in the run directory")
    elif not os.path.exists(weights):
        tqdm.write(f"wandb_log_weights: no weights {quoted(weights)} were saved at the last step, so no weights "
                   "artifact was logged")
    else:
        name = logger.log_weights(weights, step=step)
        tqdm.write(f"wandb: logged the weights {quoted(weights)} as the model artifact {name!r} "
                   f"(aliases latest, {weights_name(step)})")
