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
"""
import argparse
import dataclasses
import gc
import importlib.util
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

if __package__:  # python -m benchmarks.gpu_check (the wrapper, the tests)
    from benchmarks import lma_speed, train_step
else:  # python benchmarks/gpu_check.py: benchmarks/ itself is sys.path[0]
    import lma_speed
    import train_step
from models.layers import swiglu_inner_size
from models.recursive_reasoning.config import TRMConfig
from utils.cli import REPO_ROOT, new_parser
from utils.device import should_compile

RESULT_MARK = "GPU_CHECK_RESULT "  # a worker's last line: this prefix, then its result as JSON

# ---------------------------------------------------------------------------------------------
# Model FLOPs of one training step
# ---------------------------------------------------------------------------------------------
# Keys of config/arch/*.yaml that are not model-config keys.
_NON_MODEL_KEYS = ("name", "loss")
_TRM_NAME = "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1"


def _linear(rows: int, fan_in: int, fan_out: int) -> int:
    """Forward FLOPs of a (rows x fan_in) @ (fan_in x fan_out) product: a multiply and an add each."""
    return 2 * rows * fan_in * fan_out


def _trm_config(arch_config, batch: int, seq_len: int, vocab_size: int | None) -> TRMConfig:
    if isinstance(arch_config, TRMConfig):
        return arch_config.model_copy(update={"batch_size": batch, "seq_len": seq_len})
    values = dict(arch_config)
    name = values.get("name", _TRM_NAME)
    if name != _TRM_NAME:
        raise ValueError(f"model_flops_per_step counts TRM ({_TRM_NAME}) only, got {name}")
    for key in _NON_MODEL_KEYS:
        values.pop(key, None)
    if vocab_size is not None:
        values["vocab_size"] = vocab_size
    if "vocab_size" not in values:
        raise ValueError("vocab_size (derived from the dataset) is needed: it is lm_head's output size")
    values.update(batch_size=batch, seq_len=seq_len)
    # Keys the trainer derives or that cost no FLOPs; defaults only so that an arch config alone is enough.
    values.setdefault("num_puzzle_identifiers", 1)
    values.setdefault("halt_max_steps", 16)
    values.setdefault("halt_exploration_prob", 0.1)
    return TRMConfig(**values)


@dataclass(frozen=True)
class StepFlops:
    """Forward matmul FLOPs of the parts of one training step (see `model_flops_per_step`)."""

    block: int  # one Block on the recursion's sequence (latent sequence with LMA)
    applications: int  # block applications per deep-supervision step: H_cycles * (L_cycles + 1) * L_layers
    applications_with_grad: int  # those of the last H cycle: (L_cycles + 1) * L_layers
    lma_encode: int  # E_chunk + E_resid (0 without LMA)
    lma_decode: int  # D_chunk (0 without LMA)
    heads: int  # lm_head over every position (prefix included) + q_head on position 0
    q_continue_forward: int  # the extra gradient-free step for the Q-continue target (0 with no_ACT_continue)

    @property
    def forward_with_grad(self) -> int:
        return self.applications_with_grad * self.block + self.lma_encode + self.lma_decode + self.heads

    @property
    def forward_no_grad(self) -> int:
        return (self.applications - self.applications_with_grad) * self.block + self.q_continue_forward

    @property
    def total(self) -> int:
        """Forward everywhere, plus backward = 2x forward where gradients flow."""
        return self.forward_no_grad + 3 * self.forward_with_grad


def step_flops(arch_config, batch: int, seq_len: int, *, vocab_size: int | None = None) -> StepFlops:
    """The parts of `model_flops_per_step`; same arguments."""
    cfg = _trm_config(arch_config, batch, seq_len, vocab_size)
    geometry = cfg.geometry  # what the recursion runs on: (prefix + seq_len, hidden, heads) or LMA's latent
    length, width, heads = geometry.length, geometry.width, geometry.num_heads
    tokens = batch * length
    if cfg.mlp_t:
        # SwiGLU across positions on the transposed (B, width, length) tensor.
        inner_t = swiglu_inner_size(length, cfg.expansion)
        mixing = _linear(batch * width, length, 2 * inner_t) + _linear(batch * width, inner_t, length)
    else:
        head_dim = width // heads
        attention_width = heads * head_dim
        mixing = _linear(tokens, width, 3 * attention_width) + _linear(tokens, attention_width, width)
        mixing += 2 * (2 * batch * heads * length * length * head_dim)  # Q K^T and (softmax) V
    inner = swiglu_inner_size(width, cfg.expansion)
    block = mixing + _linear(tokens, width, 2 * inner) + _linear(tokens, inner, width)

    encode = decode = 0
    if cfg.lma_enable:
        layout = cfg.lma_layout
        chunk, rows = layout.chunk_size, batch * layout.latent.length
        encode = _linear(rows, chunk, width) + _linear(rows, width, width) + _linear(rows, chunk, width)
        decode = _linear(rows, width, chunk)
    heads_flops = _linear(batch * cfg.total_len, cfg.hidden_size, cfg.vocab_size) + _linear(batch, cfg.hidden_size, 2)
    applications = cfg.H_cycles * (cfg.L_cycles + 1) * cfg.L_layers
    q_continue = 0
    if not cfg.no_ACT_continue:
        q_continue = applications * block + encode + decode + heads_flops
    return StepFlops(block=block, applications=applications, applications_with_grad=(cfg.L_cycles + 1) * cfg.L_layers,
                     lma_encode=encode, lma_decode=decode, heads=heads_flops, q_continue_forward=q_continue)


def model_flops_per_step(arch_config, batch: int, seq_len: int, *, vocab_size: int | None = None) -> int:
    """Matmul FLOPs of one TRM training step (one ACT step forward, then backward), as `train_step.py` runs it.

    `arch_config`: the arch keys (a dict as in config/arch/trm.yaml, or the model config the trainer builds,
    or a `TRMConfig`); `vocab_size` comes from the dataset and must be in it or given. Counting rule:

    - a matmul of (m x k) by (k x n) costs 2*m*n*k forward; backward costs twice its forward (input and
      weight gradients) wherever gradients flow; element-wise work (norms, RoPE, softmax, SiLU, the loss,
      the optimizers) is not counted;
    - a Block on a sequence of S positions, width d, h heads of size d_h = d // h (batch B, T = B*S tokens):
      qkv 2*T*d*(3*h*d_h) + o_proj 2*T*(h*d_h)*d + Q K^T and A V 2 * 2*B*h*S*S*d_h + SwiGLU 2*T*d*(2*I) +
      2*T*I*d, with I = swiglu_inner_size(d, expansion) (round(expansion*d*2/3) up to a multiple of 256);
      with mlp_t the attention part is a SwiGLU across positions on B*d rows of length S;
    - one deep-supervision step runs H_cycles cycles of (L_cycles + 1) network applications of L_layers
      blocks; the first H_cycles - 1 cycles run under no_grad (forward only), the last one with gradients;
    - lm_head 2*B*(prefix + seq_len)*hidden*vocab (logits of every position; the prefix is sliced off
      afterwards) and q_head 2*B*hidden*2, both with gradients;
    - with LMA (lma_enable) the recursion runs on the latent (L_new, d', heads') sequence instead, plus the
      encoder once per step (E_chunk: C'->d' then d'->d'; E_resid: C'->d', on B*L_new chunks) and D_chunk
      (d'->C') on the answer, both with gradients;
    - no_ACT_continue=False adds one more full gradient-free forward (the Q-continue target).

    So total = forward_no_grad + 3 * forward_with_grad (`StepFlops`). FlashAttention's backward recomputes
    Q K^T (torch's flop counter counts its backward as 2.5x forward); that recomputation is hardware work,
    not model work, and is left out, as MFU conventionally does.
    """
    return step_flops(arch_config, batch, seq_len, vocab_size=vocab_size).total


# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from the vendor datasheets, by a substring of
# torch.cuda.get_device_name(); the first match wins, so more specific names come first.
BF16_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("GH200", 989.5),
    ("H200", 989.5),
    ("H100 NVL", 835.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.5),  # SXM: 'NVIDIA H100 80GB HBM3'
    ("H800", 989.5),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.05),
    ("L40", 181.05),
    ("L4", 121.0),
    ("RTX 4090", 165.2),
)


def bf16_peak_tflops(device_name: str) -> float | None:
    """The GPU's dense bf16 peak, or None when it is not in `BF16_PEAK_TFLOPS`."""
    lowered = device_name.lower()
    for key, peak in BF16_PEAK_TFLOPS:
        if key.lower() in lowered:
            return peak
    return None


# ---------------------------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------------------------
ARC_SHAPE = list(lma_speed.ARC_SHAPE) + ["--halt-max-steps", "16"]  # seq 900 + prefix 16, hidden 512, H3/L4, vocab 12
# Dry run: tiny, but with a prefix, several heads and cycles, and a valid LMA layout (L = 32, L_new 16).
DRY_RUN_SHAPE = ["--seq-len", "30", "--puzzle-emb-len", "2", "--hidden-size", "32", "--num-heads", "4",
                 "--L-layers", "1", "--H-cycles", "2", "--L-cycles", "2", "--vocab-size", "12",
                 "--num-puzzle-identifiers", "16", "--halt-max-steps", "4"]
VARIANTS = ("plain", "lma")
# Benchmark batch sizes (tried in order until one fits) and timed steps, unless --batch-sizes / --steps say otherwise.
BATCH_SIZES, DRY_RUN_BATCH_SIZES = "256,128,64", "4"
TIMED_STEPS, DRY_RUN_TIMED_STEPS = 10, 2
VARIANT_TITLES = {"plain": "plain TRM", "lma": "TRM + LMA"}


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


# ---------------------------------------------------------------------------------------------
# Workers (each runs in its own subprocess and ends with one RESULT_MARK line)
# ---------------------------------------------------------------------------------------------
def emit(status: str, summary: str, **figures) -> None:
    print(RESULT_MARK + json.dumps({"status": status, "summary": summary, **figures}), flush=True)


def progress(message: str) -> None:
    print(message, flush=True)


# -- Adam-atan2 -------------------------------------------------------------------------------
ADAM_SHAPES = [(1536, 512), (512, 1536), (512,), (12, 512), (3, 5, 7)]
ADAM_DRY_RUN_SHAPES = [(64, 32), (32,), (3, 5, 7)]
ADAM_LRS = [1e-2, 5e-3, 0.0, 2e-2, 1e-2, 3e-3] * 2  # changed every step as the schedule does; lr 0 included
ADAM_BETAS, ADAM_WEIGHT_DECAY = (0.9, 0.95), 0.1
ADAM_RTOL, ADAM_ATOL = 1e-5, 1e-6  # float32: the kernel's FMAs may differ from ours in the last bit
ADAM_INSTALL_HINT = ("pip install adam-atan2 (builds a CUDA extension: needs nvcc and the torch headers; "
                     "README 'Install')")


def compare_adam_atan2(candidate: Callable, device: torch.device, shapes=ADAM_SHAPES, seed: int = 0) -> dict:
    """Run `candidate(params, lr=, betas=, weight_decay=)` and our AdamAtan2 on the same parameters and
    gradients; returns the largest differences (params, exp_avg, exp_avg_sq), state-layout mismatches,
    how far the parameters moved, and whether all agree within ADAM_RTOL/ADAM_ATOL."""
    from models.optimizers import AdamAtan2

    generator = torch.Generator().manual_seed(seed)
    params0 = [torch.randn(shape, generator=generator) for shape in shapes]
    grads = [[torch.randn(shape, generator=generator) * 10.0 ** (step % 3 - 1) for shape in shapes]
             for step in range(len(ADAM_LRS))]

    def run(make):
        params = [torch.nn.Parameter(p.to(device, copy=True)) for p in params0]  # never params0's storage
        optimizer = make(params, lr=ADAM_LRS[0], betas=ADAM_BETAS, weight_decay=ADAM_WEIGHT_DECAY)
        for step_grads, lr in zip(grads, ADAM_LRS):
            for p, g in zip(params, step_grads):
                p.grad = g.to(device)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return params, optimizer

    ours, ours_opt = run(AdamAtan2)
    theirs, theirs_opt = run(candidate)
    worst = {"param": 0.0, "exp_avg": 0.0, "exp_avg_sq": 0.0}
    within = True
    layout = []
    for index, (a, b) in enumerate(zip(theirs, ours)):
        pairs = [("param", a.detach(), b.detach())]
        state_a, state_b = theirs_opt.state[a], ours_opt.state[b]
        if set(state_a) != set(state_b):
            layout.append(f"param {index}: state keys {sorted(state_a)} vs ours {sorted(state_b)}")
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state_a and key in state_b:
                pairs.append((key, state_a[key], state_b[key]))
        step_a, step_b = state_a.get("step"), state_b.get("step")
        if isinstance(step_a, torch.Tensor) and isinstance(step_b, torch.Tensor):
            if (step_a.dtype, step_a.shape, step_a.device) != (step_b.dtype, step_b.shape, step_b.device):
                layout.append(f"param {index}: step {step_a.dtype}{list(step_a.shape)} on {step_a.device} vs ours "
                              f"{step_b.dtype}{list(step_b.shape)} on {step_b.device}")
            elif float(step_a) != float(step_b):
                layout.append(f"param {index}: step {float(step_a)} vs ours {float(step_b)}")
        elif type(step_a) is not type(step_b):
            layout.append(f"param {index}: step is {type(step_a).__name__} vs ours {type(step_b).__name__}")
        for key, x, y in pairs:
            diff = (x.double() - y.double()).abs()
            worst[key] = max(worst[key], float(diff.max()))
            within &= bool((diff <= ADAM_ATOL + ADAM_RTOL * y.double().abs()).all())
    moved = max(float((p.detach().cpu() - p0).abs().max()) for p, p0 in zip(ours, params0))
    return {"max_abs_diff": worst, "layout_mismatches": layout, "max_param_change": moved,
            "within_tolerance": within, "steps": len(ADAM_LRS), "tensors": len(shapes)}


def adam_verdict(figures: dict) -> tuple[bool, str]:
    """(agrees, one line) for a `compare_adam_atan2` result."""
    diffs = figures["max_abs_diff"]
    text = (f"{figures['steps']} steps on {figures['tensors']} tensors: max |diff| param {diffs['param']:.1e}, "
            f"exp_avg {diffs['exp_avg']:.1e}, exp_avg_sq {diffs['exp_avg_sq']:.1e} (tolerance {ADAM_ATOL:g} + "
            f"{ADAM_RTOL:g}*|ours|; params moved up to {figures['max_param_change']:.2e})")
    problems = []
    if not figures["within_tolerance"]:
        problems.append("outside the tolerance")
    if figures["layout_mismatches"]:
        problems.append("state layout differs (checkpoints not interchangeable): "
                        + "; ".join(figures["layout_mismatches"][:3]))
    if figures["max_param_change"] < 1e-3:
        problems.append("parameters barely moved: the comparison proves nothing")
    return not problems, "; ".join(problems + [text])


def adam_worker(dry_run: bool) -> int:
    from models.optimizers import AdamAtan2

    installed = importlib.util.find_spec("adam_atan2") is not None
    try:
        from adam_atan2 import AdamATan2 as fused  # the optional CUDA package
        missing = None
    except ImportError as err:  # not installed, or installed with a CUDA extension that does not load
        fused, missing = None, str(err).splitlines()[0]
    if dry_run:
        # Our per-tensor loop stands in for the fused kernel: the comparison itself runs, on the CPU.
        figures = compare_adam_atan2(lambda params, **kw: AdamAtan2(params, foreach=False, **kw), torch.device("cpu"),
                                     shapes=ADAM_DRY_RUN_SHAPES)
        ok, text = adam_verdict(figures)
        package = "adam_atan2 importable" if fused is not None else f"adam_atan2 not importable ({missing})"
        emit("skip" if ok else "fail", f"dry run (our loop path standing in for the kernel, CPU): {text}; {package}",
             **figures)
        return 0
    if fused is None and installed:
        emit("fail", f"adam_atan2 is installed but does not import ({missing}); the trainer silently falls back to "
                     f"ours: rebuild it for this torch and CUDA ({ADAM_INSTALL_HINT})")
        return 0
    if fused is None:
        emit("skip", f"adam_atan2 is not installed ({missing}): {ADAM_INSTALL_HINT}")
        return 0
    figures = compare_adam_atan2(fused, torch.device("cuda"))
    ok, text = adam_verdict(figures)
    emit("pass" if ok else "fail", text, **figures)
    return 0


# -- NCCL -------------------------------------------------------------------------------------
def nccl_worker(dry_run: bool) -> int:
    """Under torchrun: the trainer's set-up, then a one-rank group (NCCL on CUDA, gloo in the dry run)."""
    import datetime

    import torch.distributed as dist

    from utils.distributed import destroy_distributed, init_distributed

    ctx = init_distributed("cpu" if dry_run else "cuda", timeout_s=60)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    # With one process init_distributed stays out of torch.distributed (the trainer needs no group then),
    # so join the group here exactly as it does for WORLD_SIZE > 1.
    timeout = datetime.timedelta(seconds=60)
    if ctx.device.type == "cuda":
        torch.cuda.set_device(ctx.device)
        dist.init_process_group(backend="nccl", init_method="env://", rank=ctx.rank, world_size=world_size,
                                device_id=ctx.device, timeout=timeout)
        cpu_group = dist.new_group(backend="gloo", timeout=timeout)
    else:
        dist.init_process_group(backend="gloo", init_method="env://", rank=ctx.rank, world_size=world_size,
                                timeout=timeout)
        cpu_group = dist.group.WORLD
    try:
        backend = str(dist.get_backend())
        start = time.perf_counter()
        values = torch.arange(1 << 20, dtype=torch.float32, device=ctx.device)
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        expected = torch.arange(1 << 20, dtype=torch.float32, device=ctx.device) * world_size
        reduced_ok = bool(torch.equal(values, expected))
        weights = torch.full((4096,), float(ctx.rank + 1), dtype=torch.bfloat16, device=ctx.device)
        dist.broadcast(weights, src=0)
        broadcast_ok = bool((weights == 1).all())
        holder = [{"rank": ctx.rank, "device": str(ctx.device)} if ctx.rank == 0 else None]
        dist.broadcast_object_list(holder, src=0, group=cpu_group)
        objects_ok = holder[0] is not None and holder[0]["rank"] == 0
        dist.barrier(group=cpu_group)
        if ctx.device.type == "cuda":
            torch.cuda.synchronize(ctx.device)
        seconds = time.perf_counter() - start
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        destroy_distributed(ctx)
    ok = reduced_ok and broadcast_ok and objects_ok and ctx.world_size == 1
    wanted = "gloo" if dry_run else "nccl"
    text = (f"backend {backend}, world size {world_size}, device {ctx.device}: all_reduce of 4 MiB "
            f"{'ok' if reduced_ok else 'WRONG'}, broadcast {'ok' if broadcast_ok else 'WRONG'}, object broadcast "
            f"over gloo {'ok' if objects_ok else 'WRONG'} ({seconds * 1e3:.0f} ms with set-up)")
    if backend != wanted:
        ok, text = False, f"expected backend {wanted}; {text}"
    emit(("skip" if dry_run else "pass") if ok else "fail", ("dry run (gloo on the CPU): " if dry_run else "") + text,
         backend=backend, world_size=world_size, seconds=seconds)
    return 0


# -- training-step benchmark ------------------------------------------------------------------
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
        results["lma_settings"] = lma_speed.describe_layout(TRMConfig(**config).lma_layout, config["lma_mode"],
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


# ---------------------------------------------------------------------------------------------
# The check: steps in subprocesses, one time budget
# ---------------------------------------------------------------------------------------------
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


def worker_result(lines: list[str]) -> dict | None:
    for line in reversed(lines):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
    return None


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
        return [sys.executable, "-m", "benchmarks.gpu_check", "--worker", worker, *extra] + (
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
               "-m", "benchmarks.gpu_check", "--worker", "nccl"] + (["--dry-run"] if self.dry_run else [])
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


def parse_batches(text: str) -> list[int]:
    batches = [int(b) for b in text.split(",") if b.strip()]
    if not batches or min(batches) < 1:
        raise ValueError(f"--batch-sizes needs positive integers, got {text!r}")
    return batches


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
