"""An exclusive lock on a directory among processes of this machine (flock on the directory itself, so that no
lock file is left behind), e.g. for jobs of a sweep that would build the same dataset side by side."""
import contextlib
import os
from collections.abc import Iterator

try:
    import fcntl
except ImportError:  # Windows: no flock; the caller's work then runs unguarded, as before
    fcntl = None


@contextlib.contextmanager
def directory_locked(path: str) -> Iterator[None]:
    """Hold an exclusive lock on directory `path` (which must exist) for the block; waits for another holder.
    The lock goes with the process, so a killed holder never leaves it taken."""
    if fcntl is None:
        yield
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
