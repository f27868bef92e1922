"""Plain-transformer baseline (docs/architectures.md, `arch=transformers_baseline`).

No recursion inside a step: H_layers blocks are applied once per ACT step to the carried
answer plus the input, z_H = blocks(z_H + x), with all of TRM's embeddings, heads and ACT
halting. Depth then comes only from deep supervision (up to halt_max_steps steps), which is
what makes it the baseline for the recursion itself.

ACT as published: halting where q_halt > q_continue; `act_enabled` (default true) lets the Q head
halt sequences in training, `act_inference` (default false) in evaluation too (the outputs then
carry `actual_steps`). The Q-continue head is never trained: the published wrapper computes its
target only when asked to, and the loss head never asks. The prefix is always
ceil(puzzle_emb_ndim / hidden_size) tokens; there is no `puzzle_emb_len`.
"""
from dataclasses import dataclass

import torch

from models.layers import CosSin
from models.recursive_reasoning.common import ACTModel, RecursiveInner
from models.recursive_reasoning.config import BaselineConfig


@dataclass
class AnswerCarry:
    z_H: torch.Tensor  # the only state, (B, geometry.length, geometry.width); reset to H_init


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
