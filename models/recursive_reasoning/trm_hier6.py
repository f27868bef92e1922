"""TRM ablation with six latents (SPEC §8, `arch=trm_hier6`).

The latent z is split into six slots z_L1..z_L6 whose sum is the latent the network sees.
Latent update i writes slot i: z_Li = net(sum_j z_Lj, z_H + x), so each slot holds one level of
the n <= 6 updates; the answer update then reads the sum, z_H = net(z_H, sum_j z_Lj). As in TRM,
only the last of the T cycles is back-propagated through.

Init vectors: one per slot, named `L1_init` .. `L6_init` (beside `H_init`), the naming the
published per-latent fields `z_L1` .. `z_L6` give. The published file is not available to check
this against, so checkpoints that store them otherwise are read too: a stacked `L_init` of shape
(6, hidden), or one vector per slot named `L_init_<i>`, `L_init<i>`, `L_<i>_init` (1-based, or
0-based when an index 0 is present). Any other naming fails to load with a message listing the
init keys the checkpoint has, so that a new alias can be added to `_init_aliases`.
"""
import re
from dataclasses import dataclass

import torch
from pydantic import model_validator

from models.layers import CosSin
from models.recursive_reasoning.common import ACTModel, RecursiveInner, TRMFamilyConfig

NUM_SLOTS = 6


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


class Hier6Config(TRMFamilyConfig):
    """TRM's keys (`H_layers` unused); L_cycles can be at most 6, one update per slot."""

    @model_validator(mode="after")
    def _check_slots(self) -> "Hier6Config":
        if self.L_cycles > NUM_SLOTS:
            raise ValueError(f"L_cycles ({self.L_cycles}) must be <= {NUM_SLOTS}: latent update i writes slot i")
        return self


_SLOT_INIT_PATTERN = re.compile(r"L_?init_?(\d)|L_?(\d)_init")


class Hier6Inner(RecursiveInner):
    carry_cls = SixLatentCarry

    def latent_recursion(self, carry: SixLatentCarry, x: torch.Tensor, cos_sin: CosSin | None) -> SixLatentCarry:
        z_H, slots = carry.z_H, carry.slots
        for i in range(self.config.L_cycles):
            slots[i] = self.L_level(slot_sum(slots), z_H + x, cos_sin)
        return SixLatentCarry(self.L_level(z_H, slot_sum(slots), cos_sin), *slots)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        self._init_aliases(state_dict, prefix, error_msgs)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    def _init_aliases(self, state_dict: dict, prefix: str, error_msgs: list[str]) -> None:
        """Rename other namings of the six init vectors to `L<i>_init` in place (see the module docstring)."""
        ours = [f"{prefix}L{i}_init" for i in range(1, NUM_SLOTS + 1)]
        if all(key in state_dict for key in ours):
            return
        stacked = state_dict.get(f"{prefix}L_init")
        if stacked is not None and stacked.shape[:1] == (NUM_SLOTS,):
            del state_dict[f"{prefix}L_init"]
            state_dict.update(zip(ours, stacked.unbind(0)))
            return
        found = {}
        for key in [k for k in state_dict if k.startswith(prefix) and "." not in k[len(prefix):]]:
            match = _SLOT_INIT_PATTERN.fullmatch(key[len(prefix):])
            if match:
                found[int(match.group(1) or match.group(2))] = key
        first = 0 if 0 in found else 1
        if sorted(found) == list(range(first, first + NUM_SLOTS)):
            for index, key in found.items():
                state_dict[ours[index - first]] = state_dict.pop(key)
            return
        init_keys = sorted(k for k in state_dict if k.startswith(prefix) and "init" in k[len(prefix):])
        error_msgs.append(f"trm_hier6: the checkpoint's init vectors {init_keys} are not in a naming this model reads "
                          f"(L1_init..L6_init, a stacked L_init of shape (6, hidden), or L_init_<i> / L_init<i> / "
                          f"L_<i>_init); add theirs to Hier6Inner._init_aliases")


class TinyRecursiveReasoningModel_ACTV1(ACTModel):
    """Published class path `recursive_reasoning.trm_hier6@TinyRecursiveReasoningModel_ACTV1`."""

    config_cls = Hier6Config
    inner_cls = Hier6Inner
