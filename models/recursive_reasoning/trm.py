"""Tiny Recursion Model (TRM) with adaptive computation time (ACT).

Paper symbols: x = input embedding, y = z_H (the current answer), z = z_L (the latent
reasoning state), n = L_cycles (latent updates per answer update), T = H_cycles (answer
updates per deep-supervision step). One forward call of the ACT wrapper is one
deep-supervision step; the carry holds (z_H, z_L) between calls.

Embeddings, blocks, heads, carries and the ACT wrapper are shared with the rest of the family
(`common.py`); this file is TRM's recursion policy.
"""
import torch

from models.layers import CosSin
from models.recursive_reasoning.common import (
    ACTCarry,
    ACTModel,
    Block,
    InnerCarry,
    ReasoningModule,
    RecursiveInner,
)
from models.recursive_reasoning.config import TRMConfig

__all__ = ["TRMConfig", "TRMInner", "TinyRecursiveReasoningModel_ACTV1", "TRM", "ACTCarry", "InnerCarry", "Block",
           "ReasoningModule"]


class TRMInner(RecursiveInner):
    """One network `L_level` updates both the latent and the answer."""

    carry_cls = InnerCarry

    def latent_recursion(self, carry: InnerCarry, x: torch.Tensor, cos_sin: CosSin | None) -> InnerCarry:
        """n latent updates z = net(z, y + x), then one answer update y = net(y, z)."""
        z_H, z_L = carry.z_H, carry.z_L
        for _ in range(self.config.L_cycles):
            z_L = self.L_level(z_L, z_H + x, cos_sin)
        return InnerCarry(z_H=self.L_level(z_H, z_L, cos_sin), z_L=z_L)


class TinyRecursiveReasoningModel_ACTV1(ACTModel):
    """TRM wrapped in ACT (published class path `recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1`)."""

    config_cls = TRMConfig
    inner_cls = TRMInner


# A clearer name beside the published one.
TRM = TinyRecursiveReasoningModel_ACTV1
