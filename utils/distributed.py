"""Process-group set-up and the few collectives the trainer needs.

Every function is a no-op (or an identity) in a single process, so the trainer calls them
unconditionally. Under torchrun the default group uses NCCL on CUDA (fast gradient
traffic) and gloo otherwise; a separate gloo group carries Python objects and CPU metrics,
which NCCL cannot move.

Every collective waits at most the process-group timeout (`dist_timeout_s`); a collective that times out
or loses its peer raises a `CollectiveError` naming the rank and the collective, instead of a backend
traceback (with NCCL, PyTorch's watchdog ends the process itself; docs/running.md, "Exit codes").
"""
import datetime
import functools
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn

from utils.device import select_device
from utils.errors import CollectiveError
from utils.slurm import torchrun_env_from_slurm


@dataclass
class DistContext:
    """Where this process sits in the job and which device/groups it uses."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    cpu_group: Any = None  # gloo ProcessGroup for CPU object/metric exchange; None in a single process
    timeout_s: float | None = None  # the process-group timeout (None: PyTorch's default)

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs, writes checkpoints and evaluates metrics."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int | None = None) -> int:
    """Read a torchrun integer variable; a missing required one is a launch error, not a default."""
    value = os.environ.get(name)
    if value is None or value == "":
        if default is None:
            raise ValueError(f"Environment variable {name} is required when WORLD_SIZE > 1 (launch with torchrun)")
        return default
    return int(value)


def init_distributed(device_request: str | None, timeout_s: float | None = None) -> DistContext:
    """Set up this process: a single process without WORLD_SIZE>1, else join the torchrun group.

    `timeout_s` bounds every collective (NCCL and gloo groups alike); None keeps PyTorch's default. Tasks that
    srun started (SLURM, no torchrun) join as torchrun's processes would (utils/slurm.py).
    """
    os.environ.update(torchrun_env_from_slurm(os.environ))
    world_size = _env_int("WORLD_SIZE", default=1)
    if world_size <= 1:
        # No torch.distributed at all: nothing to rendezvous with, and no port to hold.
        return DistContext(rank=0, world_size=1, local_rank=0, device=select_device(device_request, 0))

    rank = _env_int("RANK")
    local_rank = _env_int("LOCAL_RANK")
    device = select_device(device_request, local_rank)
    timeout = datetime.timedelta(seconds=timeout_s) if timeout_s is not None else None
    try:
        if device.type == "cuda":
            # Pin the device first so NCCL and any implicit "current device" use the right GPU.
            torch.cuda.set_device(device)
            dist.init_process_group(backend="nccl", init_method="env://", rank=rank, world_size=world_size,
                                    device_id=device, timeout=timeout)
            cpu_group = dist.new_group(backend="gloo", timeout=timeout)
        else:
            dist.init_process_group(backend="gloo", init_method="env://", rank=rank, world_size=world_size,
                                    timeout=timeout)
            cpu_group = dist.group.WORLD  # already gloo: a second group would only cost sockets
    except dist.DistError as err:  # the store (TCP rendezvous) timed out or cannot be reached
        raise rendezvous_error(err, rank, world_size, timeout_s) from None
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device, cpu_group=cpu_group,
                       timeout_s=timeout_s)


def rendezvous_error(err: BaseException, rank: int, world_size: int, timeout_s: float | None) -> CollectiveError:
    """The one-line error for a process group that could not be formed: where the processes were to meet."""
    where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    within = f"{timeout_s:g} s" if timeout_s is not None else "the process-group timeout"
    detail = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return CollectiveError(f"rank {rank}: the rendezvous of the {world_size} processes at {where} (MASTER_ADDR:"
                           f"MASTER_PORT) did not complete within {within} ({detail}): start every process of the "
                           "job (torchrun --nproc-per-node, --nnodes) with the same address and port, reachable "
                           "from every node (dist_timeout_s sets the timeout)")


def destroy_distributed(ctx: DistContext) -> None:
    """Tear down the process groups so the job exits cleanly (NCCL warns otherwise)."""
    if ctx.is_distributed and dist.is_initialized():
        dist.destroy_process_group()


_TIMEOUT_WORDS = ("timed out", "timeout")
_PEER_LOST_WORDS = ("connection closed by peer", "connection reset by peer", "broken pipe", "connection refused")
_ADVICE = ("check the other ranks' output; the last checkpoint is intact: continue with resume=auto "
           "(dist_timeout_s sets the timeout)")


def collective_error(err: BaseException, ctx: DistContext, what: str | None = None) -> CollectiveError | None:
    """The one-line error for a collective that timed out or lost its peer; None for any other error.

    `what` names the collective; without it (a collective called outside this module, e.g. by an optimizer
    or an evaluator) the error counts only if raised inside torch.distributed, and is named from the traceback.
    """
    if not isinstance(err, RuntimeError) or not ctx.is_distributed:  # gloo: RuntimeError; NCCL: DistBackendError
        return None
    if what is None:
        what = _collective_in_traceback(err)
        if what is None:
            return None
    text = str(err).strip()
    if any(word in text.lower() for word in _TIMEOUT_WORDS):
        after = f"{ctx.timeout_s:g} s" if ctx.timeout_s is not None else "the process-group timeout"
        return CollectiveError(f"rank {ctx.rank}: {what} timed out after {after}: another process stalled or died; "
                               f"{_ADVICE}")
    if any(word in text.lower() for word in _PEER_LOST_WORDS):
        return CollectiveError(f"rank {ctx.rank}: {what} failed: another process died or left the job "
                               f"({text.splitlines()[0]}); {_ADVICE}")
    return None


def _collective_in_traceback(err: BaseException) -> str | None:
    """`<torch.distributed function> (called from <file>:<line>)` when `err` was raised inside torch.distributed."""
    frames, tb = [], err.__traceback__
    while tb is not None:
        frames.append((tb.tb_frame.f_code, tb.tb_lineno))
        tb = tb.tb_next
    torch_dir = os.path.dirname(os.path.abspath(dist.__file__)) + os.sep
    inside = [i for i, (code, _) in enumerate(frames) if os.path.abspath(code.co_filename).startswith(torch_dir)]
    if not inside:
        return None
    first = inside[0]
    name = next((code.co_name for code, _ in frames[first:] if code.co_filename.endswith("distributed_c10d.py")),
                frames[first][0].co_name)
    if not first:
        return name
    caller, line = frames[first - 1]
    return f"{name} (called from {os.path.relpath(caller.co_filename)}:{line})"


def _collective(what: str, ctx: DistContext, run: Callable[[], Any]) -> Any:
    """`run()`, with a timed-out or broken collective turned into one clear `CollectiveError`."""
    try:
        return run()
    except RuntimeError as err:
        converted = collective_error(err, ctx, what)
        if converted is None:
            raise
        raise converted from None


def broadcast_object(obj: Any, ctx: DistContext, what: str = "broadcast of a Python object from rank 0") -> Any:
    """Return rank 0's `obj` on every rank (picklable objects, sent over the CPU group)."""
    if not ctx.is_distributed:
        return obj
    holder = [obj if ctx.is_main else None]
    _collective(what, ctx, lambda: dist.broadcast_object_list(holder, src=0, group=ctx.cpu_group))
    return holder[0]


def _group_by_dtype_device(
        tensors: Iterable[torch.Tensor]) -> dict[tuple[torch.dtype, torch.device], list[torch.Tensor]]:
    """Bucket tensors so each bucket can be flattened into one buffer (cat needs one dtype/device).

    The same tensor object appearing twice (tied weights) is kept once: reducing it twice
    would double its sum.
    """
    buckets: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    seen: set[int] = set()
    for tensor in tensors:
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        buckets.setdefault((tensor.dtype, tensor.device), []).append(tensor)
    return buckets


def _group_for(tensor: torch.Tensor, ctx: DistContext) -> Any:
    """CPU tensors travel over the gloo group (NCCL rejects them); device tensors over the default group."""
    return ctx.cpu_group if tensor.device.type == "cpu" else None


def _coalesced_in_place(tensors: Iterable[torch.Tensor], ctx: DistContext,
                        collective: Callable[[torch.Tensor, Any], Any], what: str) -> None:
    """Run `collective(flat, group)` once per dtype/device bucket on a flat copy, then write results back.

    One large collective is much faster than hundreds of small ones; the element-wise
    result is identical because the reduction is per element either way.
    """
    for bucket in _group_by_dtype_device(tensors).values():
        flat = torch.cat([tensor.reshape(-1) for tensor in bucket])
        _collective(what, ctx, functools.partial(collective, flat, _group_for(flat, ctx)))
        offset = 0
        for tensor in bucket:
            count = tensor.numel()
            tensor.copy_(flat[offset:offset + count].view_as(tensor))
            offset += count


def all_reduce_grads(params: Iterable[nn.Parameter], ctx: DistContext) -> None:
    """Sum gradients over all ranks in place (params without a grad are skipped)."""
    if not ctx.is_distributed:
        return
    grads = [param.grad for param in params if param.grad is not None]
    for grad in grads:
        if grad.is_sparse:
            raise ValueError("all_reduce_grads supports dense gradients only; got a sparse gradient")
    with torch.no_grad():
        _coalesced_in_place(grads, ctx, lambda flat, group: dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group),
                            "all_reduce of the gradients")


def broadcast_module_state(module: nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's parameters and buffers into every rank's module, so all start identical."""
    if not ctx.is_distributed:
        return
    tensors = [param.data for param in module.parameters()] + [buffer.data for buffer in module.buffers()]
    with torch.no_grad():
        _coalesced_in_place(tensors, ctx, lambda flat, group: dist.broadcast(flat, src=0, group=group),
                            "broadcast of the initial weights from rank 0")


def reduce_to_main(tensor: torch.Tensor, ctx: DistContext,
                   what: str = "reduce of the evaluation metrics") -> torch.Tensor:
    """Sum `tensor` into rank 0 in place and return it; only rank 0's result is meaningful."""
    if ctx.is_distributed:
        _collective(what, ctx, lambda: dist.reduce(tensor, dst=0, op=dist.ReduceOp.SUM, group=_group_for(tensor, ctx)))
    return tensor


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext,
                   what: str = "all_reduce of the training metrics") -> torch.Tensor:
    """Sum `tensor` over ranks in place, every rank gets the result."""
    if ctx.is_distributed:
        _collective(what, ctx, lambda: dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=_group_for(tensor, ctx)))
    return tensor


def any_rank(flag: bool, ctx: DistContext, what: str = "all_reduce of the stop flag") -> bool:
    """True on every rank when `flag` is true on at least one (so all ranks take the same branch)."""
    if not ctx.is_distributed:
        return flag
    value = torch.tensor([int(flag)], dtype=torch.int32)
    _collective(what, ctx, lambda: dist.all_reduce(value, op=dist.ReduceOp.MAX, group=ctx.cpu_group))
    return bool(value.item())


def barrier(ctx: DistContext, what: str = "barrier (waiting for every process)") -> None:
    if ctx.is_distributed:
        _collective(what, ctx, lambda: dist.barrier(group=ctx.cpu_group))
