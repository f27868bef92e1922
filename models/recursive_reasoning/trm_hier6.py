"""TRM ablation with six latents (docs/architectures.md, `arch=trm_hier6`).

The latent z is split into six slots z_L1..z_L6 whose sum is the latent the network sees.
Latent update i writes slot i: z_Li = net(sum_j z_Lj, z_H + x), so each slot holds one level of
the n <= 6 updates; the answer update then reads the sum, z_H = net(z_H, sum_j z_Lj). As in TRM,
only the last of the T cycles is back-propagated through.

Init vectors: one per slot, `L1_init` .. `L6_init` (beside `H_init`), after the latents `z_L1` .. `z_L6`.
"""
from dataclasses import dataclass

import torch

from models.layers import CosSin
from models.recursive_reasoning.common import ACTModel, RecursiveInner
from models.recursive_reasoning.config import Hier6Config


@dataclass
class SixLatentCarry:
    """The answer and six latent slots, each (B, geometry.length, geometry.width)."""

    z_H: torch.Tensor
    z_L1: torch.Tensor
    z_L2: torch.Tensor
    z_L3: torch.Tensor
    z_L4: torch.Tensor
    z_L5: torch.Tensor
    z_L6: torch.Tensor

    @property
    def slots(self) -> list[torch.Tensor]:
        return [self.z_L1, self.z_L2, self.z_L3, self.z_L4, self.z_L5, self.z_L6]


def slot_sum(slots: list[torch.Tensor]) -> torch.Tensor:
    """z_L1 + ... + z_L6, added left to right (one fixed order, so results are reproducible)."""
    total = slots[0]
    for slot in slots[1:]:
        total = total + slot
    return total


class Hier6Inner(RecursiveInner):
    carry_cls = SixLatentCarry

    def latent_recursion(self, carry: SixLatentCarry, x: torch.Tensor, cos_sin: CosSin | None) -> SixLatentCarry:
        z_H, slots = carry.z_H, carry.slots
        for i in range(self.config.L_cycles):
            slots[i] = self.L_level(slot_sum(slots), z_H + x, cos_sin)
        return SixLatentCarry(self.L_level(z_H, slot_sum(slots), cos_sin), *slots)


class TinyRecursiveReasoningModel_ACTV1(ACTModel):
    """Published class path `recursive_reasoning.trm_hier6@TinyRecursiveReasoningModel_ACTV1`."""

    config_cls = Hier6Config
    inner_cls = Hier6Inner
