"""Any other dataset (e.g. the copy task), or `--task generic`: the raw token ids as a grid."""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from viz.data import SplitData
from viz.sheet import STYLE_WRONG, Panel, Renderer

# Categorical colours for token ids (light, so the ids stay readable).
PALETTE = ("#FFFFFF", "#DDDDDD", "#AEC7E8", "#FFBB78", "#98DF8A", "#FF9896", "#C5B0D5",
           "#C49C94", "#F7B6D2", "#DBDB8D", "#9EDAE5", "#FFE08A")
MAX_WIDTH = 30  # tokens per row when the sequence is not a square


def generic_shape(seq_len: int) -> tuple[int, int]:
    """A square when seq_len is a perfect square, else rows of at most MAX_WIDTH tokens."""
    side = math.isqrt(seq_len)
    if side * side == seq_len:
        return side, side
    width = min(seq_len, MAX_WIDTH)
    return -(-seq_len // width), width


def _padded_grid(tokens: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Tokens laid out row-major in `shape`; -1 in the cells past the sequence end."""
    padded = np.full(shape[0] * shape[1], -1, dtype=np.int64)
    padded[:tokens.size] = tokens
    return padded.reshape(shape)


def generic_panel(title: str, tokens: np.ndarray, expected: Optional[np.ndarray] = None) -> Panel:
    """Token ids on categorical colours; with `expected`, the differing cells marked wrong."""
    tokens = np.asarray(tokens, dtype=np.int64)
    grid = _padded_grid(tokens, generic_shape(tokens.size))
    colours = np.array([PALETTE[t % len(PALETTE)] if t >= 0 else "#FFFFFF" for t in grid.ravel()],
                       dtype=object).reshape(grid.shape)
    texts = np.array([str(t) if t >= 0 else "" for t in grid.ravel()], dtype=object).reshape(grid.shape)
    panel = Panel(title, colours, texts)
    if expected is not None:
        panel.errors = grid != _padded_grid(expected, grid.shape)
        panel.styles = np.where(panel.errors, STYLE_WRONG, "").astype(object)
    return panel


class GenericRenderer(Renderer):
    """Input, label and (with outputs) prediction as token grids."""

    name = "generic"
    outline = "token differs from the label"

    def panels(self, inputs: np.ndarray, labels: np.ndarray) -> list[Panel]:
        return [generic_panel("input", inputs), generic_panel("label", labels)]

    def prediction_panel(self, inputs: np.ndarray, labels: np.ndarray, preds: np.ndarray) -> Panel:
        return generic_panel("prediction", preds, labels)

    def note(self, data: SplitData) -> str:
        metadata = data.metadata
        if data.task != self.name:
            return f"; drawn as raw token ids (the encoding is {data.task}'s)"
        return (f"; dataset kind not recognised (vocab {metadata.vocab_size}, seq_len {metadata.seq_len}): "
                f"showing raw token ids")
