"""utils/distributed.py in one process: the single-process context (every helper an identity), the dist_timeout_s
key, and collective failures turned into one clear error naming the collective and its caller. (Real multi-process
jobs: tests/integration/test_distributed.py.)"""
import datetime
import os

import pytest
import torch
import torch.distributed as dist
from torch import nn

from tests.helpers import compose_config
from training.config import parse_config
from utils.distributed import (
    DistContext,
    all_reduce_grads,
    all_reduce_sum,
    any_rank,
    barrier,
    broadcast_object,
    collective_error,
    destroy_distributed,
    init_distributed,
    reduce_to_main,
)
from utils.errors import CollectiveError, ConfigError


def test_single_process_context(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = init_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.device, ctx.cpu_group) == (0, 1, 0, torch.device("cpu"), None)
    assert ctx.is_main and not ctx.is_distributed
    assert not dist.is_initialized()
    # Every helper is an identity / no-op without a process group.
    param = nn.Parameter(torch.ones(3))
    param.grad = torch.full((3,), 2.0)
    all_reduce_grads([param], ctx)
    assert torch.equal(param.grad, torch.full((3,), 2.0))
    assert broadcast_object({"a": 1}, ctx) == {"a": 1}
    value = torch.tensor([5.0])
    assert reduce_to_main(value, ctx) is value and value.item() == 5.0
    destroy_distributed(ctx)


def test_dist_timeout_key(monkeypatch):
    raw = compose_config(["data_paths=[unused]"])
    assert parse_config(raw).dist_timeout_s == 600
    with pytest.raises(ConfigError, match=r"dist_timeout_s: Input should be greater than or equal to 1 \(got 0\)"):
        parse_config(compose_config(["data_paths=[unused]", "dist_timeout_s=0"]))
    import torch.distributed as dist
    seen = {}
    monkeypatch.setattr(dist, "init_process_group", lambda **kwargs: seen.update(kwargs))
    for name, value in (("WORLD_SIZE", "2"), ("RANK", "1"), ("LOCAL_RANK", "1")):
        monkeypatch.setenv(name, value)
    ctx = init_distributed("cpu", timeout_s=15)
    assert seen["backend"] == "gloo" and seen["timeout"] == datetime.timedelta(seconds=15)
    assert ctx.timeout_s == 15 and ctx.rank == 1


def test_collective_failures_become_one_clear_error(monkeypatch):
    import torch.distributed as dist
    ctx = DistContext(rank=1, world_size=2, local_rank=1, device=torch.device("cpu"), cpu_group=object(),
                      timeout_s=20)

    def raising(message):
        def collective(*args, **kwargs):
            raise RuntimeError(message)
        return collective

    monkeypatch.setattr(dist, "all_reduce", raising("[gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting "
                                                    "20000ms for recv operation to complete"))
    with pytest.raises(CollectiveError) as err:
        all_reduce_sum(torch.ones(2), ctx)
    assert str(err.value).startswith("rank 1: all_reduce of the training metrics timed out after 20 s: another "
                                     "process stalled or died; ")
    assert "resume=auto" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(CollectiveError, match="rank 1: all_reduce of the stop flag timed out"):
        any_rank(True, ctx)
    monkeypatch.setattr(dist, "barrier", raising("[gloo/transport/tcp/pair.cc:534] Connection closed by peer "
                                                 "[127.0.0.1]:1234"))
    with pytest.raises(CollectiveError, match=r"rank 1: barrier .* failed: another process died or left the job"):
        barrier(ctx)
    monkeypatch.setattr(dist, "all_reduce", raising("Tensors must be contiguous"))
    with pytest.raises(RuntimeError, match="^Tensors must be contiguous$"):  # other errors pass unchanged
        all_reduce_sum(torch.ones(2), ctx)


def test_collective_called_elsewhere_is_named_from_the_traceback():
    import torch.distributed as dist
    inside_torch = os.path.join(os.path.dirname(dist.__file__), "distributed_c10d.py")
    namespace = {}
    exec(compile("def all_gather_into_tensor():\n    raise RuntimeError('Timed out waiting 15000ms for recv')\n",
                 inside_torch, "exec"), namespace)
    ctx = DistContext(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"), timeout_s=15)
    try:
        namespace["all_gather_into_tensor"]()
    except RuntimeError as err:
        converted = collective_error(err, ctx)
    assert str(converted).startswith("rank 0: all_gather_into_tensor (called from tests/unit/test_distributed.py:")
    assert "timed out after 15 s" in str(converted)
    assert collective_error(RuntimeError("DataLoader timed out"), ctx) is None  # not raised in torch.distributed
