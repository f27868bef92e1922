"""A permutation of positions and of token values: a test-time augmentation transform with an exact inverse.

Applied to torch tensors on their own device; built from numpy arrays (the task modules draw them), so
this module, like the rest of dataset/tasks/, needs no torch import (the builders do not load torch).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class TokenPermutation:
    """tokens -> values[tokens[..., positions]]: output position k takes the relabelled token of `positions[k]`."""

    positions: np.ndarray  # (seq_len,) a permutation of 0..seq_len-1
    values: np.ndarray  # (vocab_size,) a permutation of the token ids

    def inverse(self) -> TokenPermutation:
        return TokenPermutation(np.argsort(self.positions), np.argsort(self.values))

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        ids = tokens.long()  # an index (and new_tensor below makes long tensors on the tokens' device)
        values = tokens.new_tensor(self.values)  # in the tokens' dtype
        return values[ids[..., ids.new_tensor(self.positions)]]
