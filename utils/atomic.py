"""Writing files so that a crash never leaves half of one: the one home of atomic writes.

Everything this project writes for a user (datasets, checkpoints, configs, metrics, pictures) goes
to a temporary name beside its final path, is flushed and synced, and only then renamed into place.
Temporary names are unique per process and call, so two writers never share one.

It is also the one home of write failures: any OSError of a write (and torch's RuntimeError, numpy's errno-less
short write on a full disk) becomes one WriteError (DiskFullError for a full disk) naming the path, the reason in
words and the fix, after the partial file is removed; `writing(path)` does the same for writers that are not
whole files (a directory, an append, a streamed array).
"""
import contextlib
import errno
import json
import os
import re
import shutil
import uuid
from typing import Any, Callable, Iterator

from utils.errors import DiskFullError, WriteError


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


def _write_file(path: str, write: Callable[[Any], None], mode: str) -> None:
    with open(path, mode) as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def write_synced(path: str, write: Callable[[Any], None], mode: str = "wb", needed: int | None = None) -> None:
    """`write(f)` into `path`, then flush and fsync, so the bytes are on disk before anything refers to them.

    A failed write raises a WriteError naming `path`, and the partial file is removed."""
    try:
        with writing(path, needed=needed):
            _write_file(path, write, mode)
    except WriteError:
        with contextlib.suppress(OSError):  # e.g. nothing was created on a read-only file system
            _remove(path)
        raise


def write_atomically(path: str, write: Callable[[Any], None], mode: str = "wb", needed: int | None = None) -> None:
    """`write(f)` into a temporary file, then rename it over `path`; on any error the temporary is removed.

    A failed write raises a WriteError naming `path` (`needed`: the bytes it takes, where the caller knows)."""
    tmp = temporary_path(path)
    try:
        _write_file(tmp, write, mode)
        os.replace(tmp, path)
    except BaseException as err:
        written = _size(tmp)
        _remove(tmp)
        converted = write_error(path, err, written, needed)
        if converted is None:
            raise
        raise converted from None
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def copy_file_atomically(source: str, path: str) -> None:
    """The bytes of `source` at `path`, written atomically (a failed copy leaves no partial file)."""
    with open(source, "rb") as src:
        write_atomically(path, lambda f: shutil.copyfileobj(src, f), needed=os.path.getsize(source))


def make_dirs(path: str) -> None:
    """os.makedirs(path, exist_ok=True), with a WriteError naming `path` when it cannot be made."""
    with writing(path, is_dir=True):
        os.makedirs(path, exist_ok=True)


def append_line(f: Any, path: str, data: bytes) -> None:
    """Append `data` to the unbuffered binary file `f` (opened "ab" on `path`) whole or not at all.

    A failed write is cut back to the file's earlier end, so the file never ends in half a line."""
    end = os.fstat(f.fileno()).st_size
    try:
        view = memoryview(data)
        while view:
            view = view[f.write(view):]
    except OSError as err:
        with contextlib.suppress(OSError):  # the WriteError below says what went wrong; this only tidies up
            os.ftruncate(f.fileno(), end)
        raise write_error(path, err, os.fstat(f.fileno()).st_size - end, len(data)) from None


@contextlib.contextmanager
def writing(path: str, is_dir: bool = False, needed: int | None = None) -> Iterator[None]:
    """Any write failure in the block (an OSError, or torch's RuntimeError of a failed write) becomes one WriteError
    naming `path` (`is_dir`: the block makes the directory `path`)."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        converted = write_error(path, err, _size(path) if not is_dir else 0, needed, is_dir)
        if converted is None:
            raise
        raise converted from None


def read_json_if_present(path: str) -> Any:
    """The JSON document at `path` (written with write_atomically, so never half written), or None if absent."""
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _remove(path: str) -> None:
    if os.path.lexists(path):
        os.remove(path)


def _size(path: str) -> int:
    try:
        return os.lstat(path).st_size if os.path.isfile(path) else 0
    except OSError:
        return 0


# ---------------------------------------------------------------------------------------------
# Why a write failed, in words
# ---------------------------------------------------------------------------------------------
_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")  # numpy's tofile/np.save: a short write, no errno
_TORCH_WRITE = ("file write failed", "unexpected pos")  # torch.save's zip writer (inline_container.cc)
_READ_ONLY, _PERMISSION = (errno.EROFS,), (errno.EACCES, errno.EPERM)
_NOT_A_DIRECTORY = (errno.ENOTDIR, errno.EEXIST, errno.ENOENT)
MAX_NAME = 255  # bytes in one file name on common file systems


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _os_error(err: BaseException) -> OSError | None:
    """The first OSError with an errno in the chain of `err` (torch wraps the real one in a RuntimeError)."""
    return next((e for e in _chain(err) if isinstance(e, OSError) and e.errno is not None), None)


def _is_short_write(err: BaseException) -> bool:
    return any((isinstance(e, OSError) and e.errno is None and _SHORT_WRITE.search(str(e)))
               or (isinstance(e, RuntimeError) and any(m in str(e) for m in _TORCH_WRITE)) for e in _chain(err))


def _path_problem(path: str, is_dir: bool) -> str | None:
    """What in `path` stands where a directory must be: a dangling link, or a file (None: nothing found)."""
    parts = os.path.abspath(path).split(os.sep)
    for i in range(2, len(parts) + 1):
        prefix = os.sep.join(parts[:i])
        if os.path.islink(prefix) and not os.path.exists(prefix):
            return f"{prefix} is a symbolic link to {os.readlink(prefix)}, which does not exist"
        if os.path.exists(prefix) and not os.path.isdir(prefix) and (is_dir or i < len(parts)):
            return f"{prefix} is a file, where a directory is expected"
    return None


def _free_bytes(path: str) -> int | None:
    directory = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(directory):
        directory = os.path.dirname(directory)
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def _reason(path: str, err: OSError, is_dir: bool) -> tuple[str, str]:
    """(what is wrong, how to fix it) for a failed write that is not a full disk."""
    code = err.errno
    problem = _path_problem(path, is_dir)
    if problem is not None and (code in _NOT_A_DIRECTORY or code is None):
        return problem, "remove or rename it, or choose another path"
    if code in _READ_ONLY:
        return "the file system is read-only", "choose a path on a writable file system, or remount it read-write"
    if code in _PERMISSION:
        return "permission denied", "choose a path you may write, or change the permissions of its directory"
    if code == errno.ENAMETOOLONG:
        longest = max(os.path.abspath(path).split(os.sep), key=lambda part: len(part.encode()))
        return (f"a name in it is too long ({len(longest.encode())} bytes; file systems allow {MAX_NAME})",
                "choose a shorter name (e.g. +run_name=NAME)")
    if code == errno.EISDIR:
        return "it is a directory, where a file is expected", "remove or rename that directory"
    if code in (errno.ENOENT, errno.ENOTDIR):
        return "its directory does not exist", "create the directory, or choose another path"
    return err.strerror or str(err), "fix the cause and run again"


def write_error(path: str, err: BaseException, written: int = 0, needed: int | None = None,
                is_dir: bool = False) -> WriteError | None:
    """The one-line WriteError for a failed write of `path` (None: `err` is not a failed write)."""
    if isinstance(err, WriteError):
        return err
    os_error = _os_error(err) or (err if isinstance(err, OSError) else None)
    code = os_error.errno if os_error is not None else None
    if code in (errno.ENOSPC, errno.EDQUOT) or (code is None and _is_short_write(err)):
        return disk_full_error(path, written, needed, quota=code == errno.EDQUOT)
    if os_error is None:
        return None
    what, fix = _reason(path, os_error, is_dir)
    kind = "directory" if is_dir else "file"
    return WriteError(f"Cannot write the {kind} {path}: {what}; {fix}.", path, written)


def disk_full_error(path: str, written: int, needed: int | None = None, quota: bool = False,
                    removed: str = "The partial file was removed and earlier files are untouched",
                    fix: str = "free some space and run again") -> DiskFullError:
    """One line: where, how much was written before the space ran out, how much is needed and free, what was
    removed and how to go on."""
    free = _free_bytes(path)
    if needed:
        need = f"it needs {needed} bytes" + (f" and {written} were written" if written else "")
    else:
        need = f"it needs more than the {written} bytes written"
    free_now = f" ({free} bytes free now)" if free is not None else ""
    what = "The disk quota is exhausted" if quota else "No space left on the device"
    error = DiskFullError(f"{what} of {path}: {need} before the disk filled{free_now}. {removed}; {fix}.", path,
                          written)
    error.needed, error.quota = needed, quota
    return error


def restated(err: WriteError, removed: str, fix: str) -> WriteError:
    """`err` once its caller has removed its partial output (`removed` says what); a full disk with the space free
    now and `fix`, how to go on."""
    if isinstance(err, DiskFullError):
        return disk_full_error(err.path, err.written, err.needed, err.quota, removed, fix)
    return WriteError(f"{err} ({removed}.)", err.path, err.written)
