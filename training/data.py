"""Data for a run: loaders over the configured dataset paths, and generated data on first use."""
import os

import torch

from dataset.common import PuzzleDatasetMetadata
from dataset.puzzle_dataset import PuzzleDataset, PuzzleDatasetConfig, make_dataloader
from training.config import PretrainConfig
from utils.distributed import DistContext, barrier
from utils.errors import ConfigError


def split_paths(config: PretrainConfig, split: str) -> list[str]:
    """The dataset directories of a split: `data_paths_test` for the test split when given, else `data_paths`."""
    return config.data_paths_test if split == "test" and config.data_paths_test else config.data_paths


def create_dataloader(paths: list[str], split: str, ctx: DistContext, *, seed: int, global_batch_size: int,
                      epochs_per_iter: int = 1, num_workers: int = 1):
    """(loader, metadata) for `split` of `paths`: training batches packed by group, or the test examples in order."""
    dataset = PuzzleDataset(PuzzleDatasetConfig(seed=seed, dataset_paths=paths, rank=ctx.rank,
                                                num_replicas=ctx.world_size, test_set_mode=split == "test",
                                                epochs_per_iter=epochs_per_iter, global_batch_size=global_batch_size),
                            split=split)
    return make_dataloader(dataset, ctx.device.type, num_workers=num_workers), dataset.metadata


def check_batch_fits(config: PretrainConfig, metadata: PuzzleDatasetMetadata) -> None:
    """Refuse, before anything is built, a global batch larger than what one loader iteration draws: a batch never
    spans iterations, so not one step would train (and evaluation would pad to that size)."""
    per_epoch = metadata.total_groups * metadata.mean_puzzle_examples
    per_iter = per_epoch * config.epochs_per_iter
    if config.global_batch_size > per_iter:
        raise ConfigError(f"global_batch_size={config.global_batch_size} is larger than the training data: "
                          f"{config.data_paths} hold {per_epoch:.0f} training examples per epoch "
                          f"({metadata.total_groups} groups x {metadata.mean_puzzle_examples:.3g} examples), "
                          f"{per_iter:.0f} in one iteration of {config.epochs_per_iter} epochs (eval_interval), and "
                          "a batch never spans iterations, so not one step would train: set global_batch_size to at "
                          f"most {int(per_iter)}, or raise eval_interval, or train on more data.")


def has_split(paths: list[str], split: str) -> bool:
    return all(os.path.isfile(os.path.join(p, split, "dataset.json")) for p in paths)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def ensure_dataset(config: PretrainConfig, ctx: DistContext) -> None:
    """`generate_if_missing`: build data_paths[0] with the offline generators on first use."""
    spec, path = config.generate_if_missing, config.data_paths[0]
    if spec is None or os.path.exists(path):
        return
    if ctx.is_main:
        from dataset.generated import build_generated_dataset
        print(f"{path} does not exist yet: generating a {spec.kind} dataset there (once).")
        build_generated_dataset(path, **spec.model_dump())
    barrier(ctx)
