"""Stopping cleanly: SIGTERM/SIGINT finish the current step, save and exit (README "Resuming")."""
import signal
import threading

from utils.distributed import DistContext


class StopRequest:
    """SIGTERM/SIGINT set a flag; the loop finishes the current step, saves and exits cleanly."""

    def __init__(self):
        self.signal_name: str | None = None
        self.loader_interrupted = False
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, _frame) -> None:
        self.signal_name = signal.Signals(signum).name

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def batches_until_signal(loader, stop: StopRequest, ctx: DistContext):
    """The loader's batches. A scheduler signals the whole job, so the DataLoader worker may die while a
    batch is in transfer; in one process, that ends the iteration as a stop (the last step is complete)."""
    batches = iter(loader)
    while True:
        try:
            yield next(batches)
        except StopIteration:
            return
        except (RuntimeError, OSError):  # the worker died mid-transfer (an error or a reset pipe)
            if not (stop.requested and not ctx.is_distributed):
                raise
            stop.loader_interrupted = True
            return
