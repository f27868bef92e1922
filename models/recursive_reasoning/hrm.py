"""Hierarchical Reasoning Model (HRM), the model TRM simplifies (docs/architectures.md, `arch=hrm`).

Two separate networks: a low-level one `L_level` (L_layers blocks) updates the latent z_L
L_cycles times per high-level update, and a high-level one `H_level` (H_layers blocks) updates
z_H, which the heads read. HRM back-propagates only through the very last L and H updates of a
deep-supervision step (its "one-step gradient" approximation of the fixed point); TRM instead
back-propagates through a whole latent recursion.

ACT as published: in training a sequence halts where q_halt > q_continue (after the exploration
minimum), and the Q-continue head is always trained, towards the value of one more gradient-free
step; there is no `no_ACT_continue` option. The prefix is always ceil(puzzle_emb_ndim / hidden_size)
tokens; there is no `puzzle_emb_len`.
"""
import torch

from models.layers import CosSin
from models.recursive_reasoning.common import ACTModel, InnerCarry, RecursiveInner
from models.recursive_reasoning.config import HRMConfig


class HRMInner(RecursiveInner):
    carry_cls = InnerCarry

    def build_networks(self) -> None:
        self.H_level = self.make_network(self.config.H_layers)
        self.L_level = self.make_network(self.config.L_layers)

    def recursion(self, carry: InnerCarry, x: torch.Tensor, cos_sin: CosSin | None) -> InnerCarry:
        """H_cycles x (L_cycles latent updates z_L = L(z_L, z_H + x), then z_H = H(z_H, z_L)).

        Everything but the final L and the final H update runs without gradients.
        """
        H_cycles, L_cycles = self.config.H_cycles, self.config.L_cycles
        z_H, z_L = carry.z_H, carry.z_L
        with torch.no_grad():
            for h in range(H_cycles):
                last_h = h == H_cycles - 1
                for _ in range(L_cycles - last_h):  # the last cycle's last L update comes below, with gradients
                    z_L = self.L_level(z_L, z_H + x, cos_sin)
                if not last_h:
                    z_H = self.H_level(z_H, z_L, cos_sin)
        z_L = self.L_level(z_L, z_H + x, cos_sin)
        z_H = self.H_level(z_H, z_L, cos_sin)
        return InnerCarry(z_H=z_H, z_L=z_L)


class HierarchicalReasoningModel_ACTV1(ACTModel):
    """HRM wrapped in ACT (published class path `recursive_reasoning.hrm@HierarchicalReasoningModel_ACTV1`)."""

    config_cls = HRMConfig
    inner_cls = HRMInner


HRM = HierarchicalReasoningModel_ACTV1
