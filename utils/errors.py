"""Errors the user can act on: the entry points print their message, without a traceback, and exit non-zero."""


class UserFacingError(Exception):
    """Base class: the message says what is wrong and how to fix it."""


class ConfigError(UserFacingError, ValueError):
    """A configuration the user has to fix."""


class CheckpointError(UserFacingError):
    """A checkpoint that cannot be used (missing, truncated, corrupt, or made for other data)."""


class NonFiniteLossError(UserFacingError):
    """Training diverged; raised before the optimizer step, so no checkpoint holds the bad weights."""
