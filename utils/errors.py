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
