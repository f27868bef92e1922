"""Writing files so that a crash never leaves half of one: the one home of atomic writes.

Everything this project writes for a user (datasets, checkpoints, configs, metrics, pictures) goes
to a temporary name beside its final path, is flushed and synced, and only then renamed into place.
Temporary names are unique per process and call, so two writers never share one.
"""
import errno
import json
import os
import shutil
import uuid
from typing import Any, Callable

from utils.errors import DiskFullError


def temporary_path(final_path: str) -> str:
    """A unique name beside `final_path` (same directory, so the rename is atomic)."""
    return f"{final_path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def fsync_dir(path: str) -> None:
    """Make a rename durable: fsync the directory entry (no-op where directories cannot be opened)."""
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_synced(path: str, write: Callable[[Any], None], mode: str = "wb") -> None:
    """`write(f)` into `path`, then flush and fsync, so the bytes are on disk before anything refers to them."""
    try:
        with open(path, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise disk_full_error(path, os.path.getsize(path) if os.path.exists(path) else 0) from None
        raise


def write_atomically(path: str, write: Callable[[Any], None], mode: str = "wb") -> None:
    """`write(f)` into a temporary file, then rename it over `path`; on any error the temporary is removed."""
    tmp = temporary_path(path)
    try:
        write_synced(tmp, write, mode)
        os.replace(tmp, path)
    except DiskFullError as err:
        _remove(tmp)
        raise disk_full_error(path, err.written) from None
    except BaseException:
        _remove(tmp)
        raise
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def read_json_if_present(path: str) -> Any:
    """The JSON document at `path` (written with write_atomically, so never half written), or None if absent."""
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _remove(path: str) -> None:
    if os.path.exists(path):
        os.remove(path)


def disk_full_error(path: str, written: int) -> DiskFullError:
    """One line: where, how much was written before the space ran out, how much is free."""
    free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
    error = DiskFullError(f"No space left on the device of {path}: it needs more than the {written} bytes written "
                         f"before the disk filled ({free} bytes free now). The partial file was removed and earlier "
                         "files are untouched; free some space (or set checkpoint_keep_last) and resume.")
    error.written = written
    return error
