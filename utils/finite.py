"""The non-finite guard: NaN/inf never reaches the weights, and no checkpoint holds them.

docs/running.md, "Reliability"."""
import torch

from utils.errors import NonFiniteLossError


def all_finite(tensors: list[torch.Tensor]) -> torch.Tensor:
    """A 0-d bool tensor on the tensors' device: every floating value is finite (no host sync)."""
    flags = [torch.isfinite(t).all() for t in tensors if t.is_floating_point() and t.numel()]
    return torch.stack(flags).all() if flags else torch.tensor(True, device=tensors[0].device if tensors else None)


def non_finite_names(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the tensors holding a NaN or an inf; one device sync in all when every tensor is finite."""
    floating = {name: t for name, t in tensors.items() if t.is_floating_point() and t.numel()}
    if not floating or bool(torch.stack([torch.isfinite(t).all() for t in floating.values()]).all()):
        return []
    return [name for name, t in floating.items() if not bool(torch.isfinite(t).all())]


def check_finite(state, what: str, tensors: dict[str, torch.Tensor]) -> None:
    """Stop with the step, the first offending names and the last checkpoint (whose weights are finite)."""
    bad = non_finite_names(tensors)
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        last = state.last_checkpoint or "none saved yet"
        raise NonFiniteLossError(f"Non-finite {what} at step {state.step} in {shown}. Training stopped before it "
                                 f"reached the weights or a checkpoint; the last checkpoint (finite weights) is "
                                 f"untouched: {last}. Try a lower lr, a longer warm-up or arch.forward_dtype=float32.")
