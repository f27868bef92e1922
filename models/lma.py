"""Latent Meta Attention (LMA): a compress-once, stay-compressed front-end (docs/lma.md).

The input embedding X (B, L, d0) is read column by column (all L rows of feature 1, then all
rows of feature 2, ...), cut into L_new equal chunks of C' = L*d0 / L_new numbers, and each
chunk is encoded to one latent token of width d'. The TRM recursion then runs on the
(L_new, d') latent sequence, and only its answer is decoded back to (L, d0) by the exact
inverse of the chunking and the resequencing.

Modes: `unclean` accepts any L_new dividing L*d0 (a chunk may straddle two columns);
`clean` also requires chunk boundaries on column boundaries (C' a multiple of L, or L a
multiple of C').
"""
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from models.layers import CastedLinear

LMAMode = Literal["unclean", "clean"]

# Automatic latent length: about L / lma_compression latent tokens, but never fewer than this
# many (or L, when the input is shorter): short inputs such as Sudoku (97 tokens) would
# otherwise collapse to a handful of tokens and attention would have almost nothing to mix.
MIN_AUTO_LATENT_LEN = 16


@dataclass(frozen=True)
class SequenceGeometry:
    """The sequence the recursion runs on: `length` positions of `width` features, `num_heads` heads.

    Without LMA it is the input's (prefix + seq_len, hidden_size, num_heads); with LMA it is
    the latent sequence (L_new, d', lma_num_heads).
    """

    length: int
    width: int
    num_heads: int


@dataclass(frozen=True)
class LatentLayout:
    """How an input of (input_len, input_width) maps onto the latent geometry."""

    input_len: int  # L = puzzle prefix + seq_len
    input_width: int  # d0 = hidden_size
    latent: SequenceGeometry  # (L_new, d', heads)

    @property
    def chunk_size(self) -> int:
        """C' = L * d0 / L_new: numbers of the resequenced input per latent token."""
        return self.input_len * self.input_width // self.latent.length


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
# Valid latent lengths and the automatic choice
# ---------------------------------------------------------------------------------------------
def divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def is_clean(latent_len: int, length: int, width: int) -> bool:
    """Chunk boundaries fall on column boundaries: C' a multiple of L, or L a multiple of C'.

    With C' = L*d0/L_new, the first means L_new divides d0 and the second L_new = k*d0 with k | L.
    """
    total = length * width
    if total % latent_len:
        return False
    chunk = total // latent_len
    return chunk % length == 0 or length % chunk == 0


def valid_latent_lens(length: int, width: int, mode: LMAMode) -> list[int]:
    """Every L_new the mode accepts for an (L, d0) input, ascending."""
    candidates = divisors(length * width)
    if mode == "clean":
        return [n for n in candidates if is_clean(n, length, width)]
    return candidates


def nearest_valid(value: float, valid: list[int]) -> list[int]:
    """The closest valid value below and above `value` (one of them at the ends of the range)."""
    below = [n for n in valid if n < value]
    above = [n for n in valid if n > value]
    return ([below[-1]] if below else []) + ([above[0]] if above else [])


def automatic_latent_len(length: int, width: int, mode: LMAMode, compression: float) -> int:
    """The valid L_new nearest to max(L / compression, min(L, MIN_AUTO_LATENT_LEN)); ties go to the longer."""
    target = max(length / compression, min(length, MIN_AUTO_LATENT_LEN))
    return min(valid_latent_lens(length, width, mode), key=lambda n: (abs(n - target), -n))


def automatic_num_heads(latent_dim: int, num_heads: int, even_head_dim: bool) -> int:
    """The most heads, up to the model's num_heads, that split d' evenly (into even head sizes for RoPE)."""
    for heads in range(min(num_heads, latent_dim), 0, -1):
        if latent_dim % heads == 0 and not (even_head_dim and (latent_dim // heads) % 2):
            return heads
    raise ValueError(f"lma_latent_dim ({latent_dim}) cannot be split into attention heads of even size "
                     "(RoPE rotates pairs of features); use an even lma_latent_dim")


def check_latent_len(latent_len: int, length: int, width: int, mode: LMAMode) -> None:
    """Raise a ValueError naming the nearest accepted values when L_new does not fit the mode."""
    valid = valid_latent_lens(length, width, mode)
    if latent_len in valid:
        return
    rule = (f"L_new must divide L*d0 = {length}*{width} = {length * width} "
            "(L = puzzle prefix + seq_len, d0 = hidden_size)")
    if mode == "clean":
        rule += " and put chunk boundaries on column boundaries (L_new divides d0, or L_new = k*d0 with k dividing L)"
    nearest = " or ".join(str(n) for n in nearest_valid(latent_len, valid))
    raise ValueError(f"lma_latent_len ({latent_len}) is not valid for lma_mode={mode}: {rule}. "
                     f"Nearest valid values: {nearest}")


def resolve_latent_layout(length: int, width: int, num_heads: int, *, mode: LMAMode, latent_len: int | None,
                          latent_dim: int | None, latent_heads: int | None, compression: float, uses_attention: bool,
                          uses_rope: bool) -> LatentLayout:
    """Fill in the automatic values and check the explicit ones; ValueError with a clear message otherwise.

    Automatic: L_new by `automatic_latent_len`, d' = d0, heads by `automatic_num_heads`.
    """
    if compression <= 0:
        raise ValueError(f"lma_compression must be > 0, got {compression}")
    for key, value in (("lma_latent_len", latent_len), ("lma_latent_dim", latent_dim), ("lma_num_heads", latent_heads)):
        if value is not None and value < 1:
            raise ValueError(f"{key} must be >= 1 (or null for the automatic value), got {value}")
    if latent_len is None:
        latent_len = automatic_latent_len(length, width, mode, compression)
    check_latent_len(latent_len, length, width, mode)
    latent_dim = width if latent_dim is None else latent_dim
    if latent_heads is None:
        latent_heads = automatic_num_heads(latent_dim, num_heads, uses_rope) if uses_attention else num_heads
    elif uses_attention and latent_dim % latent_heads:
        raise ValueError(f"lma_latent_dim ({latent_dim}) must be divisible by lma_num_heads ({latent_heads})")
    elif uses_attention and uses_rope and (latent_dim // latent_heads) % 2:
        raise ValueError(f"with pos_encodings=rope the latent head size lma_latent_dim // lma_num_heads "
                         f"({latent_dim} // {latent_heads} = {latent_dim // latent_heads}) must be even")
    return LatentLayout(length, width, SequenceGeometry(latent_len, latent_dim, latent_heads))


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

    def __init__(self, layout: LatentLayout):
        super().__init__()
        self.layout = layout
        chunk_size, latent_dim = layout.chunk_size, layout.latent.width
        self.chunk_encoder = ChunkEncoder(chunk_size, latent_dim)  # E_chunk
        self.residual_encoder = CastedLinear(chunk_size, latent_dim)  # E_resid
        self.chunk_decoder = CastedLinear(latent_dim, chunk_size)  # D_chunk

    def chunks(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, d0) -> (B, L_new, C')."""
        return to_chunks(resequence(x), self.layout.latent.length)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Z = E_chunk(chunks) + E_resid(chunks), shape (B, L_new, d')."""
        chunks = self.chunks(x)
        return self.chunk_encoder(chunks) + self.residual_encoder(chunks)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, L_new, d') -> (B, L, d0): D_chunk per latent token, then undo chunking and resequencing."""
        return unresequence(from_chunks(self.chunk_decoder(z)), self.layout.input_len, self.layout.input_width)
