"""The shapes and paths of `benchmarks/train_step.py --compare`, and the table it prints.

A shape is a set of train_step.py option values; a path is a forward dtype with or without torch.compile.
Every path of a shape is compared with that shape's fp32 eager step.
"""
from dataclasses import dataclass

import torch

from utils.cpu import bf16_units

# Option values (train_step.py's argparse names) of each shape; options a shape leaves out keep their defaults.
SHAPES = {
    # The quick demo's model (config/quickstart.yaml: arch and global_batch_size) on its 81-cell Sudoku.
    "demo": dict(hidden_size=64, num_heads=2, expansion=4, mlp_t=True, pos_encodings="none", L_layers=2, H_cycles=2,
                 L_cycles=2, halt_max_steps=4, puzzle_emb_ndim=0, batch_size=64, seq_len=81, vocab_size=11),
    # The paper's Sudoku MLP model (README "Training"), 16 puzzle-embedding tokens before the 81 cells.
    "sudoku": dict(hidden_size=512, num_heads=8, expansion=4, mlp_t=True, pos_encodings="none", L_layers=2,
                   H_cycles=3, L_cycles=6, halt_max_steps=16, puzzle_emb_ndim=None, puzzle_emb_len=16, batch_size=32,
                   seq_len=81, vocab_size=11),
}


@dataclass(frozen=True)
class Path:
    dtype: str  # the model's forward_dtype
    compiled: bool

    @property
    def label(self) -> str:
        return f"{'fp32' if self.dtype == 'float32' else 'bf16'} {'compiled' if self.compiled else 'eager'}"


PATHS = {"fp32": Path("float32", False), "bf16": Path("bfloat16", False),
         "bf16+compile": Path("bfloat16", True), "fp32+compile": Path("float32", True)}
REFERENCE = "fp32"  # what the ratio column compares against


def bf16_line(device: torch.device) -> str:
    """Which bf16 hardware the bf16 paths run on: the CPU's bf16 unit, or the GPU."""
    if device.type == "cuda":
        return f"bf16 units: {torch.cuda.get_device_name(device)} (CUDA)"
    if device.type != "cpu":
        return f"bf16 units: {device.type} (not probed)"
    unit = bf16_units()
    return f"bf16 units: {unit}" if unit is not None else "bf16 units: none (bf16 runs without them)"


def add_speedups(rows: list[dict]) -> None:
    """`vs_fp32` of every row: its shape's fp32 eager step time over its own (> 1: faster); None without fp32."""
    reference = {row["shape"]: row["mean_s"] for row in rows if row["path"] == REFERENCE}
    for row in rows:
        base = reference.get(row["shape"])
        row["vs_fp32"] = base / row["mean_s"] if base is not None else None


def describe_shape(row: dict) -> str:
    return (f"{row['shape']}: hidden {row['hidden_size']}, heads {row['num_heads']}, expansion {row['expansion']}, "
            f"L_layers {row['L_layers']}, H_cycles {row['H_cycles']}, L_cycles {row['L_cycles']}, "
            f"{'mlp_t' if row['mlp_t'] else 'attention'}, pos {row['pos_encodings']}, halt_max_steps "
            f"{row['halt_max_steps']}, batch {row['batch_size']} x (prefix {row['prefix_len']} + seq {row['seq_len']})")


def print_table(rows: list[dict], header: list[str]) -> None:
    for line in header:
        print(line)
    shown = set()
    for row in rows:
        if row["shape"] not in shown:
            shown.add(row["shape"])
            print(describe_shape(row))
    print(f"{'shape':<10} {'path':<14} {'ms/step':>10} {'samples/s':>10} {'vs fp32 eager':>14}")
    for row in rows:
        ratio = f"{row['vs_fp32']:.2f}x" if row["vs_fp32"] is not None else "-"
        print(f"{row['shape']:<10} {PATHS[row['path']].label:<14} {row['mean_s'] * 1e3:>10.1f} "
              f"{row['samples_per_s']:>10.1f} {ratio:>14}")
    print("ms/step: mean of the timed steps; vs fp32 eager: the shape's fp32 eager step time over this one "
          "(> 1 is faster; - without an fp32 path)")
