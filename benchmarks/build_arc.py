"""Time the ARC builder and measure its peak memory.

    python benchmarks/build_arc.py --num-aug 100
    python -m benchmarks.build_arc --input-file-prefix kaggle/combined/arc-agi --num-aug 1000 --json

Builds `--subsets` (default training evaluation concept, test set evaluation) into a temporary
directory in a child process, so the child's peak resident set size (RUSAGE_CHILDREN ru_maxrss)
is the builder's own, then deletes the output. Input: the Kaggle-layout files written by
`python -m dataset.assemble_arc_data --output-dir kaggle/combined --concept <ConceptARC dir>`.
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from utils.cli import REPO_ROOT, new_parser


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("Time the ARC builder and measure its peak RSS.")
    parser.add_argument("--input-file-prefix", default="kaggle/combined/arc-agi",
                        help="the builder's --input-file-prefix: the Kaggle-layout files {prefix}_{subset}_*.json")
    parser.add_argument("--subsets", nargs="+", default=["training", "evaluation", "concept"],
                        help="the builder's --subsets: subsets to build")
    parser.add_argument("--test-set-name", default="evaluation",
                        help="the builder's --test-set-name: the subset whose test pairs form the test split")
    parser.add_argument("--num-aug", type=int, default=100, help="the builder's --num-aug: augmented copies per task")
    parser.add_argument("--work-dir", default=None, help="where the temporary output goes (default: system temp dir)")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of text")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def check_inputs(prefix: str, subsets: list[str]) -> None:
    missing = [p for s in subsets if not os.path.isfile(p := f"{prefix}_{s}_challenges.json")]
    if missing:
        sys.exit(
            f"error: input files not found: {missing}; create them with "
            "`python -m dataset.assemble_arc_data --output-dir kaggle/combined --concept <ConceptARC dir>` "
            "or pass --input-file-prefix."
        )


def run_build(args: argparse.Namespace) -> dict:
    """Run the builder once in a child process; returns seconds, peak RSS and the output size."""
    prefix = os.path.abspath(args.input_file_prefix)
    work = tempfile.mkdtemp(prefix="arc-bench-", dir=args.work_dir)
    out_dir = os.path.join(work, "out")
    cmd = [
        sys.executable, "-m", "dataset.build_arc_dataset", "--input-file-prefix", prefix, "--output-dir", out_dir,
        "--subsets", *args.subsets, "--test-set-name", args.test_set_name, "--num-aug", str(args.num_aug),
    ]
    try:
        start = time.perf_counter()
        # Output is discarded (progress bars); a failure is re-run visibly by the user from the message.
        proc = subprocess.run(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"error: the build failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
        size = sum(f.stat().st_size for f in Path(out_dir).rglob("*") if f.is_file())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # Linux reports ru_maxrss in KiB (the largest of all waited-for children: there is only one).
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"num_aug": args.num_aug, "subsets": args.subsets, "seconds": round(seconds, 2),
            "peak_rss_mb": round(peak_mb, 1), "output_mb": round(size / 2**20, 1)}


def main(argv=None) -> None:
    args = parse_args(argv)
    check_inputs(args.input_file_prefix, args.subsets)
    result = run_build(args)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"ARC build {' '.join(result['subsets'])} --num-aug {result['num_aug']}: "
              f"{result['seconds']:.1f} s, peak RSS {result['peak_rss_mb']:.0f} MB, "
              f"output {result['output_mb']:.0f} MB")


if __name__ == "__main__":
    main()
