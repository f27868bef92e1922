"""Checkpoints: published-style weight files and the full, resumable training state."""
import dataclasses
import os
import pickle
import random
import shutil
import time
from typing import Any

import numpy as np
import torch

from utils.atomic import fsync_dir, write_synced
from utils.errors import CheckpointError

# ---------------------------------------------------------------------------------------------
# Full training state (exact resume)
# ---------------------------------------------------------------------------------------------
# A training state is a directory `train_state_step_N/` holding `state.pt` (what all ranks share:
# weights, EMA shadow, optimizer states, counters, config, dataset metadata) and `rank<r>.pt` (what
# is per rank: RNG states and the ACT carry). It is written as `train_state_step_N.tmp/` and renamed
# only when complete, so a crash mid-save leaves the previous state the newest complete one.
TRAIN_STATE_PREFIX = "train_state_step_"
TMP_SUFFIX = ".tmp"
WRITE_DELAY_ENV = "TRM_CHECKPOINT_WRITE_DELAY"  # fault-injection for tests: seconds to pause mid-save


# What torch.load raises on a file that is not a (complete) checkpoint: its unpickler fails in many ways.
UNREADABLE_CHECKPOINT_ERRORS = (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, IndexError,
                                KeyError, TypeError, AttributeError)


def safe_load(path: str, map_location="cpu", mmap: bool = False) -> Any:
    """torch.load with weights_only=True (checkpoints may come from the internet), with readable errors.

    `mmap=True` maps the file instead of reading it (large files: no second copy in memory)."""
    if not os.path.exists(path):
        raise CheckpointError(f"Checkpoint file {path} does not exist.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except UNREADABLE_CHECKPOINT_ERRORS as err:
        # Only torch's first line: the rest suggests weights_only=False, which would run the file's code.
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "weights_only" in reason:
            reason = "it holds objects other than tensors and plain containers"
        raise CheckpointError(f"Cannot read checkpoint {path}: it is not a PyTorch checkpoint, or it is truncated "
                              f"or corrupt ({reason}). Give a step_N weights file or a train_state_step_N "
                              "directory written by training.") from None


def save_file_synced(obj: Any, path: str) -> None:
    write_synced(path, lambda f: torch.save(obj, f))


def train_state_dir(run_dir: str, step: int) -> str:
    return os.path.join(run_dir, f"{TRAIN_STATE_PREFIX}{step}")


def list_train_states(run_dir: str) -> list[tuple[int, str]]:
    """Complete training states in `run_dir`, oldest first."""
    if not os.path.isdir(run_dir):
        return []
    found = []
    for name in os.listdir(run_dir):
        step = name.removeprefix(TRAIN_STATE_PREFIX)
        if name.startswith(TRAIN_STATE_PREFIX) and step.isdigit():
            found.append((int(step), os.path.join(run_dir, name)))
    return sorted(found)


def write_rank_state(tmp_dir: str, rank: int, rank_state: dict) -> None:
    os.makedirs(tmp_dir, exist_ok=True)
    save_file_synced(rank_state, os.path.join(tmp_dir, f"rank{rank}.pt"))


def commit_train_state(tmp_dir: str, final_dir: str, shared_state: dict) -> None:
    """Write the shared part last, then rename the directory into place (replacing a same-step one)."""
    save_file_synced(shared_state, os.path.join(tmp_dir, "state.pt"))
    fsync_dir(tmp_dir)
    delay = float(os.environ.get(WRITE_DELAY_ENV, "0"))
    if delay > 0:
        time.sleep(delay)
    if os.path.exists(final_dir):  # e.g. a stop right after resuming: same step saved again
        shutil.rmtree(final_dir)
    os.replace(tmp_dir, final_dir)
    fsync_dir(os.path.dirname(final_dir) or ".")


def load_train_state(state_dir: str) -> dict:
    """The shared part (`state.pt`) of a training state directory."""
    if not os.path.isdir(state_dir):
        raise CheckpointError(f"Training state {state_dir} does not exist (resume=PATH must name a "
                              f"{TRAIN_STATE_PREFIX}N directory).")
    states = [name for name in sorted(os.listdir(state_dir)) if name.startswith(TRAIN_STATE_PREFIX)]
    if states and not os.path.exists(os.path.join(state_dir, "state.pt")):
        raise CheckpointError(f"{state_dir} is a run directory, not a training state: give one of its states "
                              f"(e.g. resume={os.path.join(state_dir, states[-1])}) or resume=auto with "
                              f"checkpoint_path={state_dir}.")
    return safe_load(os.path.join(state_dir, "state.pt"))


def _rank_file(state_dir: str, rank: int) -> str:
    path = os.path.join(state_dir, f"rank{rank}.pt")
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


def new_stream_seed(seed: int, rank: int, step: int) -> int:
    """Seed of a process that resumes a state saved without its rank: fixed by (seed, rank, step)."""
    return ((seed + rank) * 1_000_003 + step) % 2**32


def prune_checkpoints(run_dir: str, keep_last: int) -> None:
    """Keep the `keep_last` newest training states and weight files; remove older ones and stale temporaries."""
    for _, path in list_train_states(run_dir)[:-keep_last]:
        shutil.rmtree(path)
    weights = sorted((int(n[5:]), n) for n in os.listdir(run_dir) if n.startswith("step_") and n[5:].isdigit())
    for _, name in weights[:-keep_last]:
        os.remove(os.path.join(run_dir, name))


def remove_stale_temporaries(run_dir: str) -> None:
    """Leftovers of a save that was interrupted (never complete, never read)."""
    if os.path.isdir(run_dir):
        for name in os.listdir(run_dir):
            if name.startswith(TRAIN_STATE_PREFIX) and name.endswith(TMP_SUFFIX):
                shutil.rmtree(os.path.join(run_dir, name), ignore_errors=False)


# ---------------------------------------------------------------------------------------------
# RNG states and the ACT carry as plain tensors (loadable with weights_only=True)
# ---------------------------------------------------------------------------------------------
def capture_rng_state(device: torch.device) -> dict:
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), np_pos, np_has_gauss, np_gauss],
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    elif device.type == "mps":
        state["mps"] = torch.mps.get_rng_state()
    return state


def restore_rng_state(state: dict, device: torch.device) -> None:
    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
    elif device.type == "mps" and "mps" in state:
        torch.mps.set_rng_state(state["mps"])


def carry_to_state(carry: Any) -> Any:
    """Nested dataclasses/dicts of tensors -> nested dicts of CPU tensors."""
    if dataclasses.is_dataclass(carry):
        return {f.name: carry_to_state(getattr(carry, f.name)) for f in dataclasses.fields(carry)}
    if isinstance(carry, dict):
        return {k: carry_to_state(v) for k, v in carry.items()}
    if isinstance(carry, torch.Tensor):
        return carry.detach().cpu()
    raise TypeError(f"cannot save a carry field of type {type(carry).__name__}")


def carry_from_state(template: Any, state: Any) -> Any:
    """Fill a freshly made carry (`model.initial_carry(batch)`) with saved values, on the template's devices."""
    if dataclasses.is_dataclass(template):
        return dataclasses.replace(template, **{f.name: carry_from_state(getattr(template, f.name), state[f.name])
                                                for f in dataclasses.fields(template)})
    if isinstance(template, dict):
        return {k: carry_from_state(v, state[k]) for k, v in template.items()}
    return state.to(device=template.device, dtype=template.dtype)
