"""Multi-process jobs on the CPU (gloo): the collectives of utils/distributed.py, the sparse sign-SGD across two
ranks equal to one process, and a stalled rank failing a torchrun job with one clear message after dist_timeout_s."""
import contextlib
import datetime
import os
import signal
import socket
import subprocess
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from models.sparse_embedding import CastedSparseEmbedding
from rundir.layout import LOCK_FILE
from tests.helpers import REPO_ROOT
from tests.integration.test_run_lock import (
    LONG,
    RUN,
    descendants,
    kill_everything,
    start_pretrain,
    train_steps,
    wait_until,
)
from tests.unit.test_optimizers import _embedding_step, _expected_sign_sgd
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


# ---------------------------------------------------------------------------------------------
# The collectives of utils/distributed.py in two gloo processes
# ---------------------------------------------------------------------------------------------
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


def test_two_process_gloo(tmp_path, monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    mp.spawn(_dist_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    # The markers prove both workers reached the end of their checks.
    assert sorted(os.listdir(tmp_path)) == ["rank0.ok", "rank1.ok"]


# ---------------------------------------------------------------------------------------------
# The sparse sign-SGD across two gloo ranks
# ---------------------------------------------------------------------------------------------
# Global batch of the gloo test: id 3 appears on both ranks with gradients whose per-rank signs
# disagree with the sign of their sum, so skipping the cross-rank sum cannot pass.
_GLOBAL_IDS = [3, 0, 5, 3, 3, 2, 5, 7]
_NUM_ROWS, _DIM, _LR, _WD = 9, 3, 0.25, 0.2


def _gloo_problem():
    gen = torch.Generator().manual_seed(7)
    weights = torch.randn(_NUM_ROWS, _DIM, generator=gen)
    grads = torch.randn(len(_GLOBAL_IDS), _DIM, generator=gen)
    grads[0] = torch.tensor([1.0, 1.0, -1.0])
    grads[3] = torch.tensor([-0.75, -0.75, 0.75])
    grads[4] = torch.tensor([-0.5, -0.5, 0.5])
    return weights, torch.tensor(_GLOBAL_IDS, dtype=torch.int32), grads


def _gloo_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=30))
    try:
        weights, ids, grads = _gloo_problem()
        local = slice(rank * len(_GLOBAL_IDS) // world_size, (rank + 1) * len(_GLOBAL_IDS) // world_size)
        emb = CastedSparseEmbedding(_NUM_ROWS, _DIM, batch_size=local.stop - local.start, init_std=1.0,
                                    cast_to=torch.float32)
        emb.weights.copy_(weights)
        _embedding_step(emb, ids[local], grads[local], _LR, _WD, world_size)
        torch.save(emb.weights, os.path.join(out_dir, f"rank{rank}.pt"))
        # Both ranks done before either tears down: rank 0 hosts the store the other's teardown still uses
        # (without this, rank 1 aborted once under load with "terminate called without an active exception").
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_sparse_sign_sgd_two_gloo_ranks_equal_one_process(tmp_path):
    world_size = 2
    mp.spawn(_gloo_worker, args=(world_size, _free_port(), str(tmp_path)), nprocs=world_size, join=True)

    weights, ids, grads = _gloo_problem()
    single = CastedSparseEmbedding(_NUM_ROWS, _DIM, batch_size=len(_GLOBAL_IDS), init_std=1.0, cast_to=torch.float32)
    single.weights.copy_(weights)
    _embedding_step(single, ids, grads, _LR, _WD, world_size=1)
    assert torch.equal(single.weights, _expected_sign_sgd(weights, ids, grads, _LR, _WD))
    # Row 3's summed gradient is (-0.25, -0.25, 0.25): the sign rank 0 alone would see is flipped.
    torch.testing.assert_close(single.weights[3], weights[3] * (1 - _LR * _WD) - _LR * torch.tensor([-1.0, -1.0, 1.0]),
                               rtol=0, atol=1e-7)
    for rank in range(world_size):
        assert torch.equal(torch.load(tmp_path / f"rank{rank}.pt"), single.weights)


# ---------------------------------------------------------------------------------------------
# A stalled rank fails a torchrun job with one clear message, after dist_timeout_s
# ---------------------------------------------------------------------------------------------
def rank_pid(torchrun_pid: int, rank: int) -> int | None:
    """The PID of the worker with RANK=`rank` among torchrun's descendants (its DataLoader workers have none)."""
    for pid in descendants(torchrun_pid):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/environ", "rb") as f:
            if f"RANK={rank}".encode() in f.read().split(b"\0"):
                return pid
    return None


def test_stalled_rank_fails_the_job_with_one_clear_message(copy_task, tmp_path):
    start = time.monotonic()
    job = start_pretrain(copy_task, tmp_path / "run", *LONG, "dist_timeout_s=15", nproc=2)
    try:
        wait_until(lambda: len(train_steps(tmp_path / "run")) >= 2, job, timeout=90)
        stopped = rank_pid(job.pid, 1)
        assert stopped is not None, "rank 1 not found among torchrun's processes"
        os.kill(stopped, signal.SIGSTOP)
        _, stderr = job.communicate(timeout=max(1.0, 120 - (time.monotonic() - start)))
        elapsed = time.monotonic() - start
        assert job.returncode == 1, stderr[-3000:]
        ours = [line for line in stderr.splitlines() if line.startswith("error: ")]
        assert len(ours) == 1, stderr[-3000:]
        assert ours[0].startswith("error: rank 0: ") and " timed out after 15 s: another process stalled or died; " \
            in ours[0], ours[0]
        assert elapsed < 120, f"{elapsed:.0f} s"
        assert not os.path.exists(tmp_path / "run" / LOCK_FILE)
        print(f"stalled-rank job ended after {elapsed:.1f} s: {ours[0]}")
    finally:
        kill_everything(job)


# ---------------------------------------------------------------------------------------------
# Issue 23 C: a stopped rank 0, and a rendezvous that never completes, each end in one `error:` line
# ---------------------------------------------------------------------------------------------
def start_rank(copy_task: str, run_dir, rank: int, port: int, stderr, *extra: str) -> subprocess.Popen:
    """One rank of a two-process job started by hand (torchrun's environment variables), writing to `stderr`."""
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1", PYTHONPATH=REPO_ROOT, MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank))
    args = [f"data_paths=[{copy_task}]", *RUN, "device=cpu", f"+checkpoint_path={run_dir}", *extra]
    return subprocess.Popen([sys.executable, os.path.join(REPO_ROOT, "pretrain.py"), *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)


def test_issue23_c_a_stopped_rank_0_is_named_by_the_rank_left_waiting(copy_task, tmp_path):
    """Both ranks share one stderr, as under torchrun: rank 0's progress bar leaves its line open, and rank 1's
    error must still be a line of its own that starts with `error:`."""
    port, log_path = _free_port(), tmp_path / "stderr.txt"
    with open(log_path, "w") as log:
        ranks = [start_rank(copy_task, tmp_path / "run", rank, port, log, *LONG, "dist_timeout_s=3")
                 for rank in (0, 1)]
    try:
        wait_until(lambda: len(train_steps(tmp_path / "run")) >= 2, ranks[0], timeout=60)
        os.kill(ranks[0].pid, signal.SIGSTOP)
        assert ranks[1].wait(timeout=30) == 1
        stderr = log_path.read_text()
        ours = [line for line in stderr.splitlines() if line.startswith("error: ")]
        assert len(ours) == 1, stderr[-3000:]
        assert ours[0].startswith("error: rank 1: ") and " timed out after 3 s: another process stalled or died; " \
            in ours[0], ours[0]
    finally:
        for process in ranks:
            kill_everything(process)


def test_issue23_c_a_rendezvous_that_never_completes_is_one_line(copy_task, tmp_path):
    port, log_path = _free_port(), tmp_path / "stderr.txt"
    with open(log_path, "w") as log:
        alone = start_rank(copy_task, tmp_path / "run", 0, port, log, "dist_timeout_s=2")
    try:
        assert alone.wait(timeout=30) == 1
    finally:
        kill_everything(alone)
    stderr = log_path.read_text()
    assert "Traceback" not in stderr, stderr[-3000:]
    ours = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(ours) == 1, stderr[-3000:]
    assert f"127.0.0.1:{port}" in ours[0] and "2 s" in ours[0] and "rendezvous" in ours[0], ours[0]
