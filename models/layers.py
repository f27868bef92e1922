"""Building blocks shared by every recursive-reasoning architecture.

Weights are stored in float32 and cast to the activation dtype on use, so that the forward
dtype (bfloat16 by default) never degrades the master copy the optimizer updates.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

CosSin = tuple[torch.Tensor, torch.Tensor]


def trunc_normal_init_(tensor: torch.Tensor, std: float = 1.0, lower: float = -2.0, upper: float = 2.0) -> torch.Tensor:
    """Fill `tensor` from N(0, std) truncated to [lower*std', upper*std'].

    Like JAX's truncated normal, `std` is the standard deviation *after* truncation: the
    underlying normal is widened by the truncated distribution's variance deficit.
    """
    with torch.no_grad():
        if std == 0:
            return tensor.zero_()
        sqrt2 = math.sqrt(2.0)
        cdf_lo, cdf_hi = math.erf(lower / sqrt2), math.erf(upper / sqrt2)
        mass = (cdf_hi - cdf_lo) / 2
        pdf = lambda v: math.exp(-0.5 * v * v) / math.sqrt(2 * math.pi)  # noqa: E731
        variance = 1 - (upper * pdf(upper) - lower * pdf(lower)) / mass - ((pdf(upper) - pdf(lower)) / mass) ** 2
        widened_std = std / math.sqrt(variance)
        # Inverse-CDF sampling: uniform in erf-space, then erfinv maps back to a normal sample.
        tensor.uniform_(cdf_lo, cdf_hi).erfinv_().mul_(sqrt2 * widened_std)
        return tensor.clip_(lower * widened_std, upper * widened_std)


def lecun_std(fan_in: int) -> float:
    return 1.0 / math.sqrt(fan_in)


def rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Weightless RMS norm over the last dim, computed in float32."""
    dtype = x.dtype
    x = x.float()
    return (x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps)).to(dtype)


class CastedLinear(nn.Module):
    """Linear layer (LeCun-normal init, optional zero bias) cast to the input's dtype."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        super().__init__()
        self.weight = nn.Parameter(
            trunc_normal_init_(torch.empty(out_features, in_features), std=lecun_std(in_features)))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)


class CastedEmbedding(nn.Module):
    """Embedding table in float32, looked up and cast to `cast_to`."""

    def __init__(self, num_embeddings: int, embedding_dim: int, init_std: float, cast_to: torch.dtype):
        super().__init__()
        self.cast_to = cast_to
        self.embedding_weight = nn.Parameter(
            trunc_normal_init_(torch.empty(num_embeddings, embedding_dim), std=init_std))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.embedding_weight.to(self.cast_to))


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor,
                         sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q, k of shape (B, S, H, D) in at least float32 (the tables' dtype), then cast back."""
    dtype = q.dtype
    compute = torch.promote_types(dtype, cos.dtype)
    cos, sin = cos.unsqueeze(-2).to(compute), sin.unsqueeze(-2).to(compute)
    q, k = q.to(compute), k.to(compute)
    q = q * cos + rotate_half(q) * sin
    k = k * cos + rotate_half(k) * sin
    return q.to(dtype), k.to(dtype)


class RotaryEmbedding(nn.Module):
    """Precomputed RoPE tables (half-rotation layout) for `max_positions` positions."""

    def __init__(self, head_dim: int, max_positions: int, base: float):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        angles = torch.outer(torch.arange(max_positions, dtype=torch.float32), inv_freq)
        angles = torch.cat((angles, angles), dim=-1)
        # Not persistent: published checkpoints do not store them and they are cheap to rebuild.
        self.register_buffer("cos_cached", angles.cos(), persistent=False)
        self.register_buffer("sin_cached", angles.sin(), persistent=False)

    def forward(self) -> CosSin:
        return self.cos_cached, self.sin_cached


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection; non-causal unless asked.

    Heads have hidden_size // num_heads features, as published; when num_heads does not divide
    hidden_size (the transformer baseline's 12 heads of 512) attention runs on
    num_heads * head_dim features and o_proj maps them back to hidden_size.
    """

    def __init__(self, hidden_size: int, num_heads: int, causal: bool = False):
        super().__init__()
        if not 1 <= num_heads <= hidden_size:
            raise ValueError(f"num_heads ({num_heads}) must be between 1 and hidden_size ({hidden_size})")
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.causal = causal
        attention_width = num_heads * self.head_dim
        self.qkv_proj = CastedLinear(hidden_size, 3 * attention_width)
        self.o_proj = CastedLinear(attention_width, hidden_size)

    def forward(self, hidden_states: torch.Tensor, cos_sin: CosSin | None) -> torch.Tensor:
        batch, seq, _ = hidden_states.shape
        qkv = self.qkv_proj(hidden_states).view(batch, seq, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.unbind(dim=2)
        if cos_sin is not None:
            q, k = apply_rotary_pos_emb(q, k, *cos_sin)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                             is_causal=self.causal)
        return self.o_proj(out.transpose(1, 2).reshape(batch, seq, self.num_heads * self.head_dim))


def swiglu_inner_size(hidden_size: int, expansion: float) -> int:
    """round(expansion * d * 2/3), rounded up to a multiple of 256."""
    inner = round(expansion * hidden_size * 2 / 3)
    return -(-inner // 256) * 256


class SwiGLU(nn.Module):
    def __init__(self, hidden_size: int, expansion: float):
        super().__init__()
        inner = swiglu_inner_size(hidden_size, expansion)
        self.gate_up_proj = CastedLinear(hidden_size, 2 * inner)
        self.down_proj = CastedLinear(inner, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)
