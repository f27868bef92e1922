"""From a checkpoint to a runnable model: the one way evaluate.py, predict.py, kaggle.adapt and fine-tuning take.

A checkpoint is named as a user names it: a weights file (`step_N`, `step_best`; ours, or published ones whose
keys start with `_orig_mod.`), a run directory (its newest `step_N`, or `step_best` with `which="best"`), or
`hf://OWNER/REPO[@REVISION]/PATH`. `open_checkpoint` resolves it to a local weights file and the training
config it was trained with (`all_config.yaml` beside it, or the one given), validated as training validated
it; `load_trained` builds the model as training built it and loads the weights into it.
"""
import os
from dataclasses import dataclass, field

import torch
import yaml
from torch import nn

from dataset.common import PuzzleDatasetMetadata
from dataset.puzzle_dataset import merge_metadata
from dataset.tasks import TASKS
from models.weights import (
    EMBED_TOKENS_KEY,
    PUZZLE_EMB_KEY,
    build_model,
    load_weights,
    strip_compiled_prefix,
    weights_vocab_size,
)
from rundir.best import read_best
from rundir.hub import is_hub_path, resolve_hub_checkpoint
from rundir.layout import (
    BEST_WEIGHTS,
    CONFIG_FILE,
    WEIGHTS_PATTERN,
    config_beside,
    list_train_states,
    run_dir_of,
    weight_steps,
    weights_path,
    weights_step,
)
from rundir.states import load_train_state, safe_load
from training.config import PretrainConfig, parse_config
from training.data import has_split
from utils.device import should_compile
from utils.errors import CheckpointError, ConfigError


@dataclass(frozen=True)
class Checkpoint:
    """A resolved checkpoint: its local weights file and the training config it was trained with."""

    weights: str  # a local weights file (downloaded from the hub for hf:// paths)
    config_path: str
    config: PretrainConfig  # all_config.yaml as the run wrote it, validated (generate_if_missing dropped)
    step: int  # N of step_N, the best step for step_best, else 0: names the outputs, as in training
    # The weights, read (memory-mapped) when opened from a run directory: a training there that prunes
    # (checkpoint_keep_last) or replaces step_best can no longer take them away before they are loaded.
    state_dict: dict | None = field(default=None, repr=False, compare=False)


PRUNED_RETRIES = 3  # listings of a run directory whose newest weights vanished before they were read


def resolve_weights(path: str, which: str = "last", need_config: bool = True) -> str:
    """A local weights file: as given, downloaded from the hub (`hf://`, with its all_config.yaml when
    `need_config`), or a run directory's newest `step_N` (`which=last`) or `step_best` (`which=best`)."""
    if is_hub_path(path):
        return resolve_hub_checkpoint(path, need_config=need_config)
    if os.path.isdir(path):
        if which == "best":
            best = os.path.join(path, BEST_WEIGHTS)
            if not os.path.isfile(best):
                raise CheckpointError(f"{path} has no {BEST_WEIGHTS}: the run did not track a best checkpoint "
                                      "(train with checkpoint_best_metric=all/exact_accuracy, say); use which=last.")
            return best
        steps = weight_steps(path)
        if not steps:
            raise CheckpointError(f"{path} is a directory without {WEIGHTS_PATTERN} weight files; give "
                                  f"checkpoint=PATH/{WEIGHTS_PATTERN}.")
        return weights_path(path, steps[-1])
    if not os.path.isfile(path):
        raise CheckpointError(f"Checkpoint {path} does not exist: give a {WEIGHTS_PATTERN} weights file, a run "
                              "directory or an hf:// path.")
    return path


def checkpoint_step(weights: str) -> int:
    """N of a `step_N` file, the best step for `step_best` (from its best.json), 0 for any other name."""
    name = os.path.basename(weights)
    if name == BEST_WEIGHTS:
        best = read_best(run_dir_of(weights))
        return best["step"] if best else 0
    step = weights_step(name)
    return step if step is not None else 0


def read_training_config(path: str) -> PretrainConfig:
    """A run's all_config.yaml, validated as training validated it; loading a model never builds data."""
    if not os.path.isfile(path):
        raise ConfigError(f"No training config at {path}. The trainer writes {CONFIG_FILE} into the run directory; "
                          f"point at it with config=PATH/{CONFIG_FILE}.")
    with open(path) as f:
        try:
            raw = yaml.safe_load(f)
        except yaml.YAMLError as err:  # a syntax error, or a tag safe_load refuses (e.g. !!python/object)
            mark = getattr(err, "problem_mark", None)
            where = f"{path}, line {mark.line + 1}" if mark is not None else path
            problem = getattr(err, "problem", None) or type(err).__name__
            raise ConfigError(f"{where}: not a readable training config ({problem}); give the {CONFIG_FILE} a "
                              "run wrote (plain YAML, no Python tags) with config=PATH") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} is not a training config (expected a YAML mapping).")
    raw.pop("generate_if_missing", None)
    try:
        return parse_config(raw)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def open_checkpoint(path: str, which: str = "last", config: str | None = None) -> Checkpoint:
    """Resolve `path` (local file, run directory or hf://) and read its training config (`config`, else the
    all_config.yaml beside the weights)."""
    state_dict = None
    if not is_hub_path(path) and os.path.isdir(path):
        weights, state_dict = _read_from_run_dir(path, which)
    else:
        weights = resolve_weights(path, which, need_config=config is None)
    config_path = config or config_beside(weights)
    return Checkpoint(weights=weights, config_path=config_path, config=read_training_config(config_path),
                      step=checkpoint_step(weights), state_dict=state_dict)


def _read_from_run_dir(run_dir: str, which: str) -> tuple[str, dict[str, torch.Tensor]]:
    """A run directory's weights file (`resolve_weights`) and its weights, read at once. A training running
    there may prune the newest between the listing and the read: then the directory is listed again."""
    for _ in range(PRUNED_RETRIES):
        weights = resolve_weights(run_dir, which)
        try:
            return weights, read_weights(weights)
        except CheckpointError:
            if os.path.exists(weights):
                raise  # unreadable, not pruned
    raise CheckpointError(f"The newest weights of {run_dir} were pruned before they could be read, "
                          f"{PRUNED_RETRIES} times: the run training there removes them (checkpoint_keep_last) as "
                          f"it saves; give checkpoint=PATH/{WEIGHTS_PATTERN} of a step it keeps, or evaluate later.")


def read_weights(path: str) -> dict[str, torch.Tensor]:
    """The state dict of a weights file, memory-mapped (published ARC files are ~2 GB), `_orig_mod.` stripped."""
    state_dict = safe_load(path, mmap=True)
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"{path} is not a weights file (a state dict of tensors); give a {WEIGHTS_PATTERN} "
                              "file.")
    return strip_compiled_prefix(state_dict)


# ---------------------------------------------------------------------------------------------
# What the checkpoint was trained on
# ---------------------------------------------------------------------------------------------
def recorded_metadata(checkpoint: Checkpoint) -> tuple[PuzzleDatasetMetadata | None, str | None]:
    """(metadata of the data the checkpoint was trained on, where that was found), or (None, None).

    The run's newest training state records it; else the training config's own dataset, if it is here.
    """
    for _ in range(PRUNED_RETRIES):  # a training running there may prune the newest state as it is read
        states = list_train_states(run_dir_of(checkpoint.weights))
        if not states:
            break
        try:
            saved = load_train_state(states[-1][1], mmap=True)["train_metadata"]
        except CheckpointError:
            if os.path.isdir(states[-1][1]):
                raise
            continue
        return PuzzleDatasetMetadata(**saved), states[-1][1]
    original = checkpoint.config.data_paths
    if has_split(original, "train"):
        return merge_metadata(original, "train"), ", ".join(original)
    return None, None


def metadata_from_weights(weights_file: str, weights: dict[str, torch.Tensor] | None = None) -> PuzzleDatasetMetadata:
    """The metadata of the data a checkpoint was trained on, when neither its dataset nor its training state is
    here: the task from the vocabulary of its token embedding (each task's differs), the rest as the builders
    write it (`write_grouped_split`: PAD and ignored label 0, every puzzle the blank identifier 0)."""
    weights = weights if weights is not None else read_weights(weights_file)
    vocab_size = weights_vocab_size(weights)
    if vocab_size is None:
        raise ConfigError(f"Cannot tell the task of {weights_file}: its training data is not here and it has no "
                          f"{EMBED_TOKENS_KEY}; point config= at a training config whose data_paths exist here.")
    tasks = [task for task in TASKS.values() if task.vocab_size == vocab_size]
    if not tasks:
        known = ", ".join(f"{task.title} {task.vocab_size}" for task in TASKS.values() if task.vocab_size)
        raise ConfigError(f"{weights_file} has a vocabulary of {vocab_size} tokens, which is no task's ({known}); "
                          "point config= at a training config whose data_paths exist here.")
    identifiers = weights[PUZZLE_EMB_KEY].shape[0] if PUZZLE_EMB_KEY in weights else 1
    return PuzzleDatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=vocab_size,
                                 seq_len=tasks[0].seq_len, num_puzzle_identifiers=identifiers, total_groups=1,
                                 mean_puzzle_examples=1.0, total_puzzles=1, sets=["all"])


def trained_metadata(checkpoint: Checkpoint) -> PuzzleDatasetMetadata:
    """What the run recorded (its training state, or its dataset if here), else what the weights tell."""
    metadata, _ = recorded_metadata(checkpoint)
    return metadata if metadata is not None else metadata_from_weights(checkpoint.weights, checkpoint.state_dict)


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------
def load_trained(checkpoint: str | Checkpoint, device: torch.device, *, local_batch_size: int | None = None,
                 data_paths: list[str] | None = None, fallback_metadata: PuzzleDatasetMetadata | None = None,
                 compile_model: bool | None = False) -> nn.Module:
    """The model as training built it, with the checkpoint's weights, on `device`, in eval-ready form.

    It is built from the train split of `data_paths` (default: the training config's) when that is here,
    else from `fallback_metadata`, else from what the checkpoint records (`trained_metadata`).
    `local_batch_size` defaults to the training config's global batch size."""
    if isinstance(checkpoint, str):
        checkpoint = open_checkpoint(checkpoint)
    paths = data_paths if data_paths is not None else checkpoint.config.data_paths
    if has_split(paths, "train"):
        metadata = merge_metadata(paths, "train")
    else:
        metadata = fallback_metadata if fallback_metadata is not None else trained_metadata(checkpoint)
    head = build_model(checkpoint.config.arch, metadata, local_batch_size or checkpoint.config.global_batch_size,
                       device)
    weights = checkpoint.state_dict if checkpoint.state_dict is not None else read_weights(checkpoint.weights)
    try:
        load_weights(head, weights)
    except (ValueError, RuntimeError) as err:
        raise CheckpointError(f"{checkpoint.weights} does not fit the model of this config and dataset: {err}") \
            from None
    return torch.compile(head) if should_compile(device, compile_model) else head

