"""The `bench` worker: benchmarks/train_step.py's training step timed at a shape, falling back to smaller batches
on out-of-memory, with samples/s, peak memory and MFU."""
import argparse
import gc
import time
from typing import Callable

import torch

from benchmarks import train_step
from benchmarks.gpu.flops import bf16_peak_tflops, model_flops_per_step
from benchmarks.gpu.protocol import emit, progress
from benchmarks.gpu.shapes import ARC_SHAPE, DRY_RUN_SHAPE, benchmark_config, parse_batches
from models.lma_layout import describe_layout
from models.recursive_reasoning.config import TRMConfig
from utils.device import should_compile


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA out-of-memory, also when raised inside compiled code or wrapped by the compiler."""
    oom_type = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(err, oom_type) or "out of memory" in str(err).lower()


def with_batch_fallback(batches: list[int], attempt: Callable[[int], dict], cleanup: Callable[[], None]):
    """`(batch, attempt(batch), tried)` for the first batch size that does not run out of memory, where
    `tried` lists `(batch, message)` for those that did; `(None, None, tried)` when every one did.
    Other errors propagate. `cleanup()` runs after each out-of-memory, once its traceback (which holds
    the failed attempt's tensors) is gone."""
    tried = []
    for batch in batches:
        try:
            return batch, attempt(batch), tried
        except Exception as err:  # anything but out-of-memory is re-raised below
            if not is_out_of_memory(err):
                raise
            tried.append((batch, str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__))
            progress(f"batch {batch}: out of memory; trying a smaller batch")
        cleanup()
    return None, None, tried


def _release_memory() -> None:
    gc.collect()
    torch._dynamo.reset()  # drop compiled graphs: the next batch size compiles afresh
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def bench_once(variant: str, batch: int, shape: list[str], device: torch.device, compile_flag: bool | None,
               warmup: int, max_steps: int, deadline: float) -> dict:
    """Build the model as benchmarks/train_step.py does, time its first two steps (compilation, then
    warm), then time up to `max_steps` steps (at least 2) with its `time_steps` before `deadline`."""
    dtype = "bfloat16"
    args = train_step.parse_args(shape + ["--batch-size", str(batch), "--dtype", dtype, "--device", str(device)]
                                 + ([] if compile_flag is None else ["--compile" if compile_flag else "--no-compile"]))
    config = benchmark_config(shape, variant, batch, dtype)
    torch.manual_seed(args.seed)
    head = train_step.build_head(config, device)
    head.train()
    optimizers = train_step.build_optimizers(head, args.puzzle_emb_ndim)
    compiled = should_compile(device, args.compile)
    model = torch.compile(head) if compiled else head
    data = train_step.random_batch(args, device)
    with torch.device(device):
        carry = head.initial_carry(data)

    first_steps = []
    for label in ("first step" + (" (torch.compile)" if compiled else ""), "second step"):
        progress(f"batch {batch}: {label} ...")
        start = time.perf_counter()
        carry = train_step.train_step(model, optimizers, carry, data, batch)
        train_step.synchronize(device)
        first_steps.append(time.perf_counter() - start)
        progress(f"batch {batch}: {label} took {first_steps[-1]:.2f} s")
    # The remaining warm-up and the timed steps run in train_step.time_steps (peak memory reset after warm-up).
    args.warmup = max(0, warmup - 2)
    affordable = int(0.8 * (deadline - time.monotonic()) / max(first_steps[1], 1e-6)) - args.warmup
    args.steps = max(2, min(max_steps, affordable))
    progress(f"batch {batch}: {args.warmup} more warm-up step(s), then {args.steps} timed steps")
    durations = train_step.time_steps(model, optimizers, carry, data, args, device)
    results = train_step.summarise(args, device, compiled, head, durations)
    results.update(variant=variant, warmup=2 + args.warmup, compile_step_s=first_steps[0],
                   second_step_s=first_steps[1], optimizer=type(optimizers[-1]).__name__,
                   flops_per_step=model_flops_per_step(config, batch, args.seq_len))
    if variant == "lma":
        results["lma_settings"] = describe_layout(TRMConfig(**config).lma_layout, config["lma_mode"],
                                                            config["lma_latent_len"] is None)
    if device.type == "cuda":
        results["total_memory_gib"] = torch.cuda.get_device_properties(device).total_memory / 2**30
        results["device_name"] = torch.cuda.get_device_name(device)
    return results


def bench_worker(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.time_limit_s
    device = torch.device("cpu" if args.dry_run else "cuda")
    shape = DRY_RUN_SHAPE if args.dry_run else ARC_SHAPE
    compile_flag = False if args.dry_run else None  # None: train_step's rule (on for CUDA, DISABLE_COMPILE off)
    batches = parse_batches(args.batch_sizes)

    def attempt(batch: int) -> dict:
        return bench_once(args.variant, batch, shape, device, compile_flag, args.warmup, args.steps, deadline)

    batch, results, tried = with_batch_fallback(batches, attempt, _release_memory)
    if results is None:
        emit("fail", "out of memory at every batch size: " + "; ".join(f"{b}: {m}" for b, m in tried),
             oom_batches=[b for b, _ in tried])
        return 0
    results["oom_batches"] = [b for b, _ in tried]
    peak = args.peak_tflops or (bf16_peak_tflops(results["device_name"]) if "device_name" in results else None)
    achieved = results["flops_per_step"] / results["mean_s"]
    results["achieved_tflops"] = achieved / 1e12
    results["peak_tflops"] = peak
    results["mfu"] = achieved / (peak * 1e12) if peak else None
    text = describe_bench(results)
    if args.dry_run:
        emit("skip", f"dry run (CPU, tiny shape, compile off): {text}", **results)
    else:
        emit("pass", text, **results)
    return 0


def describe_bench(r: dict) -> str:
    mfu = (f"MFU {100 * r['mfu']:.1f}% of {r['peak_tflops']:g} TFLOP/s bf16" if r.get("mfu") is not None
           else "MFU n/a (no bf16 peak known for this device; --peak-tflops sets one)")
    memory = (f"peak {r['peak_memory_gib']:.2f} GiB of {r['total_memory_gib']:.1f}" if "peak_memory_gib" in r
              else "peak memory n/a (CPU)")
    fallback = f" (out of memory at {', '.join(map(str, r['oom_batches']))})" if r.get("oom_batches") else ""
    return (f"batch {r['batch_size']}{fallback}: {r['samples_per_s']:.1f} samples/s, step mean "
            f"{r['mean_s'] * 1e3:.1f} ms (median {r['median_s'] * 1e3:.1f}, {r['steps']} timed), {memory}, "
            f"{r['flops_per_step'] / 1e12:.3g} TFLOP/step -> {r['achieved_tflops']:.3g} TFLOP/s, {mfu}; "
            f"first step {r['compile_step_s']:.1f} s (compile={r['compile']}), second {r['second_step_s']:.2f} s; "
            f"{r['optimizer']}" + (f"; LMA {r['lma_settings']}" if r.get("lma_settings") else ""))
