#!/usr/bin/env bash
# One-command GPU check (benchmarks/gpu_check.py): GPU tests, fused Adam-atan2 vs ours, NCCL smoke, and the
# ARC-shape training-step benchmark (plain TRM and TRM + LMA). `--dry-run` checks the code paths on a CPU.
#   bash benchmarks/gpu_check.sh [--dry-run] [--skip tests,adam,nccl,plain,lma] [--json-out FILE] ...
# PYTHON picks the interpreter (default: python, else python3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
exec "$PYTHON" -m benchmarks.gpu_check "$@"
