"""`benchmarks/gpu_check.sh --dry-run` end to end (a subprocess, no GPU needed): every step skips with its dry-run
figures, and the JSON report lists them."""
import json
import os
import subprocess

from benchmarks.gpu import flops, shapes
from tests.helpers import REPO_ROOT


def test_dry_run_passes(tmp_path):
    json_out = tmp_path / "gpu_check.json"
    proc = subprocess.run(["bash", os.path.join(REPO_ROOT, "benchmarks", "gpu_check.sh"), "--dry-run",
                           "--json-out", str(json_out)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    for line in ["SKIP  GPU-marked tests: dry run: 1 skipped",
                 "SKIP  fused Adam-atan2 vs ours (CUDA): dry run (our loop path standing in for the kernel, CPU): "
                 "12 steps on 3 tensors: max |diff| param 0.0e+00",
                 "SKIP  NCCL 1-GPU smoke (torchrun): dry run (gloo on the CPU): backend gloo, world size 1",
                 "SKIP  training step, plain TRM: dry run (CPU, tiny shape, compile off): batch 4:",
                 "SKIP  training step, TRM + LMA: dry run (CPU, tiny shape, compile off): batch 4:",
                 "model FLOPs per step at batch 256: 101.9 TFLOP",  # plain TRM at the ARC shape
                 "model FLOPs per step at batch 256: 12.76 TFLOP",  # TRM + LMA
                 "gpu_check (dry run): PASS: 0 passed, 5 skipped, 0 failed"]:
        assert line in out, f"missing {line!r} in:\n{out}"
    steps = json.loads(json_out.read_text())["steps"]
    assert [s["key"] for s in steps] == ["tests", "adam", "nccl", "plain", "lma"]
    assert all(s["status"] == "skip" for s in steps)
    bench = steps[3]["figures"]
    assert bench["steps"] == 2 and bench["batch_size"] == 4 and bench["samples_per_s"] > 0
    assert bench["flops_per_step"] == flops.model_flops_per_step(
        shapes.benchmark_config(shapes.DRY_RUN_SHAPE, "plain", 4), 4, 30)
