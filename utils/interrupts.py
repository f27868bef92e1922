"""SIGINT and SIGTERM alike as an exception, for the commands that have nothing to save when stopped (builders,
evaluate.py, predict.py): `finally` blocks run, so temporaries are removed, and the command ends with one line
and the conventional status 128 + the signal's number (130, 143).

Training has its own graceful stop instead (training/signals.py: finish the step, save, exit 0).
"""
from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator, NoReturn

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """Raised in the main thread on SIGINT or SIGTERM. A BaseException, as KeyboardInterrupt: `except Exception`
    in the code it passes through must not swallow it."""

    def __init__(self, signum: int):
        self.signal_name = signal.Signals(signum).name
        self.exit_status = 128 + signum
        super().__init__(f"interrupted by {self.signal_name}")


def _raise_once(signum, _frame) -> None:
    # Later signals are ignored: the cleanup the first one started (removing GBs of temporaries) must finish.
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(signum)


@contextmanager
def signals_raise() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise `Interrupted` (in the main thread; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise_once) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Within the block SIGINT and SIGTERM are held back (steps that must not be cut apart, e.g. the two renames
    that swap a build into place); one that came is delivered to the previous handler right after the block."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _frame: pending.append(signum)) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if pending:
        signal.raise_signal(pending[0])


def exit_interrupted(err: Interrupted, rank: str = "0") -> NoReturn:
    """One line (by the first process of a torchrun job only), then exit with 128 + the signal's number."""
    if rank == "0":
        # A progress bar (or the terminal's ^C) may hold the line open: start one of our own.
        print(f"\ninterrupted by {err.signal_name}: stopped before the end; temporaries were removed and "
              "complete outputs kept; run the same command again to finish", file=sys.stderr)
    sys.exit(err.exit_status)
