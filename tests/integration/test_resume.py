"""Exact resume, crash-safe checkpoints, clean stops and the bad-input cases of checkpoints."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from dataset.build_copy_dataset import write_copy_task
from rundir.layout import list_train_states
from rundir.states import WRITE_DELAY_ENV
from tests.helpers import REPO_ROOT, TINY_ARCH, compose_config, cpu_context
from training.config import parse_config
from utils.errors import CheckpointError, NonFiniteLossError

pytestmark = pytest.mark.integration  # whole runs and subprocesses

# 64 puzzles / batch 16 = 4 steps per epoch; 4 epochs in 2 iterations = 16 steps, an eval at step 8.
RUN = [*TINY_ARCH, "arch.halt_exploration_prob=0.5", "global_batch_size=16", "epochs=4", "eval_interval=2",
       "lr=1e-3", "lr_warmup_steps=3", "ema=true", "evaluators=[]", "wandb_mode=disabled"]


@pytest.fixture(scope="module")
def data(copy_task) -> str:
    return copy_task


def train_in_process(data: str, run_dir, *extra: str):
    from training.loop import train
    raw = compose_config([f"data_paths=[{data}]", *RUN, f"+checkpoint_path={run_dir}", *extra])
    return train(parse_config(raw), cpu_context())


def train_losses(run_dir) -> dict[int, dict]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    return {m["step"]: m for m in lines if "train/lm_loss" in m}


def assert_states_equal(a: dict, b: dict, where: str = "") -> None:
    """Bitwise equality of nested dicts/lists of tensors and numbers."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"{where}: keys differ"
        for k in a:
            assert_states_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for i, (x, y) in enumerate(zip(a, b)):
            assert_states_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a} != {b}"


def final_state(run_dir) -> dict:
    step, path = list_train_states(str(run_dir))[-1]
    return torch.load(os.path.join(path, "state.pt"), weights_only=True)


def rank_states(run_dir) -> list[dict]:
    _, path = list_train_states(str(run_dir))[-1]
    files = sorted(f for f in os.listdir(path) if f.startswith("rank"))
    return [torch.load(os.path.join(path, f), weights_only=True) for f in files]


def compare_runs(straight_dir, resumed_dir) -> None:
    a, b = final_state(straight_dir), final_state(resumed_dir)
    assert a["step"] == b["step"] == 16
    for key in ("model", "optimizers", "ema"):
        assert_states_equal(a[key], b[key], key)
    # Per-rank RNG streams and ACT carries continue exactly too.
    assert_states_equal(rank_states(straight_dir), rank_states(resumed_dir), "rank state")
    la, lb = train_losses(straight_dir), train_losses(resumed_dir)
    assert la.keys() == lb.keys() == set(range(1, 17))
    for step in la:
        assert la[step] == lb[step], f"logged metrics differ at step {step}"


def test_exact_resume_single_process(data, tmp_path):
    train_in_process(data, tmp_path / "straight")
    train_in_process(data, tmp_path / "resumed", "stop_at_step=6")  # mid-iteration
    assert [s for s, _ in list_train_states(str(tmp_path / "resumed"))] == [6]
    train_in_process(data, tmp_path / "resumed", "resume=auto", "stop_at_step=11")  # across the eval at step 8
    train_in_process(data, tmp_path / "resumed", "resume=auto")
    compare_runs(tmp_path / "straight", tmp_path / "resumed")


def run_pretrain(args: list[str], nproc: int = 1, env: dict | None = None, wait: bool = True):
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1", PYTHONPATH=REPO_ROOT, **(env or {}))
    cmd = [sys.executable, os.path.join(REPO_ROOT, "pretrain.py")]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
               os.path.join(REPO_ROOT, "pretrain.py")]
    if not wait:
        # Its own process group, so that a signal reaches the DataLoader worker too, as a scheduler's would.
        return subprocess.Popen(cmd + args, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
    return subprocess.run(cmd + args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)


def cli_args(data: str, run_dir, *extra: str) -> list[str]:
    return [f"data_paths=[{data}]", *RUN, "device=cpu", f"+checkpoint_path={run_dir}", *extra]


@pytest.mark.slow
def test_exact_resume_two_processes(data, tmp_path):
    for name, stops in (("straight", [None]), ("resumed", [6, None])):
        for i, stop in enumerate(stops):
            extra = (["resume=auto"] if i else []) + ([f"stop_at_step={stop}"] if stop else [])
            result = run_pretrain(cli_args(data, tmp_path / name, *extra), nproc=2)
            assert result.returncode == 0, result.stderr[-3000:]
    assert os.path.isfile(tmp_path / "resumed" / "train_state_step_6" / "rank1.pt")
    compare_runs(tmp_path / "straight", tmp_path / "resumed")


def wait_for(predicate, process, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert process.poll() is None, f"process ended early: {process.communicate()[1][-3000:]}"
        assert time.time() < deadline, "timed out waiting"
        time.sleep(0.05)


def test_sigkill_while_saving_keeps_previous_checkpoint(data, tmp_path):
    first = run_pretrain(cli_args(data, tmp_path, "stop_at_step=4"))
    assert first.returncode == 0, first.stderr[-3000:]
    process = run_pretrain(cli_args(data, tmp_path, "resume=auto", "stop_at_step=7"), env={WRITE_DELAY_ENV: "60"},
                           wait=False)
    wait_for(lambda: os.path.exists(tmp_path / "train_state_step_7.tmp" / "state.pt"), process)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert [s for s, _ in list_train_states(str(tmp_path))] == [4]
    resumed = run_pretrain(cli_args(data, tmp_path, "resume=auto"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "train_state_step_4 at step 4" in resumed.stdout
    assert not os.path.exists(tmp_path / "train_state_step_7.tmp")
    assert list_train_states(str(tmp_path))[-1][0] == 16


def test_sigterm_finishes_step_saves_and_exits(data, tmp_path):
    process = run_pretrain(cli_args(data, tmp_path, "epochs=400", "eval_interval=400"), wait=False)
    wait_for(lambda: len(train_losses(tmp_path)) >= 3 if os.path.exists(tmp_path / "metrics.jsonl") else False,
             process)
    os.killpg(process.pid, signal.SIGTERM)  # trainer and its DataLoader worker
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-3000:]
    assert "Stopped on SIGTERM" in stdout
    saved_step = list_train_states(str(tmp_path))[-1][0]
    assert saved_step == max(train_losses(tmp_path))  # the step in flight was finished and saved
    assert os.path.isfile(tmp_path / f"step_{saved_step}")


def test_keep_last_and_interval(data, tmp_path):
    train_in_process(data, tmp_path, "checkpoint_interval=3", "checkpoint_keep_last=2")
    assert [s for s, _ in list_train_states(str(tmp_path))] == [15, 16]
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith("step_")) == ["step_15", "step_16"]


def test_corrupt_checkpoint_is_reported_and_kept(data, tmp_path):
    train_in_process(data, tmp_path, "stop_at_step=4")
    state_file = tmp_path / "train_state_step_4" / "state.pt"
    with open(state_file, "r+b") as f:
        f.truncate(os.path.getsize(state_file) // 2)
    before = state_file.read_bytes()
    result = run_pretrain(cli_args(data, tmp_path, "resume=auto"))
    assert result.returncode != 0
    assert f"Cannot read checkpoint {state_file}" in result.stderr and "Traceback" not in result.stderr
    assert state_file.read_bytes() == before
    assert [s for s, _ in list_train_states(str(tmp_path))] == [4]


def test_dataset_mismatch_is_reported(data, tmp_path):
    train_in_process(data, tmp_path / "run", "stop_at_step=2")
    other = write_copy_task(str(tmp_path / "other"), num_train_puzzles=48, num_test_puzzles=8, seq_len=8, vocab_size=6,
                            num_puzzle_identifiers=65)
    from training.loop import train
    raw = compose_config([f"data_paths=[{other}]", *RUN, f"+checkpoint_path={tmp_path / 'run'}", "resume=auto"])
    with pytest.raises(CheckpointError, match="dataset differs .*total_puzzles"):
        train(parse_config(raw), cpu_context())


def test_missing_resume_path_is_reported(data, tmp_path):
    result = run_pretrain(cli_args(data, tmp_path, f"resume={tmp_path / 'nowhere'}"))
    assert result.returncode != 0 and "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_non_finite_loss_stops_without_touching_checkpoint(data, tmp_path):
    train_in_process(data, tmp_path, "stop_at_step=2")
    before = (tmp_path / "train_state_step_2" / "state.pt").read_bytes()
    with pytest.raises(NonFiniteLossError, match=r"Non-finite loss at step \d+.*train_state_step_2"):
        train_in_process(data, tmp_path, "resume=auto", "lr=1e38", "lr_warmup_steps=0")
    assert (tmp_path / "train_state_step_2" / "state.pt").read_bytes() == before
    assert [s for s, _ in list_train_states(str(tmp_path))] == [2]


def test_load_checkpoint_rejects_truncated_file(data, tmp_path):
    bad = tmp_path / "weights"
    bad.write_bytes(b"not a checkpoint")
    result = run_pretrain(cli_args(data, tmp_path / "run", f"+load_checkpoint={bad}"))
    assert result.returncode != 0 and f"Cannot read checkpoint {bad}" in result.stderr
