"""Checkpoint files: reading them safely, and the full, resumable training state on disk.

A training state is a directory `train_state_step_N/` holding `state.pt` (what all ranks share: weights,
EMA shadow, optimizer states, counters, config, dataset metadata) and `rank<r>.pt` (what is per rank: RNG
states and the ACT carry); rundir/layout.py names them. It is written as `train_state_step_N.tmp/` and
renamed only when complete, so a crash mid-save leaves the previous state the newest complete one.
"""
import os
import pickle
import shutil
import time
import warnings
from typing import Any

import torch

from rundir.layout import (
    TRAIN_STATE_PATTERN,
    WEIGHTS_PATTERN,
    foreign_state_files,
    list_train_states,
    rank_state_path,
    shared_state_path,
    temporary_train_states,
    weight_steps,
    weights_path,
)
from utils.atomic import fsync_dir, make_dirs, write_synced
from utils.errors import CheckpointError

WRITE_DELAY_ENV = "TRM_CHECKPOINT_WRITE_DELAY"  # fault-injection for tests: seconds to pause mid-save

# What torch.load raises on a file that is not a (complete) checkpoint: its unpickler fails in many ways.
UNREADABLE_CHECKPOINT_ERRORS = (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, IndexError,
                                KeyError, TypeError, AttributeError)


# torch's messages go on to advise weights_only=False (which would run the file's code), saving with other options,
# or filing an issue: none of that helps the user, so a sentence naming any of these is never passed through.
_TORCH_ADVICE = ("weights_only", "_use_new_zipfile_serialization", "torch.serialization", "torch.save", "torch.load",
                 "file an issue", "Re-running", "pytorch.org", "add_safe_globals", "safe_globals")


def unreadable_reason(err: BaseException) -> str:
    """Why torch could not read a file, in a few words of its own or of ours, with none of torch's advice."""
    text = str(err)
    if "mmap can only be used" in text:
        return "it is not in PyTorch's zip format"
    if "GLOBAL" in text or "Unsupported global" in text:
        return "it holds objects other than tensors and plain containers"
    if "Weights only load failed" in text:
        return "it is not a pickle of tensors"
    first = text.strip().splitlines()[0] if text.strip() else ""
    # Its first sentence says what failed; the rest guesses at causes and gives advice.
    sentences = [s for s in first.split(". ") if s and not any(a in s for a in _TORCH_ADVICE)]
    return sentences[0].rstrip(".") if sentences else type(err).__name__


def safe_load(path: str, map_location="cpu", mmap: bool = False, what: str = "checkpoint",
              fix: str = f"Give a {WEIGHTS_PATTERN} weights file or a {TRAIN_STATE_PATTERN} directory written by "
                         "training.") -> Any:
    """torch.load with weights_only=True (checkpoints may come from the internet), with readable errors.

    The one place the code calls torch.load. `mmap=True` maps the file instead of reading it (large files: no second
    copy in memory); `what` names the file in messages and `fix` says what to give instead."""
    if not os.path.exists(path):
        raise CheckpointError(f"{what[0].upper()}{what[1:]} file {path} does not exist.")
    try:
        with warnings.catch_warnings():
            # Advice to file an issue about the pickle protocol: the load either works or fails below.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except UNREADABLE_CHECKPOINT_ERRORS as err:
        raise CheckpointError(f"Cannot read {what} {path}: it is not a PyTorch checkpoint, or it is truncated "
                              f"or corrupt ({unreadable_reason(err)}). {fix}") from None


def save_file_synced(obj: Any, path: str) -> None:
    write_synced(path, lambda f: torch.save(obj, f))


# ---------------------------------------------------------------------------------------------
# Writing a training state
# ---------------------------------------------------------------------------------------------
def write_rank_state(tmp_dir: str, rank: int, rank_state: dict) -> None:
    make_dirs(tmp_dir)
    save_file_synced(rank_state, rank_state_path(tmp_dir, rank))


def commit_train_state(tmp_dir: str, final_dir: str, shared_state: dict) -> None:
    """Write the shared part last, then rename the directory into place (replacing a same-step one)."""
    save_file_synced(shared_state, shared_state_path(tmp_dir))
    fsync_dir(tmp_dir)
    delay = float(os.environ.get(WRITE_DELAY_ENV, "0"))
    if delay > 0:
        time.sleep(delay)
    if os.path.exists(final_dir):  # e.g. a stop right after resuming: same step saved again
        shutil.rmtree(final_dir)
    os.replace(tmp_dir, final_dir)
    fsync_dir(os.path.dirname(final_dir) or ".")


def prune_checkpoints(run_dir: str, keep_last: int, newest: int) -> None:
    """Keep the `keep_last` newest training states and weight files up to step `newest` (the one just saved);
    remove older ones. Only the run's own: none past `newest`, no state holding a file that is not a state file."""
    for _, path in [(s, p) for s, p in list_train_states(run_dir) if s <= newest][:-keep_last]:
        foreign = foreign_state_files(path)
        if foreign:
            print(f"note: checkpoint_keep_last leaves {path} in place: it holds {', '.join(foreign[:5])}, which no "
                  "run wrote", flush=True)
        else:
            shutil.rmtree(path)
    for step in [s for s in weight_steps(run_dir) if s <= newest][:-keep_last]:
        os.remove(weights_path(run_dir, step))


def remove_stale_temporaries(run_dir: str) -> None:
    """Leftovers of a save that was interrupted (never complete, never read)."""
    for path in temporary_train_states(run_dir):
        shutil.rmtree(path, ignore_errors=False)


# ---------------------------------------------------------------------------------------------
# Reading a training state
# ---------------------------------------------------------------------------------------------
def load_train_state(state_dir: str, mmap: bool = False) -> dict:
    """The shared part (`state.pt`) of a training state directory (`mmap`: mapped, not read)."""
    if not os.path.isdir(state_dir):
        raise CheckpointError(f"Training state {state_dir} does not exist (resume=PATH must name a "
                              f"{TRAIN_STATE_PATTERN} directory).")
    states = list_train_states(state_dir)
    if states and not os.path.exists(shared_state_path(state_dir)):
        raise CheckpointError(f"{state_dir} is a run directory, not a training state: give one of its states "
                              f"(e.g. resume={states[-1][1]}) or resume=auto with checkpoint_path={state_dir}.")
    return safe_load(shared_state_path(state_dir), mmap=mmap)


def missing_state_files(state_dir: str) -> list[str]:
    """Names of the files a training state lacks: `state.pt`, or a rank file of the processes it names."""
    if not os.path.exists(shared_state_path(state_dir)):
        return [os.path.basename(shared_state_path(state_dir))]
    world_size = safe_load(shared_state_path(state_dir), mmap=True)["world_size"]
    return [os.path.basename(rank_state_path(state_dir, rank)) for rank in range(world_size)
            if not os.path.exists(rank_state_path(state_dir, rank))]


def _rank_file(state_dir: str, rank: int) -> str:
    path = rank_state_path(state_dir, rank)
    if not os.path.exists(path):
        raise CheckpointError(f"Training state {state_dir} is incomplete: {os.path.basename(path)} is missing. "
                              "Resume from another state (resume=PATH) or copy the file back.")
    return path


def load_rank_state(state_dir: str, rank: int, world_size: int, saved_world_size: int) -> dict:
    """This process's `{"rng", "carry"}` from a state saved by `saved_world_size` processes.

    Same number of processes: rank r's own file. Another number: every rank holds a contiguous slice of
    each global batch, so the saved carries in rank order are the global batch's ACT carry; it is cut
    again into this process's slice (the loader position is counted in global batches and needs nothing).
    RNG streams are per process: this rank's saved ones where it existed, else `None` (the caller seeds).
    """
    if world_size == saved_world_size:
        return safe_load(_rank_file(state_dir, rank))
    own = safe_load(_rank_file(state_dir, rank), mmap=True) if rank < saved_world_size else None
    first = own if own is not None else safe_load(_rank_file(state_dir, 0), mmap=True)
    if first["carry"] is None:
        return {"rng": own["rng"] if own else None, "carry": None}
    saved_local = _leading_size(first["carry"])
    global_size = saved_local * saved_world_size
    if global_size % world_size:
        raise CheckpointError(f"{state_dir} holds a global batch of {global_size}, which {world_size} processes "
                              "cannot share equally: use a number of processes that divides it.")
    local = global_size // world_size
    lo, hi = rank * local, (rank + 1) * local
    parts = []
    for saved_rank in range(lo // saved_local, (hi - 1) // saved_local + 1):
        carry = safe_load(_rank_file(state_dir, saved_rank), mmap=True)["carry"]
        start = saved_rank * saved_local
        parts.append(_slice_carry(carry, max(lo, start) - start, min(hi, start + saved_local) - start))
    return {"rng": own["rng"] if own else None, "carry": _concat_carries(parts)}


def _leading_size(carry: Any) -> int:
    while isinstance(carry, dict):
        carry = next(iter(carry.values()))
    return carry.shape[0]


def _slice_carry(carry: Any, lo: int, hi: int) -> Any:
    if isinstance(carry, dict):
        return {k: _slice_carry(v, lo, hi) for k, v in carry.items()}
    return carry[lo:hi].clone()  # a copy: no view into a memory-mapped file


def _concat_carries(parts: list) -> Any:
    if isinstance(parts[0], dict):
        return {k: _concat_carries([p[k] for p in parts]) for k in parts[0]}
    return torch.cat(parts)
