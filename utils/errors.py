"""Errors the user can act on: one hierarchy under `UserFacingError`.

The entry points (pretrain.py, evaluate.py, the builders) print the message of any of these once,
without a traceback, and exit non-zero; the message says what is wrong, where, and how to fix it.
"""


class UserFacingError(Exception):
    """Base class: the message says what is wrong and how to fix it."""


class ConfigError(UserFacingError, ValueError):
    """A configuration the user has to fix."""


class DatasetError(UserFacingError, ValueError):
    """A dataset or data source that cannot be used as it is (missing, malformed, or of another kind)."""


class CheckpointError(UserFacingError):
    """A checkpoint that cannot be used (missing, truncated, corrupt, or made for other data)."""


class NonFiniteLossError(UserFacingError):
    """Training diverged; raised before the optimizer step, so no checkpoint holds the bad weights."""


class RunLockedError(UserFacingError):
    """The run directory is held by another run (its lock file names the holder's host and PID)."""


class CollectiveError(UserFacingError):
    """A collective between the processes of a job timed out or lost its peer: another process stalled or died.

    Only the ranks left waiting raise it, and the stalled one may be rank 0: report it on every rank.
    """

    report_on_every_rank = True


class WriteError(UserFacingError):
    """A file or directory could not be written (no space, read-only, permission, a bad path); utils/atomic.py
    makes it from the OSError, naming the path and the reason in words. What was partly written is removed."""

    def __init__(self, message: str, path: str = "", written: int = 0):
        super().__init__(message)
        self.path, self.written = path, written


class DiskFullError(WriteError):
    """A write ran out of space; the partial file is removed and earlier files are untouched."""

    needed: int | None = None  # bytes the write takes, where known
    quota: bool = False  # the user's disk quota, not the device, is full
