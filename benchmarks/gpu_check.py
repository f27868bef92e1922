"""One-command GPU check: the GPU-marked tests, fused Adam-atan2 against ours, an NCCL smoke, and the
training-step benchmark at the ARC shape for plain TRM and TRM + LMA (samples/s, peak memory, MFU).

    bash benchmarks/gpu_check.sh                  # on a CUDA machine; about 8 minutes at most on one H200
    bash benchmarks/gpu_check.sh --dry-run        # on a CPU: every step's code path, tiny shapes, < 1 minute
    python -m benchmarks.gpu_check --skip tests,adam --json-out gpu_check.json

Every step runs in its own subprocess with a timeout (a hung compile or NCCL call cannot stall the rest)
and prints one `PASS`, `FAIL` or `SKIP` line with its figures; the check goes on after a failure and
exits 1 if any step failed. The steps share one time budget (`--budget-s`): each step may use its own
share plus whatever the steps before it left unused.

1. `python -m pytest -q -m gpu` (the GPU-marked tests).
2. Fused Adam-atan2 (the optional `adam_atan2` package) against `models.optimizers.AdamAtan2` on CUDA:
   the same parameters and gradients for several steps, parameters and state compared; SKIP with the
   install hint when the package is absent.
3. NCCL smoke: `torchrun --standalone --nproc-per-node 1` runs `--worker nccl`, which goes through
   `utils.distributed.init_distributed`, joins a one-rank NCCL group (plus the gloo group the trainer adds)
   and checks an all_reduce, a broadcast and an object broadcast.
4. and 5. The training step of `benchmarks/train_step.py` (one ACT step forward, backward, every optimizer)
   at the ARC shape (seq_len 900 + puzzle prefix 16, hidden 512, 8 heads, L_layers 2, H_cycles 3,
   L_cycles 4, bfloat16, torch.compile on) for plain TRM and TRM + LMA (automatic latent settings), batch
   256 falling back to 128 and 64 on out-of-memory. The first step (compilation) and the second are timed
   separately; then up to `--steps` timed steps, fewer if the step's time would run out. MFU is the
   matmul FLOPs of one step (`model_flops_per_step`) over the step time, divided by the GPU's dense bf16
   peak (`BF16_PEAK_TFLOPS`; n/a for GPUs not in the table unless `--peak-tflops` is given).

`--dry-run` (no CUDA needed, and CUDA hidden from the subprocesses) runs the same subprocesses on the CPU:
the pytest command (its GPU tests skip), the optimizer comparison with our per-tensor loop standing in
for the fused kernel, the torchrun smoke over gloo, and the benchmark with a tiny model for 2 timed steps,
compile off. Steps that need CUDA report `SKIP (dry run ...)`; only a broken code path makes it fail.

The code lives in benchmarks/gpu/ by job; this module is the command line and the workers' dispatch.
"""
import argparse
import sys

from benchmarks.gpu.adam import adam_worker
from benchmarks.gpu.bench import bench_worker
from benchmarks.gpu.nccl import nccl_worker
from benchmarks.gpu.orchestrate import Check, run_check
from benchmarks.gpu.shapes import (
    BATCH_SIZES,
    DRY_RUN_BATCH_SIZES,
    DRY_RUN_TIMED_STEPS,
    TIMED_STEPS,
    VARIANTS,
    parse_batches,
)
from utils.cli import new_parser


def build_parser() -> argparse.ArgumentParser:
    steps = Check.steps(None)  # the step table (keys, budget shares) does not depend on the check's options
    budget, dry_budget = sum(s.share_s for s in steps), sum(s.dry_share_s for s in steps)
    parser = new_parser(" ".join(__doc__.split("\n\n")[0].split()))  # the first paragraph: two lines
    parser.add_argument("--dry-run", action="store_true",
                        help="no GPU needed: run every step's code path on the CPU with tiny shapes")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="time budget of the whole check in seconds, shared by the steps in fixed proportions "
                             f"(default: {budget:g} s on a GPU, {dry_budget:g} s in the dry run)")
    parser.add_argument("--skip", default="",
                        help=f"comma-separated steps to leave out: {','.join(s.key for s in steps)} (default: none)")
    parser.add_argument("--batch-sizes", default=None,
                        help="benchmark batch sizes, tried in order until one fits "
                             f"(default: {BATCH_SIZES}; dry run {DRY_RUN_BATCH_SIZES})")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"timed benchmark steps at most, at least 2 run (default: {TIMED_STEPS}; "
                             f"dry run {DRY_RUN_TIMED_STEPS})")
    parser.add_argument("--warmup", type=int, default=3,
                        help="untimed benchmark steps, the compiling one included (>= 2)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="bf16 peak of this GPU in TFLOP/s for the MFU, when it is not in the table or to "
                             "override it (default: the table's)")
    parser.add_argument("--json-out", default=None,
                        help="also write every step's outcome and figures to this JSON file (default: print only)")
    # Internal: what the check's subprocesses run.
    parser.add_argument("--worker", choices=("adam", "nccl", "bench"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=VARIANTS, default="plain", help=argparse.SUPPRESS)
    parser.add_argument("--time-limit-s", type=float, default=120.0, help=argparse.SUPPRESS)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_sizes is None:
        args.batch_sizes = DRY_RUN_BATCH_SIZES if args.dry_run else BATCH_SIZES
    if args.steps is None:
        args.steps = DRY_RUN_TIMED_STEPS if args.dry_run else TIMED_STEPS
    try:
        parse_batches(args.batch_sizes)
    except ValueError as err:
        parser.error(str(err))
    if args.steps < 1 or args.warmup < 2:
        parser.error("--steps must be >= 1 and --warmup >= 2 (the compiling step and one warm step are always run)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker == "adam":
        return adam_worker(args.dry_run)
    if args.worker == "nccl":
        return nccl_worker(args.dry_run)
    if args.worker == "bench":
        return bench_worker(args)
    return run_check(args)


if __name__ == "__main__":
    sys.exit(main())
