"""Data for a run: loaders over the configured dataset paths, generated data on first use, and a watch on the
dataset files for a rebuild under the running job."""
import math
import os
import time

import numpy as np
import torch

from dataset.common import PuzzleDatasetMetadata, array_path, load_metadata, split_dir
from dataset.puzzle_dataset import PuzzleDataset, PuzzleDatasetConfig, make_dataloader
from training.config import PretrainConfig
from utils.atomic import make_dirs
from utils.dir_lock import directory_locked
from utils.distributed import DistContext, barrier
from utils.errors import ConfigError


def split_paths(config: PretrainConfig, split: str) -> list[str]:
    """The dataset directories of a split: `data_paths_test` for the test split when given, else `data_paths`."""
    return config.data_paths_test if split == "test" and config.data_paths_test else config.data_paths


def create_dataloader(paths: list[str], split: str, ctx: DistContext, *, seed: int, global_batch_size: int,
                      epochs_per_iter: int = 1, num_workers: int = 1, max_examples: int | None = None):
    """(loader, metadata) for `split` of `paths`: training batches packed by group, or the test examples in order
    (with `max_examples`, the first of each test set, in whole groups)."""
    dataset = PuzzleDataset(PuzzleDatasetConfig(seed=seed, dataset_paths=paths, rank=ctx.rank,
                                                num_replicas=ctx.world_size, test_set_mode=split == "test",
                                                epochs_per_iter=epochs_per_iter, global_batch_size=global_batch_size,
                                                max_examples=max_examples),
                            split=split)
    return make_dataloader(dataset, ctx.device.type, num_workers=num_workers), dataset.metadata


def fewest_examples_per_epoch(paths: list[str], split: str = "train") -> int:
    """What one epoch of the largest set surely draws: per group one puzzle, counted at its smallest. The loader
    iterates each set of each path on its own, and a batch never spans them (the published estimate, groups x
    mean examples per puzzle, can be above this when groups hold different numbers of puzzles)."""
    most = 0
    for path in paths:
        for set_name in load_metadata(path, split).sets:
            puzzles, groups = (np.load(array_path(path, split, set_name, field), mmap_mode="r")
                               for field in ("puzzle_indices", "group_indices"))
            if groups.size > 1:
                most = max(most, int(np.minimum.reduceat(np.diff(puzzles), groups[:-1]).sum()))
    return most


def check_batch_fits(config: PretrainConfig, metadata: PuzzleDatasetMetadata) -> None:
    """Refuse, before anything is built, settings under which not one step would train: a global batch larger than
    what one loader iteration (eval_interval epochs) surely draws, since a batch never spans iterations."""
    per_epoch = fewest_examples_per_epoch(config.data_paths)
    per_iter = per_epoch * config.epochs_per_iter
    if config.global_batch_size > per_iter:
        needed = -(-config.global_batch_size // max(1, per_epoch))
        longer = (f"epochs={needed}" if config.eval_interval is None
                  else f"eval_interval={needed} (epochs a multiple of it)")
        raise ConfigError(
            f"global_batch_size={config.global_batch_size} is larger than the training data: {config.data_paths} "
            f"draw {per_epoch} training examples per epoch (one puzzle of each group), {per_iter} in one iteration "
            f"of {config.epochs_per_iter} epochs, and a batch never spans iterations, so not one step would train: "
            f"set global_batch_size to at most {per_iter}, or {longer} or more, or train on more data.")
    check_schedule_has_steps(config, metadata)


def estimated_total_steps(config: PretrainConfig, metadata: PuzzleDatasetMetadata) -> int:
    """The published estimate, which the schedule uses: epochs x groups x mean examples per puzzle / batch."""
    return int(config.epochs * metadata.total_groups * metadata.mean_puzzle_examples / config.global_batch_size)


def check_schedule_has_steps(config: PretrainConfig, metadata: PuzzleDatasetMetadata) -> None:
    """Refuse a schedule of 0 steps: its length is the published estimate, and the published loop trains no batch
    past it, so a batch drawn would not train either (the estimate can be below what is drawn)."""
    if estimated_total_steps(config, metadata) >= 1:
        return
    per_epoch, batch = metadata.total_groups * metadata.mean_puzzle_examples, config.global_batch_size
    epochs = math.ceil(batch / per_epoch) if per_epoch > 0 else 1
    while int(epochs * per_epoch / batch) < 1:  # the estimate's own float rounding
        epochs += 1
    raise ConfigError(
        f"The lr schedule's length is 0 steps: the published estimate (epochs={config.epochs} x "
        f"{metadata.total_groups} groups x {metadata.mean_puzzle_examples:.3g} examples per puzzle / "
        f"global_batch_size={batch}) rounds down to 0, and no batch past it trains: set epochs={epochs} or more "
        f"(eval_interval dividing it), or global_batch_size={int(config.epochs * per_epoch)} or less.")


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
        parent = os.path.dirname(os.path.abspath(path))
        make_dirs(parent)
        # Jobs of a sweep side by side would each build it, and a second build would replace the first under the
        # job already reading it: one builds, the others wait and then find it there.
        with directory_locked(parent):
            if not os.path.exists(path):
                what = ("an ARC dataset of the shipped ConceptARC tasks" if spec.kind == "arc"
                        else f"a {spec.kind} dataset")
                print(f"{path} does not exist yet: generating {what} there (once).")
                build_generated_dataset(path, **spec.model_dump())
    barrier(ctx)


FileIdentity = tuple[int, int, int, int]  # device, inode, size, modification time (ns)


class DatasetWatch:
    """The identity of every file of the run's datasets (each path and its train/test splits), recorded at start.

    A rebuild publishes a new directory in place (new inodes), an edit changes sizes or times: either way the
    loaders' open arrays (memory-mapped or read) still hold the data the run started on, so the run can save,
    but the next evaluation would open the new files. `changed()` is a few stats, at most every `interval_s`.
    """

    def __init__(self, paths: list[str], interval_s: float = 1.0):
        self.paths = list(dict.fromkeys(paths))
        self.interval_s = interval_s
        self.identity = self._identity()
        self._next_check = time.monotonic() + interval_s

    def _identity(self) -> dict[str, FileIdentity]:
        found = {}
        for directory in (d for path in self.paths for d in (path, split_dir(path, "train"), split_dir(path, "test"))):
            if not os.path.isdir(directory):
                continue
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.is_file():
                        st = entry.stat()
                        found[entry.path] = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        return found

    def changed(self, now: bool = False) -> str | None:
        """The first file that changed, appeared or went since the start; None when none did (or not checked yet:
        without `now`, the files are looked at once per `interval_s`)."""
        if not now and time.monotonic() < self._next_check:
            return None
        self._next_check = time.monotonic() + self.interval_s
        current = self._identity()
        return next((path for path in sorted(self.identity.keys() | current.keys())
                     if self.identity.get(path) != current.get(path)), None)
