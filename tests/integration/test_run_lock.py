"""One run per run directory (rundir/lock.py), in real runs: the lock names its holder and is released after a run,
after an error and on SIGTERM; a stale lock is taken over; a second run on a locked directory, and the other ranks
of a job whose rank 0 cannot lock, stop at once."""
import contextlib
import datetime
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from rundir.layout import LOCK_FILE, list_train_states, lock_path
from tests.helpers import TINY_ARCH, compose_config, cpu_context, run_pretrain
from tests.unit.test_run_lock import write_lock
from training.config import parse_config
from utils.errors import UserFacingError

# 64 puzzles / batch 16 = 4 steps per epoch; 4 epochs in 2 iterations = 16 steps, an eval at step 8.
RUN = [*TINY_ARCH, "global_batch_size=16", "epochs=4", "eval_interval=2", "lr=1e-3", "lr_warmup_steps=3",
       "evaluators=[]", "wandb_mode=disabled", "num_workers=0"]
LONG = ["epochs=400", "eval_interval=400"]  # far more steps than any test here waits for


def train_in_process(data: str, run_dir, *extra: str):
    from training.loop import train
    raw = compose_config([f"data_paths=[{data}]", *RUN, f"+checkpoint_path={run_dir}", *extra])
    return train(parse_config(raw), cpu_context())


def start_pretrain(data: str, run_dir, *extra: str, nproc: int = 1) -> subprocess.Popen:
    """pretrain.py (under torchrun for nproc > 1) in its own session, so that it can be signalled as a whole."""
    return run_pretrain([f"data_paths=[{data}]", *RUN, "device=cpu", f"+checkpoint_path={run_dir}", *extra], nproc,
                        wait=False)


def train_steps(run_dir) -> list[int]:
    """Steps of the train lines of metrics.jsonl so far (a run in progress may be mid-line)."""
    lines = []
    with contextlib.suppress(FileNotFoundError), open(os.path.join(run_dir, "metrics.jsonl")) as f:
        lines = f.read().splitlines()
    return [json.loads(line)["step"] for line in lines if line.endswith("}") and "train/lm_loss" in line]


def wait_until(predicate, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process.poll() is not None:
            pytest.fail(f"process ended early ({process.returncode}): {process.communicate()[1][-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s")
        time.sleep(0.1)


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc."""
    found, queue = [], [pid]
    while queue:
        for children in glob.glob(f"/proc/{queue.pop()}/task/*/children"):
            with contextlib.suppress(OSError), open(children) as f:
                new = [int(child) for child in f.read().split()]
                found, queue = found + new, queue + new
    return found


def kill_everything(process: subprocess.Popen) -> None:
    """SIGKILL a test's process, its session and every descendant (also ones that left the session)."""
    for pid in descendants(process.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.communicate(timeout=30)


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_lock_names_the_holder_and_is_released_after_a_run(copy_task, tmp_path, monkeypatch):
    import training.loop
    seen, original = {}, training.loop.run_iterations

    def run_iterations(config, *args):
        with open(lock_path(config.checkpoint_path)) as f:
            seen.update(json.load(f))
        return original(config, *args)

    monkeypatch.setattr(training.loop, "run_iterations", run_iterations)
    train_in_process(copy_task, tmp_path / "run", "stop_at_step=2")
    assert seen["host"] == socket.gethostname() and seen["pid"] == os.getpid()
    assert "pytest" in seen["command"] or sys.argv[0] in seen["command"]
    assert datetime.datetime.fromisoformat(seen["started"])
    assert not os.path.exists(tmp_path / "run" / LOCK_FILE)


def test_lock_is_released_after_an_error(copy_task, tmp_path, monkeypatch):
    import training.loop

    def failing(*args):
        assert os.path.exists(tmp_path / "run" / LOCK_FILE)
        raise RuntimeError("boom")

    with monkeypatch.context() as patch:
        patch.setattr(training.loop, "run_iterations", failing)
        with pytest.raises(RuntimeError, match="boom"):
            train_in_process(copy_task, tmp_path / "run")
    assert not os.path.exists(tmp_path / "run" / LOCK_FILE)
    train_in_process(copy_task, tmp_path / "run", "stop_at_step=1", "resume=auto")  # the directory is free again
    # An error before anything was written leaves no run directory behind (the lock made it).
    with pytest.raises((FileNotFoundError, UserFacingError), match="does not exist"):
        train_in_process(str(tmp_path / "missing-data"), tmp_path / "never" / "run")
    assert not os.path.exists(tmp_path / "never")


def test_stale_lock_of_a_dead_process_is_taken_over(copy_task, tmp_path, capsys):
    path = write_lock(tmp_path / "run", socket.gethostname(), dead_pid())
    train_in_process(copy_task, tmp_path / "run", "stop_at_step=1")
    assert "Took over the stale lock" in capsys.readouterr().out
    assert not os.path.exists(path)
    assert [s for s, _ in list_train_states(str(tmp_path / "run"))] == [1]


def test_second_run_on_a_locked_directory_stops_at_once(copy_task, tmp_path):
    run_dir = tmp_path / "run"
    first = start_pretrain(copy_task, run_dir, *LONG, "checkpoint_interval=5", "resume=auto")
    second = None
    try:
        wait_until(lambda: len(train_steps(run_dir)) >= 3, first, timeout=120)
        config_before = (run_dir / "all_config.yaml").read_bytes()
        start = time.monotonic()
        second = start_pretrain(copy_task, run_dir, *LONG, "checkpoint_interval=5", "resume=auto")
        _, stderr = second.communicate(timeout=120)
        elapsed = time.monotonic() - start
        assert second.returncode == 1, stderr[-3000:]
        assert f"is in use by another run (host {socket.gethostname()}, PID {first.pid}," in stderr, stderr
        assert "Traceback" not in stderr and len([line for line in stderr.splitlines() if "error:" in line]) == 1
        assert elapsed < 60, f"the second run took {elapsed:.0f} s to stop"
        steps_then = len(train_steps(run_dir))
        wait_until(lambda: len(train_steps(run_dir)) > steps_then + 2, first, timeout=60)  # the first goes on
        assert (run_dir / "all_config.yaml").read_bytes() == config_before
        os.killpg(first.pid, signal.SIGTERM)
        _, first_err = first.communicate(timeout=120)
        assert first.returncode == 0, first_err[-3000:]
        assert not os.path.exists(run_dir / LOCK_FILE), "a SIGTERM stop must release the lock"
        steps = train_steps(run_dir)
        assert steps == list(range(1, len(steps) + 1))
    finally:
        for process in (first, second):
            if process is not None:
                kill_everything(process)


def test_other_ranks_stop_when_rank_0_cannot_lock(copy_task, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    job = None
    try:
        path = write_lock(tmp_path / "run", socket.gethostname(), holder.pid)
        before = open(path).read()
        job = start_pretrain(copy_task, tmp_path / "run", "dist_timeout_s=30", nproc=2)
        _, stderr = job.communicate(timeout=150)
        assert job.returncode == 1, stderr[-3000:]
        assert f"PID {holder.pid}" in stderr and len([line for line in stderr.splitlines() if "error:" in line]) == 1
        assert "timed out" not in stderr  # the other rank was told, not left waiting
        assert open(path).read() == before and os.listdir(tmp_path / "run") == [LOCK_FILE]
    finally:
        holder.kill()
        holder.wait()
        if job is not None:
            kill_everything(job)


def test_issue23_b_a_run_dir_that_cannot_be_made_is_one_line_before_the_data_is_read(copy_task, tmp_path):
    """Issue 23 B: +run_name of 300 characters (ENAMETOOLONG) was a raw OSError traceback."""
    result = run_pretrain([f"data_paths=[{tmp_path / 'no-data-yet'}]", *RUN, "device=cpu",
                           f"+checkpoint_path={tmp_path / 'runs' / ('x' * 300)}"])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 1 and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "too long" in errors[0] and str(tmp_path / "runs") in errors[0]  # not the missing data: it comes first
    assert os.listdir(tmp_path) == []
