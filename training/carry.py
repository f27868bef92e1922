"""The ACT carry of a training state as nested dicts of CPU tensors (loadable with weights_only=True), and back."""
import dataclasses
from typing import Any

import torch


def carry_to_state(carry: Any) -> Any:
    """Nested dataclasses/dicts of tensors -> nested dicts of CPU tensors."""
    if dataclasses.is_dataclass(carry):
        return {f.name: carry_to_state(getattr(carry, f.name)) for f in dataclasses.fields(carry)}
    if isinstance(carry, dict):
        return {k: carry_to_state(v) for k, v in carry.items()}
    if isinstance(carry, torch.Tensor):
        return carry.detach().cpu()
    raise TypeError(f"cannot save a carry field of type {type(carry).__name__}")


def carry_from_state(template: Any, state: Any) -> Any:
    """Fill a freshly made carry (`model.initial_carry(batch)`) with saved values, on the template's devices."""
    if dataclasses.is_dataclass(template):
        return dataclasses.replace(template, **{f.name: carry_from_state(getattr(template, f.name), state[f.name])
                                                for f in dataclasses.fields(template)})
    if isinstance(template, dict):
        return {k: carry_from_state(v, state[k]) for k, v in template.items()}
    return state.to(device=template.device, dtype=template.dtype)
