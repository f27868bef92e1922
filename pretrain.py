"""Train a recursive reasoning model: `python pretrain.py arch=trm data_paths="[data/...]" ...`.

Also under torchrun: `torchrun --nproc-per-node N pretrain.py ...`. The configuration is
`config/cfg_pretrain.yaml` plus Hydra overrides; see the README for the paper's commands.
"""
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from utils.config import parse_config
from utils.errors import UserFacingError


def run(raw_config: dict) -> dict | None:
    config = parse_config(raw_config)  # every key checked before the training code (and any data) is loaded
    from training.loop import train
    from utils.distributed import destroy_distributed, init_distributed

    ctx = init_distributed(config.device)
    try:
        return train(config, ctx)
    finally:
        destroy_distributed(ctx)


@hydra.main(config_path="config", config_name="cfg_pretrain", version_base="1.3")
def main(hydra_config: DictConfig) -> None:
    try:
        run(OmegaConf.to_container(hydra_config, resolve=True))
    except (UserFacingError, FileNotFoundError) as err:
        # Mistakes in the command line, missing data, unusable checkpoints, divergence: say what to fix.
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
