"""The run directory: code and config, weight files, and the resumable training state (docs/training.md)."""
import os
import shutil

import torch
import yaml
from torch import nn

from dataset.common import PuzzleDatasetMetadata
from models.arch import arch_differences
from models.registry import model_source_path
from models.weights import uncompiled
from rundir.layout import (
    CONFIG_FILE,
    WEIGHTS_PATTERN,
    list_train_states,
    temporary_train_state_dir,
    train_state_dir,
    unfinished_moves,
    weights_path,
)
from rundir.states import (
    commit_train_state,
    load_rank_state,
    load_train_state,
    missing_state_files,
    prune_checkpoints,
    write_rank_state,
)
from training.carry import carry_to_state
from training.config import PretrainConfig
from training.state import TrainState, evaluation_model
from utils.atomic import copy_file_atomically, make_dirs, restated, write_atomically
from utils.distributed import DistContext, barrier
from utils.errors import CheckpointError, WriteError
from utils.finite import check_finite
from utils.random_state import capture_rng_state

TRAIN_STATE_FORMAT = 1


def save_code_and_config(config: PretrainConfig) -> None:
    """The model's source files (as published) and the resolved config, into the run directory."""
    make_dirs(config.checkpoint_path)
    sources = [model_source_path(name) for name in (config.arch.name, config.arch.loss.name)]
    for shared_name in ("common.py", "config.py"):  # the parts and the config every variant is built from
        shared = os.path.join(os.path.dirname(sources[0]), shared_name)
        if os.path.exists(shared):
            sources.append(shared)
    if config.arch.model_keys.get("lma_enable"):
        sources.append(model_source_path("lma@"))  # the LMA front-end is part of such a model
    for source in sources:
        copy_file_atomically(source, os.path.join(config.checkpoint_path, os.path.basename(source)))
    write_atomically(os.path.join(config.checkpoint_path, CONFIG_FILE),
                     lambda f: yaml.safe_dump(config.model_dump(), f, sort_keys=False), mode="w")


def save_model_weights(path: str, model: nn.Module) -> str:
    """A model's state dict at `path` (published key names, no `_orig_mod.` prefix), written atomically."""
    model = uncompiled(model)
    make_dirs(os.path.dirname(path) or ".")
    write_atomically(path, lambda f: torch.save(model.state_dict(), f))
    return path


def save_weights(run_dir: str, model: nn.Module, step: int) -> str:
    """The evaluated weights, `run_dir/step_N`."""
    return save_model_weights(weights_path(run_dir, step), model)


def shared_training_state(config: PretrainConfig, state: TrainState, metadata: PuzzleDatasetMetadata,
                          world_size: int) -> dict:
    """What every rank has in common: enough, with the rank files, to continue bit for bit."""
    return {"format": TRAIN_STATE_FORMAT, **state.state_dict(), "world_size": world_size,
            "config": config.model_dump(), "train_metadata": metadata.model_dump()}


def save_checkpoint(config: PretrainConfig, state: TrainState, metadata: PuzzleDatasetMetadata, ctx: DistContext,
                    eval_model: nn.Module | None = None) -> str:
    """Weights file `step_N` (evaluated weights) plus the full training state, both written atomically.

    Weights (and the EMA shadow) with a NaN or an inf are never saved: the run stops naming the last
    checkpoint, whose weights are finite."""
    shadow = state.ema.state_dict() if state.ema is not None else {}
    check_finite(state, "weights", {**state.raw_model.state_dict(), **{f"ema:{k}": v for k, v in shadow.items()}})
    final_dir = train_state_dir(config.checkpoint_path, state.step)
    tmp_dir = temporary_train_state_dir(final_dir)
    try:
        write_rank_state(tmp_dir, ctx.rank, {"rng": capture_rng_state(ctx.device),
                                             "carry": carry_to_state(state.carry) if state.carry is not None else None})
        barrier(ctx)  # every rank file is on disk before rank 0 declares the state complete
        if ctx.is_main:
            save_weights(config.checkpoint_path, eval_model if eval_model is not None else evaluation_model(state),
                         state.step)
            commit_train_state(tmp_dir, final_dir, shared_training_state(config, state, metadata, ctx.world_size))
    except WriteError as err:  # e.g. a full disk: no partial state is left (the previous one stays the newest)
        shutil.rmtree(tmp_dir, ignore_errors=True)  # best effort: the error below is what the user must see
        raise restated(err, f"The partial {os.path.basename(tmp_dir)} was removed and earlier checkpoints are "
                            "untouched", "free some space (older checkpoints, or set checkpoint_keep_last) and run "
                            "again with resume=auto") from None
    if ctx.is_main and config.checkpoint_keep_last:
        prune_checkpoints(config.checkpoint_path, config.checkpoint_keep_last, newest=state.step)
    barrier(ctx)
    state.last_checkpoint = final_dir
    return final_dir


def find_resume_dir(config: PretrainConfig, announce: bool = True) -> str | None:
    """resume=PATH as given; resume=auto: the newest complete training state (one with `state.pt` and every rank
    file it names), passing over newer incomplete ones with a note. When none is complete, the newest, so that
    loading it names what is missing."""
    if config.resume is None:
        return None
    if config.resume != "auto":
        return config.resume
    states = list_train_states(config.checkpoint_path)
    cut_short = unfinished_moves(config.checkpoint_path)  # a kill mid-move left later states of an abandoned attempt
    if cut_short:
        states = [(step, path) for step, path in states if step <= min(step for step, _ in cut_short)]
    for _, path in reversed(states):
        missing = missing_state_files(path)
        if not missing:
            return path
        if announce:
            print(f"note: resume=auto passes over the incomplete training state {path} (missing "
                  f"{', '.join(missing)})", flush=True)
    return states[-1][1] if states else None


def batch_sequence(config: dict) -> dict:
    """What fixes the sequence of training batches: the saved loader position means nothing under other values.

    Keyed by the config names a user can change (an unset eval_interval means one evaluation after all epochs)."""
    return {"seed": config.get("seed"), "global_batch_size": config.get("global_batch_size"),
            "eval_interval": config.get("eval_interval") or config.get("epochs")}


def restore_training_state(config: PretrainConfig, state: TrainState, metadata: PuzzleDatasetMetadata,
                           state_dir: str, ctx: DistContext) -> dict:
    """Load weights, optimizer and EMA states and counters; returns this rank's `{"rng", "carry"}`.

    Resuming with another number of processes re-slices the ACT carry (load_rank_state) and leaves
    `rng` None for a rank the state did not have; `saved_world_size` says how many processes saved it."""
    shared = load_train_state(state_dir)
    saved, now = batch_sequence(shared["config"]), batch_sequence(config.model_dump())
    changed = {k: (saved[k], now[k]) for k in saved if saved[k] != now[k]}
    if changed:
        raise CheckpointError(f"{state_dir} was trained with other values of keys that fix the order of the training "
                              f"batches (key: (checkpoint, now)): {changed}. Resume with the checkpoint's values, or "
                              f"start a new run from its weights with +load_checkpoint=.../{WEIGHTS_PATTERN}.")
    rank_state = load_rank_state(state_dir, ctx.rank, ctx.world_size, shared["world_size"])
    saved_metadata = shared["train_metadata"]
    differing = {k: (saved_metadata.get(k), v) for k, v in metadata.model_dump().items() if saved_metadata.get(k) != v}
    if differing:
        raise CheckpointError(f"The dataset differs from the one {state_dir} was trained on "
                              f"(field: (checkpoint, now)): {differing}. Point data_paths at the original dataset.")
    if (shared["ema"] is None) != (state.ema is None):
        raise CheckpointError(f"{state_dir} was saved with ema={shared['ema'] is not None}; "
                              "resume with the same setting.")
    try:
        state.load_state_dict(shared)
    except (ValueError, RuntimeError, KeyError) as err:
        # torch lists every tensor that differs; the arch keys that differ say why, in one line.
        why = "; ".join(arch_differences(shared["config"].get("arch", {}), config.arch.model_dump()))
        if not why:
            lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [repr(err)]
            why = lines[min(1, len(lines) - 1)] + (f" (and {len(lines) - 2} more)" if len(lines) > 2 else "")
        raise CheckpointError(f"{state_dir} does not match this model/optimizer configuration ({why}); resume with "
                              "the arch keys it was trained with.") from None
    for optimizer in state.optimizers:  # the saved groups hold the saving job's number of processes
        for group in optimizer.param_groups:
            if "world_size" in group:
                group["world_size"] = ctx.world_size
    state.saved_carry = rank_state["carry"]
    state.last_checkpoint = state_dir
    return {**rank_state, "saved_world_size": shared["world_size"]}
