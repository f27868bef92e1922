"""The `nccl` worker, run under torchrun: the trainer's distributed set-up and a one-rank group's collectives."""
import os
import time

import torch

from benchmarks.gpu.protocol import emit


def nccl_worker(dry_run: bool) -> int:
    """Under torchrun: the trainer's set-up, then a one-rank group (NCCL on CUDA, gloo in the dry run)."""
    import datetime

    import torch.distributed as dist

    from utils.distributed import destroy_distributed, init_distributed

    ctx = init_distributed("cpu" if dry_run else "cuda", timeout_s=60)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    # With one process init_distributed stays out of torch.distributed (the trainer needs no group then),
    # so join the group here exactly as it does for WORLD_SIZE > 1.
    timeout = datetime.timedelta(seconds=60)
    if ctx.device.type == "cuda":
        torch.cuda.set_device(ctx.device)
        dist.init_process_group(backend="nccl", init_method="env://", rank=ctx.rank, world_size=world_size,
                                device_id=ctx.device, timeout=timeout)
        cpu_group = dist.new_group(backend="gloo", timeout=timeout)
    else:
        dist.init_process_group(backend="gloo", init_method="env://", rank=ctx.rank, world_size=world_size,
                                timeout=timeout)
        cpu_group = dist.group.WORLD
    try:
        backend = str(dist.get_backend())
        start = time.perf_counter()
        values = torch.arange(1 << 20, dtype=torch.float32, device=ctx.device)
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        expected = torch.arange(1 << 20, dtype=torch.float32, device=ctx.device) * world_size
        reduced_ok = bool(torch.equal(values, expected))
        weights = torch.full((4096,), float(ctx.rank + 1), dtype=torch.bfloat16, device=ctx.device)
        dist.broadcast(weights, src=0)
        broadcast_ok = bool((weights == 1).all())
        holder = [{"rank": ctx.rank, "device": str(ctx.device)} if ctx.rank == 0 else None]
        dist.broadcast_object_list(holder, src=0, group=cpu_group)
        objects_ok = holder[0] is not None and holder[0]["rank"] == 0
        dist.barrier(group=cpu_group)
        if ctx.device.type == "cuda":
            torch.cuda.synchronize(ctx.device)
        seconds = time.perf_counter() - start
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        destroy_distributed(ctx)
    ok = reduced_ok and broadcast_ok and objects_ok and ctx.world_size == 1
    wanted = "gloo" if dry_run else "nccl"
    text = (f"backend {backend}, world size {world_size}, device {ctx.device}: all_reduce of 4 MiB "
            f"{'ok' if reduced_ok else 'WRONG'}, broadcast {'ok' if broadcast_ok else 'WRONG'}, object broadcast "
            f"over gloo {'ok' if objects_ok else 'WRONG'} ({seconds * 1e3:.0f} ms with set-up)")
    if backend != wanted:
        ok, text = False, f"expected backend {wanted}; {text}"
    emit(("skip" if dry_run else "pass") if ok else "fail", ("dry run (gloo on the CPU): " if dry_run else "") + text,
         backend=backend, world_size=world_size, seconds=seconds)
    return 0
