"""One run per run directory, one log line per step after a resume, and no hang on a stalled rank (issue 13)."""
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
import torch

from rundir.layout import LOCK_FILE, WANDB_ID_FILE, list_train_states, lock_path
from rundir.lock import STALE_AFTER_S, RunLock
from rundir.metrics import RunLogger, truncate_metrics
from tests.helpers import REPO_ROOT, TINY_ARCH, compose_config, cpu_context, read_metrics
from training.config import parse_config
from utils.distributed import DistContext, all_reduce_sum, any_rank, barrier, collective_error, init_distributed
from utils.errors import CollectiveError, ConfigError, RunLockedError, UserFacingError

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
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1", PYTHONPATH=REPO_ROOT)
    cmd = [sys.executable, os.path.join(REPO_ROOT, "pretrain.py")]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), cmd[1]]
    args = [f"data_paths=[{data}]", *RUN, "device=cpu", f"+checkpoint_path={run_dir}", *extra]
    return subprocess.Popen(cmd + args, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


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


def write_lock(run_dir, host: str, pid: int, **extra) -> str:
    os.makedirs(run_dir, exist_ok=True)
    path = lock_path(str(run_dir))
    with open(path, "w") as f:
        json.dump({"host": host, "pid": pid, "started": "2000-01-01T00:00:00+00:00",
                   "command": "python pretrain.py (an earlier run)", "token": "theirs", **extra}, f)
    return path


# ---- Finding 2: one run per run directory
@pytest.mark.integration
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


@pytest.mark.integration
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
    train_in_process(copy_task, tmp_path / "run", "stop_at_step=1")  # the directory is free again
    # An error before anything was written leaves no run directory behind (the lock made it).
    with pytest.raises((FileNotFoundError, UserFacingError), match="does not exist"):
        train_in_process(str(tmp_path / "missing-data"), tmp_path / "never" / "run")
    assert not os.path.exists(tmp_path / "never")


@pytest.mark.integration
def test_stale_lock_of_a_dead_process_is_taken_over(copy_task, tmp_path, capsys):
    path = write_lock(tmp_path / "run", socket.gethostname(), dead_pid())
    train_in_process(copy_task, tmp_path / "run", "stop_at_step=1")
    assert "Took over the stale lock" in capsys.readouterr().out
    assert not os.path.exists(path)
    assert [s for s, _ in list_train_states(str(tmp_path / "run"))] == [1]


def test_lock_held_by_a_live_process_or_another_host(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path = write_lock(tmp_path, socket.gethostname(), holder.pid)
        with pytest.raises(RunLockedError) as err:
            RunLock(str(tmp_path)).acquire()
        message = str(err.value)
        assert f"host {socket.gethostname()}, PID {holder.pid}" in message and f"delete {path}" in message
        assert "\n" not in message
    finally:
        holder.kill()
        holder.wait()
    # A recycled PID (same number, another process start time) is not the holder.
    write_lock(tmp_path, socket.gethostname(), os.getpid(), proc_start="1")
    RunLock(str(tmp_path)).acquire().release()
    # Another host: held while its heartbeat is recent, stale once it stopped for STALE_AFTER_S.
    path = write_lock(tmp_path, "some-other-node", 12345)
    with pytest.raises(RunLockedError, match="host some-other-node, PID 12345"):
        RunLock(str(tmp_path)).acquire()
    old = time.time() - STALE_AFTER_S - 60
    os.utime(path, (old, old))
    lock = RunLock(str(tmp_path)).acquire()
    with open(path) as f:
        assert json.load(f)["pid"] == os.getpid()
    lock.release()
    assert not os.path.exists(path)


@pytest.mark.integration
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


@pytest.mark.integration
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


# ---- Finding 11: one log line per step after a resume; wandb resumes its run
def one_line_per_step(lines: list[dict]) -> None:
    train = [m["step"] for m in lines if "train/lm_loss" in m]
    evals = [m["step"] for m in lines if any(k.startswith("all/") for k in m)]
    params = [m["step"] for m in lines if "num_params" in m]
    assert (train, evals, params) == (list(range(1, 17)), [8, 16], [0]), (train, evals, params)


@pytest.mark.integration
def test_metrics_after_resume_from_an_older_state(copy_task, tmp_path):
    run_dir = tmp_path / "run"
    train_in_process(copy_task, run_dir, "checkpoint_interval=4", "stop_at_step=10")
    first_attempt = {m["step"]: m for m in read_metrics(str(run_dir)) if "train/lm_loss" in m}
    assert [s for s, _ in list_train_states(str(run_dir))] == [4, 8, 10]
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 11, "train/lm_loss": 0.')  # a line cut short by a kill
    train_in_process(copy_task, run_dir, f"resume={run_dir / 'train_state_step_4'}")
    one_line_per_step(lines := read_metrics(str(run_dir)))
    again = {m["step"]: m for m in lines if "train/lm_loss" in m}
    assert all(again[step] == first_attempt[step] for step in range(1, 11))  # exact resume: same values


@pytest.mark.integration
def test_metrics_after_resume_auto_found_no_state(copy_task, tmp_path):
    run_dir = tmp_path / "run"
    train_in_process(copy_task, run_dir, "stop_at_step=3")
    for _, path in list_train_states(str(run_dir)):
        os.rename(path, str(path).replace("train_state_step_", "removed_"))  # as if killed before any save
    train_in_process(copy_task, run_dir, "resume=auto")
    one_line_per_step(read_metrics(str(run_dir)))


def test_truncate_metrics(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "x": s}) + "\n" for s in (0, 1, 2, 3, 2, 5)]
    path.write_text("".join(lines) + '{"step": 6, "x"')
    assert truncate_metrics(str(path), 2) == 3  # steps 3 and 5, and the line cut short
    assert path.read_text() == lines[0] + lines[1] + lines[2] + lines[4]
    assert truncate_metrics(str(path), 2) == 0 and truncate_metrics(str(tmp_path / "none"), 2) == 0


class FakeWandbRun:
    def __init__(self, starting_step: int):
        self.starting_step, self.logged = starting_step, []

    def log(self, metrics, step):
        self.logged.append(step)

    def finish(self):
        pass


def test_wandb_run_id_is_persisted_and_reused(tmp_path, monkeypatch):
    import rundir.metrics
    calls, runs = [], []

    def fake_init(**kwargs):  # a resumed wandb run already has steps 0..7 (the same values: a resume is exact)
        calls.append(kwargs)
        runs.append(FakeWandbRun(starting_step=8 if len(calls) == 2 else 0))
        return runs[-1]

    monkeypatch.setattr(rundir.metrics.wandb, "init", fake_init)

    def logger(resume_step=None, mode="offline"):
        return RunLogger(str(tmp_path), "p", "r", {}, mode, resume_step=resume_step)

    logger().finish()
    first_id = (tmp_path / WANDB_ID_FILE).read_text().strip()
    assert first_id and calls[-1]["id"] == first_id and calls[-1]["resume"] == "allow"
    resumed = logger(resume_step=4)  # resume=auto: the same wandb run continues
    assert calls[-1]["id"] == first_id and calls[-1]["resume"] == "allow"
    for step in (5, 7, 8, 9):
        resumed.log({"x": step}, step=step)
    resumed.finish()
    assert runs[-1].logged == [8, 9] and [m["step"] for m in read_metrics(str(tmp_path))] == [5, 7, 8, 9]
    logger().finish()  # a new run in the directory: a new wandb run
    assert calls[-1]["id"] not in (None, first_id)
    logger(resume_step=4, mode="disabled").finish()
    assert calls[-1]["id"] is None


# ---- Finding 3: a stalled rank fails the job with one message, after dist_timeout_s
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
    assert str(converted).startswith("rank 0: all_gather_into_tensor (called from tests/integration/test_run_lock.py:")
    assert "timed out after 15 s" in str(converted)
    assert collective_error(RuntimeError("DataLoader timed out"), ctx) is None  # not raised in torch.distributed


def rank_pid(torchrun_pid: int, rank: int) -> int | None:
    """The PID of the worker with RANK=`rank` among torchrun's descendants (its DataLoader workers have none)."""
    for pid in descendants(torchrun_pid):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/environ", "rb") as f:
            if f"RANK={rank}".encode() in f.read().split(b"\0"):
                return pid
    return None


@pytest.mark.integration
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
