"""One run per run directory: a lock file that names its holder (docs/running.md, "Reliability").

A run creates `run.lock` in its run directory (atomically: O_CREAT|O_EXCL) before it writes anything
there, holding the host, PID, start time and command line, and removes it when it ends (normally, on an
error, or on a SIGTERM/SIGINT stop). A second run on the same directory (e.g. a job submitted twice with
`resume=auto`) stops at once with a message naming the holder. A lock left by a process that died without
removing it (SIGKILL, a node crash) is stale and is taken over with a notice: on the same host when its
PID no longer runs; on another host, where PIDs cannot be checked, when its heartbeat (the file's
modification time, refreshed every HEARTBEAT_S by the holder) is older than STALE_AFTER_S.
"""
import contextlib
import datetime
import json
import os
import shlex
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator

from rundir.layout import lock_path
from utils.atomic import make_dirs, temporary_path, write_error, write_synced, writing
from utils.distributed import DistContext, broadcast_object
from utils.errors import RunLockedError, WriteError

HEARTBEAT_S = 30.0  # the holder touches its lock this often
STALE_AFTER_S = 600.0  # a lock of another host without a heartbeat for this long belongs to a dead run
_READ_RETRY_S = 2.0  # a lock just created may still be empty: its writer is between open and write
_TAKEOVER_SUFFIX = ".takeover"  # a directory made with mkdir: one takeover at a time


def _process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (Linux), so that a PID reused by another process is not mistaken for it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[19] if len(fields) > 19 and fields[0] != "Z" else "zombie"


def _pid_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    now = _process_start(pid)
    if now == "zombie":
        return False
    return start is None or now is None or now == start


def _holder_record() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "proc_start": _process_start(os.getpid()),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": shlex.join([sys.executable, *sys.argv]), "token": uuid.uuid4().hex}


def _read(path: str) -> dict | None:
    """The holder's record; None when there is no lock. Retries briefly while a new lock is still empty."""
    deadline = time.monotonic() + _READ_RETRY_S
    while True:
        try:
            with open(path, encoding="utf-8") as f:
                record = json.load(f)
            if isinstance(record, dict) and "pid" in record:
                return record
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            return {}  # unreadable: judged by its age alone
        time.sleep(0.05)


def _age_s(path: str) -> float:
    try:
        return time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return 0.0


def _is_stale(record: dict, age_s: float) -> bool:
    if record.get("host") == socket.gethostname() and isinstance(record.get("pid"), int):
        return not _pid_alive(record["pid"], record.get("proc_start"))
    return age_s > STALE_AFTER_S


def _describe(record: dict) -> str:
    if not record:
        return "an unreadable lock"
    command = " ".join(str(record.get("command", "?")).split())  # one line, whatever the arguments held
    command = command if len(command) <= 160 else command[:157] + "..."
    return (f"host {record.get('host', '?')}, PID {record.get('pid', '?')}, started {record.get('started', '?')}: "
            f"{command}")


class RunLock:
    """The lock of one run directory; `acquire()` then `release()` (or use `hold_run_lock`)."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.path = lock_path(run_dir)
        self.record = _holder_record()
        self._created_dirs: list[str] = []
        self._stop_heartbeat = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def acquire(self) -> "RunLock":
        self._make_run_dir()
        for _ in range(100):  # each round: create, or take over a stale lock, or report the holder
            if self._create():
                break
            record = _read(self.path)
            if record is None:
                continue  # released meanwhile
            age = _age_s(self.path)
            if not _is_stale(record, age):
                self._remove_created_dirs()
                raise RunLockedError(
                    f"{self.run_dir} is in use by another run ({_describe(record)}; lock updated {age:.0f} s ago). "
                    f"Wait for it to end or stop it; if it is no longer running, delete {self.path}.")
            if self._take_over(record):
                print(f"Took over the stale lock {self.path} of a run that is no longer running "
                      f"({_describe(record)}).")
                break
        else:
            raise RunLockedError(f"Could not lock {self.run_dir}: its lock {self.path} keeps changing hands; "
                                 "is another run starting there?")
        self._heartbeat = threading.Thread(target=self._beat, name="run-lock-heartbeat", daemon=True)
        self._heartbeat.start()
        return self

    def release(self) -> None:
        """Remove the lock if it is still ours; remove the directories acquire() created if they stayed empty."""
        self._stop_heartbeat.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)
            self._heartbeat = None
        record = _read(self.path)
        if record and record.get("token") == self.record["token"]:
            os.remove(self.path)
        self._remove_created_dirs()

    def _make_run_dir(self) -> None:
        missing, parent = [], os.path.abspath(self.run_dir)
        while not os.path.lexists(parent):
            missing.append(parent)
            parent = os.path.dirname(parent)
        self._created_dirs = missing  # innermost first
        try:
            make_dirs(self.run_dir)
        except WriteError:
            self._remove_created_dirs()
            raise
        if os.path.lexists(self.path) and (os.path.islink(self.path) or not os.path.isfile(self.path)):
            self._remove_created_dirs()
            kind = "a directory" if os.path.isdir(self.path) else "a symbolic link" if os.path.islink(self.path) \
                else "not a regular file"
            raise WriteError(f"Cannot write the run lock {self.path}: it is {kind}, where the lock file is expected; "
                             "remove it (no run of this tool made it) or choose another directory.", self.path)

    def _remove_created_dirs(self) -> None:
        """An early error leaves no run directory behind (only directories acquire() made and nothing else used)."""
        for directory in self._created_dirs:
            if not os.path.lexists(directory):  # never made: a later part of the path failed first
                continue
            try:
                os.rmdir(directory)
            except OSError:
                break
        self._created_dirs = []

    def _content(self) -> bytes:
        return (json.dumps(self.record, indent=1) + "\n").encode()

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except OSError as err:  # e.g. a read-only file system
            self._remove_created_dirs()
            raise write_error(self.path, err) from None
        try:
            with writing(self.path), os.fdopen(fd, "wb") as f:
                f.write(self._content())
                f.flush()
                os.fsync(f.fileno())
        except WriteError:  # e.g. a full disk: an empty lock would read as another run's
            os.remove(self.path)
            self._remove_created_dirs()
            raise
        return True

    def _take_over(self, stale: dict) -> bool:
        """Replace the stale lock with ours, one process at a time, if it still is the one judged stale."""
        mutex = self.path + _TAKEOVER_SUFFIX
        try:
            os.mkdir(mutex)
        except FileExistsError:
            if _age_s(mutex) > 60:  # a takeover that died half-way
                with contextlib.suppress(OSError):
                    os.rmdir(mutex)
            time.sleep(0.1)
            return False
        try:
            if _read(self.path) != stale:
                return False
            tmp = temporary_path(self.path)
            write_synced(tmp, lambda f: f.write(self._content()))
            os.replace(tmp, self.path)
            return True
        finally:
            os.rmdir(mutex)

    def _beat(self) -> None:
        while not self._stop_heartbeat.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(self.path)


@contextlib.contextmanager
def hold_run_lock(run_dir: str, ctx: DistContext) -> Iterator[RunLock | None]:
    """Rank 0 holds the lock of `run_dir` for the body; every rank stops if rank 0 cannot take it."""
    lock, error = None, None
    if ctx.is_main:
        try:
            lock = RunLock(run_dir).acquire()
        except Exception as err:  # every rank must learn of it, or the others would wait for rank 0 forever
            error = err
    failed = broadcast_object(error is not None, ctx, what="broadcast of the run lock's status")
    if error is not None:
        raise error
    if failed:
        raise RunLockedError(f"rank {ctx.rank}: stopped because rank 0 could not lock {run_dir} (see its message).")
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()
