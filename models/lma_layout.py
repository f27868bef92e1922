"""The LMA layout: which latent sequence an input maps onto, and which settings are valid (docs/lma.md).

Pure arithmetic, no tensors: the configuration checks use it before any model (or torch) is loaded.
"""
import math
from dataclasses import dataclass
from typing import Literal

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


def describe_layout(layout: LatentLayout, mode: str, automatic: bool) -> str:
    """One line for logs: the mode, L_new (and whether it was chosen automatically), d', heads and C'."""
    latent = layout.latent
    return (f"mode {mode}, L_new {latent.length}{' (automatic)' if automatic else ''}, d' {latent.width}, "
            f"{latent.num_heads} heads, C' {layout.chunk_size}; L = {layout.input_len} -> {latent.length} "
            f"({layout.input_len / latent.length:.1f}x shorter)")


def layout_metrics(layout: LatentLayout) -> dict[str, int]:
    """The resolved sizes as step-0 metrics: all_config.yaml keeps what was asked (null for automatic), so
    metrics.jsonl and wandb record what was built."""
    return {"lma/L_new": layout.latent.length, "lma/latent_width": layout.latent.width,
            "lma/num_heads": layout.latent.num_heads, "lma/chunk_size": layout.chunk_size}


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
