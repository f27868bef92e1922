"""Small command-line helpers shared by the entry points: argparse integer types, progress bars, exit on user errors."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, NoReturn, TypeVar

from utils.errors import UserFacingError

T = TypeVar("T")


def int_at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: an integer >= `minimum`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def run_cli(main_fn: Callable[[], T]) -> T:
    """Run a command's body; an error the user can act on becomes one `error: ...` line and exit status 1."""
    try:
        return main_fn()
    except UserFacingError as e:
        exit_with_message(e)


def exit_with_message(err: BaseException) -> NoReturn:
    """Exit with status 1 after printing `error: <message>` once: by the first process of a torchrun job
    (RANK 0) or by a process of its own; the other ranks exit with the same status, silently, except for
    errors only that rank can see (`report_on_every_rank`, e.g. a collective that timed out there)."""
    if os.environ.get("RANK", "0") == "0" or getattr(err, "report_on_every_rank", False):
        sys.exit(f"error: {err}")  # printed to stderr by the interpreter, exit status 1
    sys.exit(1)


def progress(iterable=None, **kwargs):
    """tqdm progress bar, refreshed at most once a second (cheap on millions of rows)."""
    from tqdm import tqdm
    return tqdm(iterable, mininterval=1.0, **kwargs)
