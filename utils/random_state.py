"""The random number streams of a process: seeding them, and capturing/restoring them as plain tensors
(loadable with weights_only=True), so that a resumed run draws the same numbers an uninterrupted one would."""
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """torch as published (seed + rank); python and numpy too, so that a whole run is reproducible."""
    torch.random.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def new_stream_seed(seed: int, rank: int, step: int) -> int:
    """Seed of a process that resumes a state saved without its rank: fixed by (seed, rank, step)."""
    return ((seed + rank) * 1_000_003 + step) % 2**32


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
