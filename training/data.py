"""Data for a run: loaders over the configured dataset paths, and generated data on first use."""
import os

import torch

from dataset.puzzle_dataset import PuzzleDataset, PuzzleDatasetConfig, make_dataloader
from training.config import PretrainConfig
from utils.distributed import DistContext, barrier


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
