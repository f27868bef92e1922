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
