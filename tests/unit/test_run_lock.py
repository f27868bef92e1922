"""rundir/lock.py: a run directory's lock names its holder; a live holder on this host, or one on another host
whose heartbeat is recent, keeps it; a recycled PID or a stopped heartbeat does not. (In real runs:
tests/integration/test_run_lock.py.)"""
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from rundir.layout import lock_path
from rundir.lock import STALE_AFTER_S, RunLock
from utils.errors import RunLockedError


def write_lock(run_dir, host: str, pid: int, **extra) -> str:
    os.makedirs(run_dir, exist_ok=True)
    path = lock_path(str(run_dir))
    with open(path, "w") as f:
        json.dump({"host": host, "pid": pid, "started": "2000-01-01T00:00:00+00:00",
                   "command": "python pretrain.py (an earlier run)", "token": "theirs", **extra}, f)
    return path


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


# ---------------------------------------------------------------------------------------------
# A run directory that cannot be made or locked: one line naming the path, nothing left behind
# ---------------------------------------------------------------------------------------------
def _refused_run_dir(run_dir) -> str:
    """The one-line WriteError of locking `run_dir`."""
    from utils.errors import WriteError
    with pytest.raises(WriteError) as err:
        RunLock(str(run_dir)).acquire()
    assert "\n" not in str(err.value)
    return str(err.value)


def _read_only(monkeypatch, function: str) -> None:
    """os.<function> fails as on a read-only file system (chmod does not stop root, who may run the tests)."""
    def refuse(path, *args, **kwargs):
        raise OSError(30, "Read-only file system", path)
    monkeypatch.setattr(os, function, refuse)


def test_issue23_b_read_only_file_system_is_one_line(tmp_path, monkeypatch):
    """Issue 23 B: a new checkpoint_path or run.lock on a read-only file system was a raw OSError."""
    with monkeypatch.context() as patch:
        _read_only(patch, "mkdir")
        message = _refused_run_dir(tmp_path / "new" / "run")
    assert str(tmp_path / "new") in message and "read-only" in message
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "existing").mkdir()
    with monkeypatch.context() as patch:
        _read_only(patch, "open")
        message = _refused_run_dir(tmp_path / "existing")
    assert lock_path(str(tmp_path / "existing")) in message and "read-only" in message
    assert os.listdir(tmp_path / "existing") == []


def test_issue23_b_a_run_name_too_long_for_the_file_system_is_one_line(tmp_path):
    """Issue 23 B: +run_name of 300 characters was a raw ENAMETOOLONG."""
    message = _refused_run_dir(tmp_path / "project" / ("x" * 300))
    assert "too long" in message and "300 bytes" in message and "run_name" in message
    assert list(tmp_path.iterdir()) == []  # the project directory made on the way is removed again


@pytest.mark.parametrize("kind", ["dangling symlink", "file", "file above"])
def test_issue23_b_a_dangling_symlink_or_a_file_as_run_dir_is_one_line(tmp_path, kind):
    """Issue 23 B: a dangling symlink or an existing file as checkpoint_path was a raw FileExistsError."""
    target = tmp_path / "gone"
    if kind == "dangling symlink":
        (tmp_path / "run").symlink_to(target)
    else:
        (tmp_path / "run").write_text("thesis")
    run_dir = tmp_path / "run" / "sub" if kind == "file above" else tmp_path / "run"
    message = _refused_run_dir(run_dir)
    assert str(tmp_path / "run") in message
    assert ("does not exist" if kind == "dangling symlink" else "is a file") in message
    assert sorted(os.listdir(tmp_path)) == ["run"] and not target.exists()
    if kind != "dangling symlink":
        assert (tmp_path / "run").read_text() == "thesis"


def test_issue23_b_run_lock_that_is_a_directory_is_one_line(tmp_path):
    """Issue 23 B: a directory named run.lock was "in use by another run (an unreadable lock)" or a traceback."""
    os.makedirs(lock_path(str(tmp_path)))
    old = time.time() - 2 * STALE_AFTER_S  # old enough to look stale
    os.utime(lock_path(str(tmp_path)), (old, old))
    message = _refused_run_dir(tmp_path)
    assert lock_path(str(tmp_path)) in message and "is a directory" in message
    assert os.path.isdir(lock_path(str(tmp_path))) and os.listdir(tmp_path) == ["run.lock"]
