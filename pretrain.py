"""Train a recursive reasoning model: `python pretrain.py arch=trm data_paths="[data/...]" ...`.

Also under torchrun: `torchrun --nproc-per-node N pretrain.py ...`. The configuration is
`config/cfg_pretrain.yaml` plus Hydra overrides; see the README for the paper's commands.
"""
import hydra
from omegaconf import DictConfig, OmegaConf

from utils.cli import exit_with_message
from utils.config import parse_config
from utils.errors import UserFacingError


def run(raw_config: dict) -> dict | None:
    config = parse_config(raw_config)  # every key checked before the training code (and any data) is loaded
    from training.loop import train
    from utils.distributed import collective_error, destroy_distributed, init_distributed

    ctx = init_distributed(config.device, timeout_s=config.dist_timeout_s)
    try:
        return train(config, ctx)
    except RuntimeError as err:  # a collective outside utils/distributed.py (e.g. the sparse optimizer's) stalled
        converted = collective_error(err, ctx)
        if converted is None:
            raise
        raise converted from None
    finally:
        destroy_distributed(ctx)


@hydra.main(config_path="config", config_name="cfg_pretrain", version_base="1.3")
def main(hydra_config: DictConfig) -> None:
    try:
        run(OmegaConf.to_container(hydra_config, resolve=True))
    except (UserFacingError, FileNotFoundError) as err:
        # Mistakes in the command line, missing data, unusable checkpoints, divergence: say what to fix, once.
        exit_with_message(err)


if __name__ == "__main__":
    main()
