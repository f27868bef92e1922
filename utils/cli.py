"""Small command-line helpers shared by the entry points: argparse integer types, progress bars, exit on user errors."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, TypeVar

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
        sys.exit(f"error: {e}")


def progress(iterable=None, **kwargs):
    """tqdm progress bar, refreshed at most once a second (cheap on millions of rows)."""
    from tqdm import tqdm
    return tqdm(iterable, mininterval=1.0, **kwargs)
