"""The `adam` worker: the fused Adam-atan2 kernel (the optional `adam_atan2` package) against
`models.optimizers.AdamAtan2`, the same parameters and gradients for several steps."""
import importlib.util
from typing import Callable

import torch

from benchmarks.gpu.protocol import emit

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
