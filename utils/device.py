"""Device choice, the widest float per device, and whether to torch.compile.

All device decisions live here so that model code can stay device-agnostic: it only ever
looks at the device of the tensors it is handed.
"""
import os

import torch

from utils.errors import ConfigError

# Device types this codebase knows how to run on.
_KNOWN_DEVICE_TYPES = ("cpu", "cuda", "mps")


def _mps_available() -> bool:
    """MPS is reported by torch.backends.mps; builds without the backend module have no MPS."""
    mps_backend = getattr(torch.backends, "mps", None)
    return mps_backend is not None and mps_backend.is_available()


def available_devices() -> list[str]:
    """Names of the devices usable in this process, for error messages and logs."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    if _mps_available():
        names.append("mps")
    return names


def _auto_device(local_rank: int) -> torch.device:
    """Fastest available accelerator; each torchrun process takes the GPU of its local rank."""
    if torch.cuda.is_available():
        return _checked_cuda(torch.device("cuda", local_rank), f"cuda:{local_rank} (auto, local rank)")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _checked_cuda(device: torch.device, requested: str) -> torch.device:
    """Fail early with a readable message instead of a CUDA error at the first allocation."""
    if not torch.cuda.is_available():
        raise ConfigError(f"Requested device {requested!r} but CUDA is not available; available: {available_devices()}")
    if device.index >= torch.cuda.device_count():
        raise ConfigError(f"Requested device {requested!r} but only {torch.cuda.device_count()} CUDA device(s) exist; "
                         f"available: {available_devices()}")
    return device


def _parse_device(requested: str) -> torch.device:
    """torch.device() raises RuntimeError on garbage; surface it as the ValueError callers expect."""
    try:
        return torch.device(requested)
    except RuntimeError as error:
        raise ConfigError(f"Invalid device {requested!r}; available: {available_devices()}") from error


def select_device(requested: str | None = None, local_rank: int = 0) -> torch.device:
    """Resolve a device request to a usable torch.device.

    None or "auto" picks CUDA (the GPU of `local_rank`), then MPS, then CPU. An explicit
    request is honoured or rejected with ValueError; a bare "cuda" means the local rank's GPU
    so that one command line works for every torchrun process.
    """
    if requested is None or requested == "auto":
        return _auto_device(local_rank)
    device = _parse_device(requested)
    if device.type not in _KNOWN_DEVICE_TYPES:
        raise ConfigError(f"Unsupported device {requested!r}; available: {available_devices()}")
    if device.type == "cuda":
        index = local_rank if device.index is None else device.index
        return _checked_cuda(torch.device("cuda", index), requested)
    if device.type == "mps" and not _mps_available():
        raise ConfigError(f"Requested device {requested!r} but MPS is not available; available: {available_devices()}")
    return device


def wide_float_dtype(device: torch.device) -> torch.dtype:
    """Widest float dtype for numerically sensitive math (stablemax log-probs).

    float64 everywhere except MPS, which has no float64 support.
    """
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def should_compile(device: torch.device, compile_flag: bool | None) -> bool:
    """Whether to wrap the model in torch.compile.

    DISABLE_COMPILE in the environment (any value, even empty) always wins, as in the
    published TRM code. Otherwise an explicit flag wins; by default only CUDA compiles,
    because compile time dominates short CPU/MPS runs and MPS support is incomplete.
    """
    if "DISABLE_COMPILE" in os.environ:
        return False
    if compile_flag is not None:
        return bool(compile_flag)
    return torch.device(device).type == "cuda"


def all_on_cuda(tensors: list) -> bool:
    """True when there is at least one tensor and all are on CUDA devices (e.g. to pick a fused CUDA kernel)."""
    return len(tensors) > 0 and all(t.device.type == "cuda" for t in tensors)
