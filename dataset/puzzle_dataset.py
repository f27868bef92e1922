"""Batch loader for built puzzle datasets (docs/loader.md).

Train mode packs batches group by group from a seeded shuffle; test mode walks every
example once in order. Each rank of a data-parallel run gets its contiguous slice of the
same global batch, so all ranks agree on the batch without communicating.
"""
from __future__ import annotations

import atexit
import multiprocessing.util  # noqa: F401  (its exit handler must be registered before ours)
import signal
import weakref
from typing import Iterator, Optional

import numpy as np
import pydantic
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from dataset.common import IGNORE_LABEL_ID, PuzzleDatasetMetadata, array_path, load_metadata
from dataset.validation import open_set, validate_split
from utils.errors import DatasetError

# Fields that every merged dataset path must agree on (else batches would be incompatible).
_MATCHING_FIELDS = ("seq_len", "vocab_size", "pad_id", "ignore_label_id", "blank_identifier_id", "sets")


class PuzzleDatasetConfig(pydantic.BaseModel):
    """Loader settings; `rank`/`num_replicas` describe this process in data parallelism."""

    seed: int
    dataset_paths: list[str]
    global_batch_size: int
    test_set_mode: bool
    epochs_per_iter: int
    rank: int
    num_replicas: int
    max_examples: int | None = None  # test mode: the first N examples of each set, rounded up to whole groups


def capped_size(puzzle_indices: np.ndarray, group_indices: np.ndarray, max_examples: int | None) -> int:
    """Examples in the whole groups that hold the first `max_examples` examples (all of them when None).

    Whole groups: a group is one puzzle with its augmented versions, and voting evaluators (ARC) need every
    version of a puzzle to score it."""
    total = int(puzzle_indices[-1])
    if max_examples is None or max_examples >= total:
        return total
    group_starts = puzzle_indices[group_indices]  # example offset of each group boundary, the last one = total
    return int(group_starts[np.searchsorted(group_starts, max_examples, side="left")])


Batch = dict[str, torch.Tensor]


def exposed_set_name(set_name: str, path_index: int) -> str:
    """Name under which set `set_name` of dataset path `path_index` is exposed ("all", "all1", ...)."""
    return set_name if path_index == 0 else f"{set_name}{path_index}"


def merge_metadata(dataset_paths: list[str], split: str) -> PuzzleDatasetMetadata:
    """Combine the metadata of several dataset paths into one (docs/loader.md).

    Totals are summed, `mean_puzzle_examples` is the puzzle-weighted mean, and `sets`
    lists the exposed set names in iteration order (set-major, then path).
    """
    if not dataset_paths:
        raise DatasetError("PuzzleDatasetConfig.dataset_paths is empty; give at least one built dataset directory.")
    metas = [load_metadata(path, split) for path in dataset_paths]
    first = metas[0]
    for path, meta in zip(dataset_paths[1:], metas[1:]):
        for field in _MATCHING_FIELDS:
            if getattr(meta, field) != getattr(first, field):
                raise DatasetError(
                    f"Cannot merge datasets {dataset_paths[0]!r} and {path!r}: field {field!r} differs "
                    f"({getattr(first, field)!r} vs {getattr(meta, field)!r}); use datasets built with the same format."
                )
    total_puzzles = sum(m.total_puzzles for m in metas)
    weighted_examples = sum(m.mean_puzzle_examples * m.total_puzzles for m in metas)
    return PuzzleDatasetMetadata(
        pad_id=first.pad_id,
        ignore_label_id=first.ignore_label_id,
        blank_identifier_id=first.blank_identifier_id,
        vocab_size=first.vocab_size,
        seq_len=first.seq_len,
        num_puzzle_identifiers=sum(m.num_puzzle_identifiers for m in metas),
        total_groups=sum(m.total_groups for m in metas),
        mean_puzzle_examples=weighted_examples / total_puzzles if total_puzzles > 0 else 0.0,
        total_puzzles=total_puzzles,
        sets=[exposed_set_name(s, i) for s in first.sets for i in range(len(dataset_paths))],
    )


def sample_train_batch(
    rng: np.random.Generator,
    group_order: np.ndarray,
    puzzle_indices: np.ndarray,
    group_indices: np.ndarray,
    start_index: int,
    global_batch_size: int,
) -> tuple[int, np.ndarray, np.ndarray]:
    """Pack one global batch from `group_order[start_index:]`.

    Per group: one puzzle uniformly, then up to the remaining room of its examples without
    replacement. The draw order (integers, then choice, per group) fixes the sequence of
    batches for a seed. Returns (next start index, example indices, puzzle indices).
    """
    example_parts = []
    puzzle_parts = []
    current_size = 0
    while start_index < group_order.size and current_size < global_batch_size:
        group_id = group_order[start_index]
        puzzle_id = rng.integers(group_indices[group_id], group_indices[group_id + 1])
        start_index += 1

        puzzle_start = puzzle_indices[puzzle_id]
        puzzle_size = int(puzzle_indices[puzzle_id + 1] - puzzle_start)
        append_size = min(puzzle_size, global_batch_size - current_size)

        # Ours: the seeded generator, not numpy's global RNG as in the published code.
        example_parts.append(puzzle_start + rng.choice(puzzle_size, append_size, replace=False))
        puzzle_parts.append(np.full(append_size, puzzle_id, dtype=np.int64))
        current_size += append_size

    if not example_parts:
        return start_index, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return start_index, np.concatenate(example_parts), np.concatenate(puzzle_parts)


class PuzzleDataset(IterableDataset):
    """Iterable over `(set_name, batch, global_effective_batch_size)`.

    `batch` holds int32 tensors `inputs` (B, seq_len), `labels` (B, seq_len) and
    `puzzle_identifiers` (B,), with B the local (per-rank) batch size. The iteration
    position (`_iters`) lives on the dataset, so it must be iterated by at most one worker.
    """

    def __init__(self, config: PuzzleDatasetConfig, split: str = "train"):
        super().__init__()
        self.config = config
        self.split = split
        self._check_config(config)
        self.local_batch_size = config.global_batch_size // config.num_replicas
        self.metadata = merge_metadata(config.dataset_paths, split)
        # Each path's own metadata: its set names find the files, its sizes bound the values.
        self._path_metadata = [load_metadata(path, split) for path in config.dataset_paths]
        self._source_sets = self._path_metadata[0].sets
        # Validate every file now (not at the first batch): a bad dataset stops the caller before it
        # creates anything, with a message naming the file (dataset/validation.py).
        for path, meta in zip(config.dataset_paths, self._path_metadata):
            validate_split(path, split, meta)
        if config.test_set_mode:  # rows past the largest test set would be padding only (a huge batch: GBs of it)
            largest = max(self._test_set_sizes(), default=0)
            self.local_batch_size = min(self.local_batch_size, max(1, -(-largest // config.num_replicas)))
        self.global_batch_size = self.local_batch_size * config.num_replicas  # of test batches, maybe cut
        self._data: Optional[dict[str, dict[str, np.ndarray]]] = None
        self._iters = 0
        self._skip_batches = 0  # train batches to pass over at the next iteration (resume mid-iteration)

    @staticmethod
    def _check_config(config: PuzzleDatasetConfig) -> None:
        """Reject settings that would silently produce wrong or empty batches."""
        if config.num_replicas < 1 or not (0 <= config.rank < config.num_replicas):
            raise ValueError(
                f"Invalid data-parallel setup rank={config.rank}, num_replicas={config.num_replicas}; "
                f"need num_replicas >= 1 and 0 <= rank < num_replicas."
            )
        if config.global_batch_size < 1 or config.global_batch_size % config.num_replicas != 0:
            raise ValueError(
                f"global_batch_size={config.global_batch_size} must be a positive multiple of "
                f"num_replicas={config.num_replicas}; change global_batch_size or the number of processes."
            )
        if config.epochs_per_iter < 1:
            raise ValueError(f"epochs_per_iter={config.epochs_per_iter} must be >= 1.")

    # ---- position state -------------------------------------------------------------

    def state_dict(self) -> dict[str, int]:
        """Loader position; restoring it replays the same future group orders."""
        return {"iters": self._iters, "skip_batches": self._skip_batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore a position: `iters` sets already started, and batches of the next iteration already consumed.

        Set it before the DataLoader's first iteration: a persistent worker copies the dataset then.
        """
        if "iters" not in state:
            raise ValueError("PuzzleDataset.load_state_dict: expected a dict with key 'iters', "
                             f"got keys {list(state)}.")
        self._iters = int(state["iters"])
        self._skip_batches = int(state.get("skip_batches", 0))

    # ---- loading --------------------------------------------------------------------

    def _lazy_load(self) -> dict[str, dict[str, np.ndarray]]:
        """Open the arrays on first iteration (in the worker process, not the parent)."""
        if self._data is None:
            data = {}
            for set_name in self._source_sets:
                for i, (path, meta) in enumerate(zip(self.config.dataset_paths, self._path_metadata)):
                    # Validated in the constructor; here only the cheap checks (the files could have changed).
                    data[exposed_set_name(set_name, i)] = open_set(path, self.split, set_name, meta, scan_values=False)
            self._data = data
        return self._data

    def _collate(self, inputs: np.ndarray, labels: np.ndarray, puzzle_identifiers: np.ndarray) -> Batch:
        """int32 tensors, ignore label mapped to -100, short batches padded to the local size."""
        batch = {
            "inputs": inputs.astype(np.int32),
            "labels": labels.astype(np.int32),
            "puzzle_identifiers": puzzle_identifiers.astype(np.int32),
        }
        if self.metadata.ignore_label_id is not None:
            batch["labels"][batch["labels"] == self.metadata.ignore_label_id] = IGNORE_LABEL_ID

        pad_size = self.local_batch_size - batch["puzzle_identifiers"].shape[0]
        if pad_size > 0:
            pad_values = {
                "inputs": self.metadata.pad_id,
                "labels": IGNORE_LABEL_ID,
                "puzzle_identifiers": self.metadata.blank_identifier_id,
            }
            batch = {
                k: np.pad(v, ((0, pad_size),) + ((0, 0),) * (v.ndim - 1), constant_values=pad_values[k])
                for k, v in batch.items()
            }
        return {k: torch.from_numpy(v) for k, v in batch.items()}

    # ---- iteration ------------------------------------------------------------------

    def _iter_train(self) -> Iterator[tuple[str, Batch, int]]:
        """One pass of `epochs_per_iter` epochs per set; the last short batch is dropped."""
        cfg = self.config
        for set_name, arrays in self._lazy_load().items():
            self._iters += 1
            rng = np.random.Generator(np.random.Philox(seed=cfg.seed + self._iters))
            num_groups = arrays["group_indices"].size - 1
            group_order = np.concatenate([rng.permutation(num_groups) for _ in range(cfg.epochs_per_iter)])

            start_index = 0
            while start_index < group_order.size:
                start_index, example_ids, puzzle_ids = sample_train_batch(
                    rng, group_order, arrays["puzzle_indices"], arrays["group_indices"], start_index,
                    cfg.global_batch_size
                )
                global_effective_batch_size = puzzle_ids.size
                if global_effective_batch_size < cfg.global_batch_size:
                    break
                if self._skip_batches > 0:  # consumed before a resume: same draws, no collation
                    self._skip_batches -= 1
                    continue

                lo, hi = cfg.rank * self.local_batch_size, (cfg.rank + 1) * self.local_batch_size
                example_ids, puzzle_ids = example_ids[lo:hi], puzzle_ids[lo:hi]
                batch = self._collate(
                    arrays["inputs"][example_ids],
                    arrays["labels"][example_ids],
                    arrays["puzzle_identifiers"][puzzle_ids],
                )
                yield set_name, batch, global_effective_batch_size

    def _test_set_sizes(self) -> list[int]:
        """Examples each set of each dataset path evaluates: all (from the .npy headers), or those `max_examples`
        keeps."""
        if self.config.max_examples is not None:
            return [used for used, _, _, _ in self._coverage()]
        return [np.load(array_path(path, self.split, set_name, "inputs"), mmap_mode="r").shape[0]
                for set_name in self._source_sets for path in self.config.dataset_paths]

    def _coverage(self) -> list[tuple[int, int, int, int]]:
        """Per set of each path: (examples evaluated, examples, groups evaluated, groups) under `max_examples`."""
        found = []
        for set_name in self._source_sets:
            for path in self.config.dataset_paths:
                puzzles, groups = (np.load(array_path(path, self.split, set_name, field))
                                   for field in ("puzzle_indices", "group_indices"))
                used = capped_size(puzzles, groups, self.config.max_examples)
                found.append((used, int(puzzles[-1]), int(np.searchsorted(puzzles[groups], used)), groups.size - 1))
        return found

    def cap_summary(self) -> str | None:
        """With `max_examples`: how much of the test split an evaluation runs, for its report."""
        if self.config.max_examples is None:
            return None
        used, total, used_groups, groups = (sum(column) for column in zip(*self._coverage()))
        return (f"max_eval_examples={self.config.max_examples}: evaluating {used} of {total} test examples, "
                f"whole groups ({used_groups} of {groups} groups, each a puzzle with its augmented versions)")

    def num_test_batches(self) -> int:
        """Batches the test split yields (every set's examples in global batches); for progress bars."""
        return sum(-(-examples // self.global_batch_size) for examples in self._test_set_sizes())

    def _iter_test(self) -> Iterator[tuple[str, Batch, int]]:
        """Every example exactly once, in order; the final global batch may be short."""
        cfg = self.config
        for set_name, arrays in self._lazy_load().items():
            total_examples = capped_size(arrays["puzzle_indices"], arrays["group_indices"], cfg.max_examples)
            for start in range(0, total_examples, self.global_batch_size):
                end = min(total_examples, start + self.global_batch_size)
                local_start = start + cfg.rank * self.local_batch_size
                local_end = min(start + (cfg.rank + 1) * self.local_batch_size, end)
                # A rank past the end of a short batch has local_start >= local_end: its
                # slices are empty and the collate pads the whole local batch.
                example_ids = np.arange(local_start, local_end)
                puzzle_ids = np.searchsorted(arrays["puzzle_indices"], example_ids, side="right") - 1
                batch = self._collate(
                    arrays["inputs"][local_start:local_end],
                    arrays["labels"][local_start:local_end],
                    arrays["puzzle_identifiers"][puzzle_ids],
                )
                yield set_name, batch, end - start

    def __iter__(self) -> Iterator[tuple[str, Batch, int]]:
        worker_info = get_worker_info()
        if worker_info is not None and worker_info.num_workers != 1:
            raise RuntimeError(
                f"PuzzleDataset must be loaded by at most one DataLoader worker (got num_workers="
                f"{worker_info.num_workers}): its iteration position lives in the dataset. Use num_workers=0 or 1."
            )
        if self.config.test_set_mode:
            yield from self._iter_test()
        else:
            yield from self._iter_train()


def _quiet_worker_signals(_worker_id: int) -> None:
    """The worker ignores SIGTERM and SIGINT: a scheduler (or torchrun, or Ctrl-C) signals the whole process
    group, and the trainer must be able to finish its step, on every rank alike, and save a checkpoint
    before the loader goes away. The worker ends when its loader is shut down (`shutdown_loader`, also run
    at exit for every loader still open) or with the trainer (its parent-alive watchdog)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


_OPEN_LOADERS: "weakref.WeakSet[DataLoader]" = weakref.WeakSet()


def shutdown_loader(loader: DataLoader) -> None:
    """Stop a loader's persistent worker now and wait for it.

    Needed because the worker ignores SIGTERM: at interpreter exit, multiprocessing stops the daemonic
    processes still running with SIGTERM and then waits for them, forever for this worker, whenever the
    loader had not been freed yet (e.g. held in a reference cycle). DataLoader has no public call for this.
    """
    iterator = getattr(loader, "_iterator", None)
    loader._iterator = None
    if iterator is None or not hasattr(iterator, "_shutdown_workers"):
        return
    iterator._shutdown_workers()  # asks the worker to end and waits a few seconds
    for worker in getattr(iterator, "_workers", []):
        if worker.is_alive():  # it could not end in time: it ignores SIGTERM, so SIGKILL
            worker.kill()
            worker.join()


@atexit.register  # registered after multiprocessing's own exit handler, so it runs before it
def _shutdown_open_loaders() -> None:
    for loader in list(_OPEN_LOADERS):
        shutdown_loader(loader)


STANDARD_START_METHODS = ("fork", "spawn", "forkserver")  # the start methods torch's loader workers work with


def make_dataloader(dataset: PuzzleDataset, device_type: str, num_workers: int = 1) -> DataLoader:
    """DataLoader that passes the dataset's ready-made batches through unchanged.

    One persistent worker prefetches batches in the background; `num_workers=0` iterates
    in the calling process (for tests and debugging).
    """
    if num_workers not in (0, 1):
        raise ValueError(f"make_dataloader: num_workers must be 0 or 1 (got {num_workers}); "
                         "PuzzleDataset is single-worker.")
    # Starting an iteration draws a worker seed; a private generator keeps that draw off the global
    # torch RNG, whose stream (ACT exploration) must not depend on when iterators are created.
    generator = torch.Generator().manual_seed(dataset.config.seed)
    if multiprocessing.get_start_method(allow_none=True) not in (None, *STANDARD_START_METHODS):
        # A worker of another pool (joblib's loky, under hydra/launcher=joblib) cannot start torch's loader
        # worker: iterate in this process instead (the same batches, test_loader.py).
        num_workers = 0
    if num_workers == 0:
        return DataLoader(dataset, batch_size=None, num_workers=0, pin_memory=(device_type == "cuda"),
                          generator=generator)
    loader = DataLoader(
        dataset,
        batch_size=None,
        num_workers=1,
        generator=generator,
        prefetch_factor=8,
        persistent_workers=True,
        worker_init_fn=_quiet_worker_signals,
        pin_memory=(device_type == "cuda"),
    )
    _OPEN_LOADERS.add(loader)
    return loader
