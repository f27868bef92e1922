"""Plain-transformer baseline (SPEC §8, `arch=transformers_baseline`).

No recursion inside a step: H_layers blocks are applied once per ACT step to the carried
answer plus the input, z_H = blocks(z_H + x), with all of TRM's embeddings, heads and ACT
halting. Depth then comes only from deep supervision (up to halt_max_steps steps), which is
what makes it the baseline for the recursion itself.
"""
from dataclasses import dataclass

import torch

from models.layers import CosSin
from models.recursive_reasoning.common import ACTModel, RecursiveInner, RecursiveReasoningConfig


@dataclass
class AnswerCarry:
    z_H: torch.Tensor  # the only state, (B, geometry.length, geometry.width); reset to H_init


class BaselineConfig(RecursiveReasoningConfig):
    """H_layers blocks; `H_cycles`, `L_cycles` and `L_layers` are accepted so that configs written for
    TRM load, and unused: the blocks run once per step."""

    positive_keys = ("H_layers", "halt_max_steps")

    H_layers: int
    H_cycles: int | None = None
    L_cycles: int | None = None
    L_layers: int | None = None


class BaselineInner(RecursiveInner):
    carry_cls = AnswerCarry

    def build_networks(self) -> None:
        self.H_level = self.make_network(self.config.H_layers)

    def recursion(self, carry: AnswerCarry, x: torch.Tensor, cos_sin: CosSin | None) -> AnswerCarry:
        return AnswerCarry(z_H=self.H_level(carry.z_H, x, cos_sin))


class Model_ACTV2(ACTModel):
    """Published class path `recursive_reasoning.transformers_baseline@Model_ACTV2`."""

    config_cls = BaselineConfig
    inner_cls = BaselineInner
