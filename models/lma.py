"""Latent Meta Attention (LMA): a compress-once, stay-compressed front-end (docs/lma.md).

The input embedding X (B, L, d0) is read column by column (all L rows of feature 1, then all
rows of feature 2, ...), cut into L_new equal chunks of C' = L*d0 / L_new numbers, and each
chunk is encoded to one latent token of width d'. The TRM recursion then runs on the
(L_new, d') latent sequence, and only its answer is decoded back to (L, d0) by the exact
inverse of the chunking and the resequencing.

Modes: `unclean` accepts any L_new dividing L*d0 (a chunk may straddle two columns);
`clean` also requires chunk boundaries on column boundaries (C' a multiple of L, or L a
multiple of C').

Option (off by default; docs/lma.md "Options"): `skip` adds a learned linear map of X itself
(starting as the identity) to the decoded output, so per-position detail need not pass the
bottleneck. Its parameters exist only when it is on, after the default ones, so the default
module's parameters, initialisation and state-dict keys are unchanged.
"""

import torch
import torch.nn.functional as F
from torch import nn

from models.layers import CastedLinear
from models.lma_layout import LatentLayout


# ---------------------------------------------------------------------------------------------
# Resequencing and chunking (pure reshapes, so the inverse is exact)
# ---------------------------------------------------------------------------------------------
def resequence(x: torch.Tensor) -> torch.Tensor:
    """(..., L, d0) -> (..., L*d0), column-major: all rows of column 1, then of column 2, ..."""
    return x.transpose(-1, -2).reshape(*x.shape[:-2], -1)


def unresequence(flat: torch.Tensor, length: int, width: int) -> torch.Tensor:
    """Exact inverse of `resequence`: (..., L*d0) -> (..., L, d0)."""
    return flat.reshape(*flat.shape[:-1], width, length).transpose(-1, -2)


def to_chunks(flat: torch.Tensor, latent_len: int) -> torch.Tensor:
    """(..., L*d0) -> (..., L_new, C'): consecutive runs of C' numbers."""
    return flat.reshape(*flat.shape[:-1], latent_len, flat.shape[-1] // latent_len)


def from_chunks(chunks: torch.Tensor) -> torch.Tensor:
    """Exact inverse of `to_chunks`: (..., L_new, C') -> (..., L_new*C')."""
    return chunks.reshape(*chunks.shape[:-2], -1)


# ---------------------------------------------------------------------------------------------
# Encoders and decoder
# ---------------------------------------------------------------------------------------------
class ChunkEncoder(nn.Module):
    """E_chunk: R^C' -> R^d', a two-layer MLP shared by all chunks.

    The nonlinearity is what makes the separate linear residual encoder E_resid worth having:
    two linear maps of the same chunk would just add up to one.
    """

    def __init__(self, chunk_size: int, latent_dim: int):
        super().__init__()
        self.up_proj = CastedLinear(chunk_size, latent_dim)
        self.down_proj = CastedLinear(latent_dim, latent_dim)

    def forward(self, chunks: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.up_proj(chunks)))


class LatentMetaAttention(nn.Module):
    """Encode (B, L, d0) to the latent (B, L_new, d') and decode a latent back to (B, L, d0)."""

    def __init__(self, layout: LatentLayout, *, skip: bool = False):
        super().__init__()
        self.layout = layout
        chunk_size, latent_dim = layout.chunk_size, layout.latent.width
        self.chunk_encoder = ChunkEncoder(chunk_size, latent_dim)  # E_chunk
        self.residual_encoder = CastedLinear(chunk_size, latent_dim)  # E_resid
        self.chunk_decoder = CastedLinear(latent_dim, chunk_size)  # D_chunk
        # The option: created after the default parameters, and only when on (see the module docstring).
        self.skip_proj = CastedLinear(layout.input_width, layout.input_width) if skip else None
        if skip:
            with torch.no_grad():  # start as decode(z) + X: the heads see every position's embedding at once
                self.skip_proj.weight.copy_(torch.eye(layout.input_width))

    def chunks(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, d0) -> (B, L_new, C')."""
        return to_chunks(resequence(x), self.layout.latent.length)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Z = E_chunk(chunks) + E_resid(chunks), shape (B, L_new, d')."""
        chunks = self.chunks(x)
        return self.chunk_encoder(chunks) + self.residual_encoder(chunks)

    def decode(self, z: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L_new, d') -> (B, L, d0): D_chunk per latent token, then undo chunking and resequencing.

        With `skip`, the input embedding `x` (B, L, d0) it was encoded from is required: skip_proj(x) is added.
        """
        out = unresequence(from_chunks(self.chunk_decoder(z)), self.layout.input_len, self.layout.input_width)
        if self.skip_proj is not None:
            if x is None:
                raise ValueError("LatentMetaAttention.decode: lma_skip is on, so the input embedding x is required")
            out = out + self.skip_proj(x)
        return out
