"""The benchmark's shapes (ARC's and the dry run's), batch sizes and timed steps, and the model config
benchmarks/train_step.py builds for a shape."""
from benchmarks import lma_speed, train_step

ARC_SHAPE = list(lma_speed.ARC_SHAPE) + ["--halt-max-steps", "16"]  # seq 900 + prefix 16, hidden 512, H3/L4, vocab 12
# Dry run: tiny, but with a prefix, several heads and cycles, and a valid LMA layout (L = 32, L_new 16).
DRY_RUN_SHAPE = ["--seq-len", "30", "--puzzle-emb-len", "2", "--hidden-size", "32", "--num-heads", "4",
                 "--L-layers", "1", "--H-cycles", "2", "--L-cycles", "2", "--vocab-size", "12",
                 "--num-puzzle-identifiers", "16", "--halt-max-steps", "4"]
VARIANTS = ("plain", "lma")
# Benchmark batch sizes (tried in order until one fits) and timed steps, unless --batch-sizes / --steps say otherwise.
BATCH_SIZES, DRY_RUN_BATCH_SIZES = "256,128,64", "4"
TIMED_STEPS, DRY_RUN_TIMED_STEPS = 10, 2


def lma_config_keys() -> dict:
    """The LMA keys with their automatic values, as benchmarks/lma_speed.py uses them by default."""
    ours, _ = lma_speed.parse_args([])
    return lma_speed.lma_keys(ours)


def benchmark_config(shape: list[str], variant: str, batch: int, dtype: str = "bfloat16") -> dict:
    """The model config benchmarks/train_step.py builds for `shape`, with LMA for variant 'lma'."""
    args = train_step.parse_args(shape + ["--batch-size", str(batch), "--dtype", dtype])
    config = train_step.model_config(args)
    if variant == "lma":
        config.update(lma_config_keys())
    return config


def parse_batches(text: str) -> list[int]:
    batches = [int(b) for b in text.split(",") if b.strip()]
    if not batches or min(batches) < 1:
        raise ValueError(f"--batch-sizes needs positive integers, got {text!r}")
    return batches
