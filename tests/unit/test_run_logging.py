"""Tests for utils/: device choice, compile switch, wandb mode, RunLogger, and a 2-rank gloo job."""
import json
import os
import socket
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from rundir.metrics import RunLogger, resolve_wandb_mode
from utils.device import select_device, should_compile, wide_float_dtype
from utils.distributed import (
    DistContext,
    all_reduce_grads,
    broadcast_module_state,
    broadcast_object,
    destroy_distributed,
    init_distributed,
    reduce_to_main,
)

NO_CUDA = not torch.cuda.is_available()


# ---------------------------------------------------------------- device.py

@pytest.mark.skipif(not NO_CUDA or torch.backends.mps.is_available(), reason="expects a CPU-only machine")
@pytest.mark.parametrize("request_", [None, "auto", "cpu"])
def test_select_device_cpu_only(request_):
    assert select_device(request_) == torch.device("cpu")


@pytest.mark.skipif(not NO_CUDA, reason="CUDA is available here")
@pytest.mark.parametrize("request_", ["cuda", "cuda:1"])
def test_select_device_rejects_missing_cuda(request_):
    with pytest.raises(ValueError, match=r"CUDA is not available; available: \['cpu'"):
        select_device(request_)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="MPS is available here")
def test_select_device_rejects_missing_mps():
    with pytest.raises(ValueError, match="MPS is not available"):
        select_device("mps")


@pytest.mark.parametrize("request_", ["tpu", "not-a-device"])
def test_select_device_rejects_unknown(request_):
    with pytest.raises(ValueError, match=f"{request_!r}"):
        select_device(request_)


def test_select_device_with_faked_cuda(monkeypatch):
    """The CUDA branches, checked without a GPU: only availability and count are consulted."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert select_device(None, local_rank=1) == torch.device("cuda", 1)
    assert select_device("auto") == torch.device("cuda", 0)
    assert select_device("cuda", local_rank=1) == torch.device("cuda", 1)
    assert select_device("cuda:0", local_rank=1) == torch.device("cuda", 0)
    assert select_device("cpu", local_rank=1) == torch.device("cpu")
    with pytest.raises(ValueError, match=r"only 2 CUDA device\(s\) exist; available: \['cpu', 'cuda:0', 'cuda:1'"):
        select_device("cuda:2")
    with pytest.raises(ValueError, match="only 2 CUDA"):
        select_device(None, local_rank=2)


def test_wide_float_dtype():
    assert wide_float_dtype(torch.device("cpu")) is torch.float64
    assert wide_float_dtype(torch.device("cuda", 0)) is torch.float64
    assert wide_float_dtype(torch.device("mps")) is torch.float32


def test_should_compile_defaults_and_flag(monkeypatch):
    monkeypatch.delenv("DISABLE_COMPILE", raising=False)
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert should_compile(cuda, None) is True
    assert should_compile(cpu, None) is False
    assert should_compile(torch.device("mps"), None) is False
    assert should_compile(cpu, True) is True
    assert should_compile(cuda, False) is False


@pytest.mark.parametrize("value", ["1", "0", ""])
def test_should_compile_env_disables_everything(monkeypatch, value):
    monkeypatch.setenv("DISABLE_COMPILE", value)
    cuda = torch.device("cuda", 0)
    assert should_compile(cuda, None) is False
    assert should_compile(cuda, True) is False


# ---------------------------------------------------------------- rundir/metrics.py

def test_no_module_shadows_the_standard_library():
    import pkgutil

    import utils
    names = {module.name for module in pkgutil.iter_modules(utils.__path__)}
    assert not names & set(sys.stdlib_module_names), names & set(sys.stdlib_module_names)


@pytest.fixture
def clean_wandb_env(monkeypatch, tmp_path):
    """A HOME without credentials and no wandb variables, so the host machine cannot leak in."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("NETRC", "WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.mark.parametrize("mode", ["online", "offline", "disabled"])
def test_resolve_wandb_mode_explicit(clean_wandb_env, monkeypatch, mode):
    monkeypatch.setenv("WANDB_MODE", "disabled")  # an explicit request beats the environment
    assert resolve_wandb_mode(mode) == mode


def test_resolve_wandb_mode_invalid(clean_wandb_env):
    with pytest.raises(ValueError, match="valid modes: online, offline, disabled"):
        resolve_wandb_mode("dryrun")


def test_resolve_wandb_mode_env(clean_wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode(None) == "disabled"
    monkeypatch.setenv("WANDB_MODE", "bogus")
    with pytest.raises(ValueError, match="WANDB_MODE"):
        resolve_wandb_mode(None)


def test_resolve_wandb_mode_no_credentials_is_offline(clean_wandb_env):
    assert resolve_wandb_mode(None) == "offline"


def test_resolve_wandb_mode_api_key(clean_wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode(None) == "online"


def test_resolve_wandb_mode_home_netrc(clean_wandb_env):
    netrc_file = clean_wandb_env / ".netrc"
    netrc_file.write_text("machine example.com login u password p\n")
    assert resolve_wandb_mode(None) == "offline"  # another host's entry is not a wandb login
    netrc_file.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    assert resolve_wandb_mode(None) == "online"


def test_resolve_wandb_mode_netrc_env(clean_wandb_env, monkeypatch, tmp_path):
    netrc_file = tmp_path / "custom_netrc"
    netrc_file.write_text("machine api.wandb.ai login user password secret\n")
    (clean_wandb_env / ".netrc").write_text("machine example.com login u password p\n")
    monkeypatch.setenv("NETRC", str(netrc_file))
    assert resolve_wandb_mode(None) == "online"
    monkeypatch.setenv("NETRC", str(tmp_path / "missing"))
    assert resolve_wandb_mode(None) == "offline"


def test_resolve_wandb_mode_base_url_host(clean_wandb_env, monkeypatch):
    (clean_wandb_env / ".netrc").write_text("machine api.wandb.ai login user password secret\n")
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    assert resolve_wandb_mode(None) == "offline"
    (clean_wandb_env / ".netrc").write_text("machine wandb.example.org login user password secret\n")
    assert resolve_wandb_mode(None) == "online"


def test_wandb_settings_disable_stats():
    from rundir.metrics import _wandb_settings
    assert _wandb_settings().x_disable_stats is True


def test_run_logger_writes_jsonl(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    run_dir = tmp_path / "run"
    logger = RunLogger(str(run_dir), project="p", run_name="r", config_dict={"lr": 1e-4}, wandb_mode="disabled")
    logger.log({"loss": torch.tensor(0.5), "count": np.int64(3), "acc": np.float32(0.25), "lr": 1e-4}, step=1)
    logger.log({"flag": torch.tensor(True), "n": torch.tensor([7])}, step=np.int64(2))
    with pytest.raises(ValueError, match="shape"):
        logger.log({"vec": torch.zeros(2)}, step=3)
    with pytest.raises(ValueError, match="reserved"):
        logger.log({"step": 4}, step=4)
    logger.finish()
    logger.finish()

    text = (run_dir / "metrics.jsonl").read_text()
    lines = text.splitlines()
    assert text.endswith("\n") and len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first == {"step": 1, "loss": 0.5, "count": 3, "acc": 0.25, "lr": 1e-4}
    assert type(first["count"]) is int and type(first["loss"]) is float
    assert second == {"step": 2, "flag": True, "n": 7}
    assert list(first) == ["step", "loss", "count", "acc", "lr"]


# ---------------------------------------------------------------- distributed.py

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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2, bias=False), nn.Linear(2, 2).double())
    model.register_buffer("counter", torch.tensor([seed, seed + 1], dtype=torch.int64))
    return model


def _set_rank_grads(params: list[nn.Parameter], rank: int) -> None:
    """Distinct per-rank grads; the last parameter gets none (it must be skipped)."""
    generator = torch.Generator().manual_seed(100 + rank)
    for param in params[:-1]:
        param.grad = torch.randn(param.shape, generator=generator).to(param.dtype)
    params[-1].grad = None


def _dist_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    ctx = init_distributed(None if NO_CUDA else "cpu")
    try:
        assert isinstance(ctx, DistContext)
        assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.device) == (rank, 2, rank, torch.device("cpu"))
        assert ctx.is_main == (rank == 0) and ctx.is_distributed
        assert ctx.cpu_group is not None and dist.get_backend(ctx.cpu_group) == "gloo"

        # broadcast_object: rank 0's object wins everywhere.
        assert broadcast_object({"from": rank, "list": [rank] * 3}, ctx) == {"from": 0, "list": [0, 0, 0]}

        # broadcast_module_state: every rank ends with rank 0's params and buffers (seed 0).
        model = _make_model(seed=rank)
        broadcast_module_state(model, ctx)
        reference = _make_model(seed=0)
        for name, tensor in reference.state_dict().items():
            assert torch.equal(model.state_dict()[name], tensor), name

        # all_reduce_grads: coalesced result equals a plain per-tensor all_reduce, bit for bit,
        # and equals the sum of both ranks' grads.
        params = list(model.parameters())
        _set_rank_grads(params, rank)
        expected = [None if p.grad is None else p.grad.clone() for p in params]
        for grad in expected:
            if grad is not None:
                dist.all_reduce(grad)
        all_reduce_grads(params, ctx)
        for param, want in zip(params, expected):
            if want is None:
                assert param.grad is None
            else:
                assert param.grad.dtype == want.dtype and torch.equal(param.grad, want)
        shadow = [nn.Parameter(p.detach().clone()) for p in params]
        total = [torch.zeros_like(p) for p in params]
        for other in range(world_size):
            _set_rank_grads(shadow, other)
            for acc, p in zip(total, shadow):
                if p.grad is not None:
                    acc += p.grad
        for param, acc in zip(params[:-1], total[:-1]):
            assert torch.equal(param.grad, acc)  # a + b is exact-order for two ranks

        # A parameter listed twice (tied weights) is still reduced once.
        tied = nn.Parameter(torch.zeros(2))
        tied.grad = torch.full((2,), float(rank + 1))
        all_reduce_grads([tied, tied], ctx)
        assert torch.equal(tied.grad, torch.full((2,), 3.0))

        # reduce_to_main: rank 0 gets the sum.
        value = reduce_to_main(torch.tensor([rank + 1.0, 10.0]), ctx)
        if ctx.is_main:
            assert torch.equal(value, torch.tensor([3.0, 20.0]))

        with open(os.path.join(out_dir, f"rank{rank}.ok"), "w") as marker:
            marker.write("ok")
    finally:
        destroy_distributed(ctx)


@pytest.mark.integration
def test_two_process_gloo(tmp_path, monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    mp.spawn(_dist_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    # The markers prove both workers reached the end of their checks.
    assert sorted(os.listdir(tmp_path)) == ["rank0.ok", "rank1.ok"]
