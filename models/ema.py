"""Exponential moving average of the trainable weights (docs/training.md, `ema` / `ema_rate`).

After every batch the trainer calls `update`; evaluation and the saved checkpoint use a copy of
the model carrying the shadow weights (`ema_copy`). The update is `s = (1-mu)*p + mu*s`, rounded
exactly as that expression is in torch (two scalar products, then one sum), so runs match the
published helper bit for bit; the foreach ops below only batch those same three roundings.
"""
from __future__ import annotations

import copy
from collections import defaultdict

import torch
from torch import nn

from models.weights import uncompiled


def _trainable(module: nn.Module):
    """(name, param) for every parameter the optimizer updates; frozen ones need no shadow."""
    return [(name, p) for name, p in uncompiled(module).named_parameters() if p.requires_grad]


class EMAHelper:
    def __init__(self, mu: float = 0.999):
        if not 0.0 <= mu <= 1.0:
            raise ValueError(f"EMA rate mu must be in [0, 1], got {mu}")
        self.mu = mu
        self.shadow: dict[str, torch.Tensor] = {}

    def register(self, module: nn.Module) -> None:
        """Start the shadow from the current weights (replaces any previous shadow)."""
        self.shadow = {name: p.detach().clone() for name, p in _trainable(module)}

    def _paired(self, module: nn.Module) -> list[tuple[torch.Tensor, str, torch.Tensor]]:
        """(param, name, shadow) triples; a shadow on another device/dtype (e.g. loaded from a
        CPU-mapped checkpoint) is moved once to the param's, since foreach needs them to match."""
        triples = []
        for name, p in _trainable(module):
            if name not in self.shadow:
                raise KeyError(f"EMA has no shadow for parameter {name!r}; call register() first")
            s = self.shadow[name]
            if s.device != p.device or s.dtype != p.dtype:
                s = self.shadow[name] = s.to(device=p.device, dtype=p.dtype)
            triples.append((p.detach(), name, s))
        return triples

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """s = (1-mu)*p + mu*s for every trainable parameter, in place on the shadow tensors."""
        groups: dict = defaultdict(lambda: ([], []))
        for p, _, s in self._paired(module):
            params, shadows = groups[(p.device, p.dtype)]
            params.append(p)
            shadows.append(s)
        for params, shadows in groups.values():
            # (1-mu)*p and mu*s are each rounded, then summed: the same roundings as the formula.
            # Both products are out of place on purpose: in-place `_foreach_mul_` on CPU rounds the
            # scalar to bf16/fp16 first, which would drift from the published numbers.
            new_shadows = torch._foreach_mul(params, 1.0 - self.mu)
            torch._foreach_add_(new_shadows, torch._foreach_mul(shadows, self.mu))
            torch._foreach_copy_(shadows, new_shadows)

    @torch.no_grad()
    def ema(self, module: nn.Module) -> None:
        """Overwrite the module's trainable parameters with the shadow weights."""
        for p, _, s in self._paired(module):
            p.copy_(s)

    def ema_copy(self, module: nn.Module) -> nn.Module:
        """A deep copy of `module` carrying the shadow weights; `module` itself is not modified."""
        module_copy = copy.deepcopy(module)
        self.ema(module_copy)
        return module_copy

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Shadow tensors by parameter name (references, like `nn.Module.state_dict`)."""
        return dict(self.shadow)

    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Replace the shadow with copies, so later updates never write into the caller's tensors."""
        self.shadow = {name: t.detach().clone() for name, t in state_dict.items()}
