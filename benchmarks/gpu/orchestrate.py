"""The check itself: the step table, each step in its own subprocess with a time limit out of one budget,
and the PASS/FAIL/SKIP lines, the summary and the JSON report."""
import argparse
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from benchmarks import train_step
from benchmarks.gpu.flops import bf16_peak_tflops, step_flops
from benchmarks.gpu.protocol import RESULT_MARK, worker_result
from benchmarks.gpu.shapes import ARC_SHAPE, DRY_RUN_SHAPE, benchmark_config, parse_batches
from utils.cli import REPO_ROOT

CHECK_MODULE = "benchmarks.gpu_check"  # what the workers run: python -m CHECK_MODULE --worker NAME


@dataclass
class Outcome:
    status: str  # "pass", "fail" or "skip"
    summary: str
    seconds: float = 0.0
    figures: dict = field(default_factory=dict)


@dataclass
class Step:
    key: str
    title: str
    share_s: float  # its share of the budget on a GPU
    dry_share_s: float  # in the dry run
    run: Callable[["Check", float], Outcome]


def run_streamed(cmd: list[str], timeout_s: float, env: dict) -> tuple[int | None, list[str]]:
    """Run `cmd` in the repository root in its own process group, echoing its output indented as it
    comes; returns (exit code, or None when it was killed at `timeout_s`, the output lines). The result
    line of a worker is kept but not echoed."""
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1, start_new_session=True, errors="replace")
    lines: list[str] = []

    def pump() -> None:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if not line.startswith(RESULT_MARK):
                print("    | " + line.rstrip("\n"), flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=max(timeout_s, 1.0))
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole group: torchrun's worker too
        except ProcessLookupError:
            pass
        proc.wait()
        code = None
    reader.join(timeout=10)
    return code, lines


def last_output(lines: list[str]) -> str:
    shown = [line for line in lines if line.strip() and not line.startswith(RESULT_MARK)]
    return shown[-1].strip()[:300] if shown else "no output"


class Check:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.dry_run = args.dry_run
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.dry_run:
            self.env["CUDA_VISIBLE_DEVICES"] = ""  # the dry run is the CPU run, also on a GPU machine
            # Tiny shapes: one thread is several times faster than two on a CPU shared with other jobs.
            self.env["OMP_NUM_THREADS"] = "1"

    def worker_command(self, worker: str, *extra: str) -> list[str]:
        return [sys.executable, "-m", CHECK_MODULE, "--worker", worker, *extra] + (
            ["--dry-run"] if self.dry_run else [])

    def run_worker(self, cmd: list[str], timeout_s: float) -> Outcome:
        code, lines = run_streamed(cmd, timeout_s, self.env)
        if code is None:
            return Outcome("fail", f"timed out after {timeout_s:.0f} s (last output: {last_output(lines)})")
        result = worker_result(lines)
        if result is None:
            return Outcome("fail", f"exit code {code} without a result (last output: {last_output(lines)})")
        figures = {k: v for k, v in result.items() if k not in ("status", "summary")}
        if code != 0 and result["status"] != "fail":
            return Outcome("fail", f"exit code {code} after: {result['summary']}", figures=figures)
        return Outcome(result["status"], result["summary"], figures=figures)

    # -- the steps ------------------------------------------------------------------------------
    def gpu_tests(self, timeout_s: float) -> Outcome:
        cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu"]
        print(f"    $ {' '.join(['python'] + cmd[1:])}", flush=True)
        code, lines = run_streamed(cmd, timeout_s, self.env)
        if code is None:
            return Outcome("fail", f"timed out after {timeout_s:.0f} s (last output: {last_output(lines)})")
        counts = pytest_counts(lines)
        text = ", ".join(f"{n} {what}" for what, n in counts.items()) or last_output(lines)
        if code != 0:
            return Outcome("fail", f"pytest exit code {code}: {text}", figures=counts)
        if self.dry_run:
            return Outcome("skip", f"dry run: {text} (CUDA hidden; the command and the marker selection work)",
                           figures=counts)
        if counts.get("passed", 0) == 0:
            return Outcome("fail", f"no GPU test ran: {text}", figures=counts)
        return Outcome("pass", text, figures=counts)

    def adam(self, timeout_s: float) -> Outcome:
        return self.run_worker(self.worker_command("adam"), timeout_s)

    def nccl(self, timeout_s: float) -> Outcome:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
               "-m", CHECK_MODULE, "--worker", "nccl"] + (["--dry-run"] if self.dry_run else [])
        print(f"    $ torchrun {' '.join(cmd[3:])}", flush=True)
        return self.run_worker(cmd, timeout_s)

    def bench(self, variant: str, timeout_s: float) -> Outcome:
        batches = parse_batches(self.args.batch_sizes)
        shapes = [("dry-run shape", DRY_RUN_SHAPE, batches[0])] if self.dry_run else []
        shapes.append(("ARC shape", ARC_SHAPE, 256 if self.dry_run else batches[0]))
        for label, shape, batch in shapes:
            print(f"    {flops_line(shape, variant, batch)} ({label})", flush=True)
        extra = ["--variant", variant, "--time-limit-s", f"{max(timeout_s - 15, 5):.0f}",
                 "--batch-sizes", self.args.batch_sizes, "--steps", str(self.args.steps),
                 "--warmup", str(self.args.warmup)]
        if self.args.peak_tflops:
            extra += ["--peak-tflops", str(self.args.peak_tflops)]
        return self.run_worker(self.worker_command("bench", *extra), timeout_s)

    def steps(self) -> list[Step]:
        return [
            Step("tests", "GPU-marked tests", 60, 75, lambda c, t: c.gpu_tests(t)),
            Step("adam", "fused Adam-atan2 vs ours (CUDA)", 45, 30, lambda c, t: c.adam(t)),
            Step("nccl", "NCCL 1-GPU smoke (torchrun)", 60, 45, lambda c, t: c.nccl(t)),
            Step("plain", "training step, plain TRM", 165, 45, lambda c, t: c.bench("plain", t)),
            Step("lma", "training step, TRM + LMA", 135, 45, lambda c, t: c.bench("lma", t)),
        ]


def flops_line(shape: list[str], variant: str, batch: int) -> str:
    parts = step_flops(benchmark_config(shape, variant, batch), batch, train_step.parse_args(shape).seq_len)
    return (f"model FLOPs per step at batch {batch}: {parts.total / 1e12:.4g} TFLOP = no-grad forward "
            f"{parts.forward_no_grad / 1e12:.4g} + 3 x forward with gradients {parts.forward_with_grad / 1e12:.4g}")


def pytest_counts(lines: list[str]) -> dict[str, int]:
    """{'passed': 1, 'skipped': 2, ...} from pytest's last summary line."""
    for line in reversed(lines):
        found = re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)", line)
        if found:
            return {what: int(n) for n, what in found}
    return {}


def print_line(status: str, title: str, outcome: Outcome) -> None:
    print(f"{status.upper():<5} {title}: {outcome.summary} [{outcome.seconds:.1f} s]", flush=True)


def run_check(args: argparse.Namespace) -> int:
    check = Check(args)
    skipped = set(filter(None, args.skip.split(",")))
    steps = [s for s in check.steps() if s.key not in skipped]
    unknown = skipped - {s.key for s in check.steps()}
    if unknown:
        print(f"--skip: unknown step(s) {sorted(unknown)}; steps are " + ",".join(s.key for s in check.steps()))
        return 2
    shares = [s.dry_share_s if args.dry_run else s.share_s for s in steps]
    budget = args.budget_s if args.budget_s is not None else sum(shares)
    shares = [share * budget / sum(shares) for share in shares] if shares else shares  # --budget-s scales them all
    if args.dry_run:
        print(f"GPU check, dry run on the CPU (torch {torch.__version__}; CUDA hidden), budget {budget:.0f} s",
              flush=True)
    else:
        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device here; use --dry-run to check the code paths on a CPU", flush=True)
            return 2
        name = torch.cuda.get_device_name(0)
        peak = args.peak_tflops or bf16_peak_tflops(name)
        print(f"GPU check on {name} (torch {torch.__version__}, CUDA {torch.version.cuda}; bf16 peak "
              f"{f'{peak:g} TFLOP/s' if peak else 'unknown: MFU n/a'}), budget {budget:.0f} s", flush=True)

    start = time.monotonic()
    outcomes: list[tuple[Step, Outcome]] = []
    for index, step in enumerate(steps):
        # Its own share plus what the steps before it left unused, keeping the later steps' shares.
        timeout = budget - (time.monotonic() - start) - sum(shares[index + 1:])
        print(f"[{index + 1}/{len(steps)}] {step.title} (time limit {max(timeout, 0):.0f} s)", flush=True)
        step_start = time.monotonic()
        if timeout < 5:
            outcome = Outcome("fail", "no time left in the budget")
        else:
            try:
                outcome = step.run(check, timeout)
            except Exception as err:  # a broken step must not stop the others
                outcome = Outcome("fail", f"{type(err).__name__}: {err}")
        outcome.seconds = time.monotonic() - step_start
        print_line(outcome.status, step.title, outcome)
        outcomes.append((step, outcome))

    by_key = {step.key: outcome for step, outcome in outcomes}
    plain, lma = by_key.get("plain"), by_key.get("lma")
    if plain and lma and "samples_per_s" in plain.figures and "samples_per_s" in lma.figures:
        p, q = plain.figures, lma.figures
        same = p["batch_size"] == q["batch_size"]
        print(f"LMA vs plain TRM: {q['samples_per_s'] / p['samples_per_s']:.2f}x samples/s"
              f"{'' if same else ' (different batch sizes)'}, {p['flops_per_step'] / q['flops_per_step']:.1f}x fewer "
              f"FLOPs per step", flush=True)
    total = time.monotonic() - start
    counts = {status: sum(o.status == status for _, o in outcomes) for status in ("pass", "skip", "fail")}
    print("summary:")
    for step, outcome in outcomes:
        print(f"  {outcome.status.upper():<5} {step.title} [{outcome.seconds:.1f} s]")
    verdict = "FAIL" if counts["fail"] else "PASS"
    print(f"gpu_check{' (dry run)' if args.dry_run else ''}: {verdict}: {counts['pass']} passed, {counts['skip']} "
          f"skipped, {counts['fail']} failed in {total:.1f} s", flush=True)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"dry_run": args.dry_run, "seconds": total, "verdict": verdict,
                       "steps": [dict(key=s.key, title=s.title, **dataclasses.asdict(o)) for s, o in outcomes]},
                      f, indent=1)
    return 1 if counts["fail"] else 0
