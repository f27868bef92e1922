"""TRM ablation with a single latent (docs/architectures.md, `arch=trm_singlez`).

There is no separate answer y: one state z_L is both the reasoning latent and what the heads
read. Inside each of the T cycles the network refines z_L + x n times, then once more without
the input. As in TRM, only the last of the T cycles is back-propagated through.
"""
from dataclasses import dataclass

import torch

from models.layers import CosSin
from models.recursive_reasoning.common import ACTModel, RecursiveInner
from models.recursive_reasoning.config import SingleZConfig


@dataclass
class SingleLatentCarry:
    z_L: torch.Tensor  # the only state, (B, geometry.length, geometry.width); reset to L_init


class SingleZInner(RecursiveInner):
    carry_cls = SingleLatentCarry
    answer_field = "z_L"

    def latent_recursion(self, carry: SingleLatentCarry, x: torch.Tensor, cos_sin: CosSin | None) -> SingleLatentCarry:
        """n updates z = net(z + x), then z = net(z)."""
        z_L = carry.z_L
        for _ in range(self.config.L_cycles):
            z_L = self.L_level(z_L, x, cos_sin)
        return SingleLatentCarry(z_L=self.L_level(z_L, None, cos_sin))


class TinyRecursiveReasoningModel_ACTV1(ACTModel):
    """Published class path `recursive_reasoning.trm_singlez@TinyRecursiveReasoningModel_ACTV1`."""

    config_cls = SingleZConfig
    inner_cls = SingleZInner
