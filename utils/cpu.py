"""What the CPU this process runs on offers: the CPUs it may use, and whether it has bf16 matrix units.

Two choices are made from them, here and nowhere else: the intra-op thread count (`choose_threads`)
and the float type of `forward_dtype=auto` (`resolve_forward_dtype`). Each returns the reason with the
value, so a run can say in its first line which path it takes.
"""
import math
import os
from dataclasses import dataclass

import torch

AUTO = "auto"  # the forward_dtype value that asks for the choice made here

# /proc/cpuinfo flags of bf16 matrix or dot-product units, best first, and the name a run prints.
_BF16_FLAGS = (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16"), ("bf16", "ARM BF16"))
_CPUINFO = "/proc/cpuinfo"
_CGROUP_V2_MAX = "/sys/fs/cgroup/cpu.max"
_CGROUP_V1 = ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def cpu_flags() -> set[str]:
    """The feature flags of the first CPU in /proc/cpuinfo (x86 `flags`, ARM `Features`); empty elsewhere."""
    try:
        with open(_CPUINFO, encoding="utf-8", errors="replace") as file:
            for line in file:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return set(value.split())
    except OSError:  # no /proc (macOS, Windows): no flags to read, so no bf16 units are claimed
        pass
    return set()


def bf16_units() -> str | None:
    """The name of this CPU's bf16 matrix unit when oneDNN can use it (e.g. "AMX-BF16"), else None."""
    flags = cpu_flags()
    unit = next((name for flag, name in _BF16_FLAGS if flag in flags), None)
    if unit is None or not torch.backends.mkldnn.is_available():
        return None
    return unit if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None


def _read_first_line(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as file:
            return file.readline().strip()
    except OSError:  # the file does not exist on this system (no cgroup of that version)
        return None


def cgroup_cpu_limit() -> float | None:
    """CPUs the cgroup quota allows (e.g. 1.5 for `150000 100000`), None when there is no quota."""
    line = _read_first_line(_CGROUP_V2_MAX)
    if line:
        quota, _, period = line.partition(" ")
        if quota != "max" and period:
            return int(quota) / int(period)
        return None
    quota, period = (_read_first_line(path) for path in _CGROUP_V1)
    if quota and period and int(quota) > 0:
        return int(quota) / int(period)
    return None


def available_cpus() -> tuple[int, str]:
    """(CPUs this process may use, where that number comes from): affinity mask, then cgroup quota."""
    if hasattr(os, "sched_getaffinity"):
        count, source = len(os.sched_getaffinity(0)), "CPU affinity"
    else:
        count, source = os.cpu_count() or 1, "CPU count"
    limit = cgroup_cpu_limit()
    if limit is not None and math.ceil(limit) < count:
        count, source = max(1, math.ceil(limit)), "cgroup CPU quota"
    return count, source


@dataclass(frozen=True)
class Choice:
    """A value chosen here and the reason, as a run's first line prints it: "2 threads (CPU affinity 2)"."""
    value: int | str
    reason: str
    unit: str = ""  # "thread": the value is a count of them

    def describe(self) -> str:
        unit = f" {self.unit}{'s' if self.value != 1 else ''}" if self.unit else ""
        return f"{self.value}{unit} ({self.reason})"


def choose_threads(requested: int | None, local_processes: int | None = None) -> Choice:
    """The intra-op thread count: the `num_threads` key, else OMP_NUM_THREADS, else the CPUs this process
    may use shared among the processes of this machine (torchrun's local ranks).

    More threads than free cores makes OpenMP threads spin against each other: on a loaded 2-core
    machine the quick demo ran 8x slower with 2 threads than with 1 (README "Threads").
    """
    if requested is not None:
        return Choice(requested, "num_threads", "thread")
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return Choice(int(env), "OMP_NUM_THREADS", "thread")
    count, source = available_cpus()
    if local_processes is None:  # torchrun's processes on this machine
        local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    if local_processes > 1:
        return Choice(max(1, count // local_processes), f"{source} {count} / {local_processes} processes", "thread")
    return Choice(count, f"{source} {count}", "thread")


def apply_threads(choice: Choice) -> None:
    """Set the intra-op thread count (the inter-op pool stays as PyTorch sizes it)."""
    if torch.get_num_threads() != choice.value:
        torch.set_num_threads(choice.value)


def resolve_forward_dtype(requested: str, device: torch.device) -> Choice:
    """The forward dtype a run uses: `auto` is bfloat16 on CUDA with bf16 support and on CPUs with bf16
    units, float32 elsewhere (MPS included); any other value is taken as given."""
    if requested != AUTO:
        return Choice(requested, "as configured")
    kind = torch.device(device).type
    if kind == "cuda":
        if torch.cuda.is_bf16_supported():
            return Choice("bfloat16", "auto: CUDA")
        return Choice("float32", "auto: this GPU has no bf16")
    if kind == "cpu":
        unit = bf16_units()
        if unit is not None:
            return Choice("bfloat16", f"auto: CPU with {unit}")
        return Choice("float32", "auto: CPU without bf16 units")
    return Choice("float32", f"auto: {kind}")
