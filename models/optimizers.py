"""Adam-atan2: Adam whose update is atan2(m, sqrt(v)) instead of m / (sqrt(v) + eps).

The published training uses the fused CUDA kernel of the optional `adam-atan2` package. That
package needs a CUDA toolchain to build, so `AdamAtan2` re-states the kernel's per-element math
with plain torch ops (vectorised with `torch._foreach_*`), which runs on any device.
`build_adam_atan2` picks the fused kernel when it can and this class otherwise.

Per element, with t the per-parameter step count starting at 1 (docs/training.md):

    p *= 1 - lr*wd
    m  = lerp(m, g, 1 - b1)
    v  = lerp(v, g*g, 1 - b2)
    p -= (lr / (1 - b1^t)) * atan2(m, sqrt(v) / sqrt(1 - b2^t))

As in the kernel, the per-step scalars (bias corrections, step size, decay factor) are computed in
float64 and only then rounded to the compute dtype of the tensors. The kernel builds lerp and the final
subtraction from FMAs, so on float32 results may differ from it in the last bit; no eps exists, so
the result never depends on an eps choice. Half/bfloat16 tensors are computed in float32 and
rounded once on store, as the kernel does.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterable, Optional

import torch

from utils.device import all_on_cuda

# Every foreach op the vectorised path needs; old builds or exotic backends may lack some.
_FOREACH_OPS = ("_foreach_add_", "_foreach_mul_", "_foreach_mul", "_foreach_lerp_", "_foreach_sqrt", "_foreach_div_",
                "_foreach_sub_")


def _foreach_available() -> bool:
    return all(hasattr(torch, name) for name in _FOREACH_OPS)


def _validate_hparams(lr: float, betas: tuple[float, float], weight_decay: float) -> None:
    """Reject values for which the update is meaningless (negative lr, beta=1 divides by zero)."""
    if not lr >= 0.0:  # written this way so NaN is rejected too
        raise ValueError(f"Invalid learning rate: {lr} (must be >= 0)")
    if len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    for index, beta in enumerate(betas):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"Invalid beta{index + 1}: {beta} (must be in [0, 1))")
    if not weight_decay >= 0.0:
        raise ValueError(f"Invalid weight_decay: {weight_decay} (must be >= 0)")


class AdamAtan2(torch.optim.Optimizer):
    """Device-agnostic Adam-atan2 with the fused kernel's math and state layout.

    State per parameter: `step` (0-d float32 tensor on the parameter's device, as the fused
    kernel keeps it, so checkpoints of either optimizer have the same layout), `exp_avg`,
    `exp_avg_sq` (same shape/dtype as the parameter).
    `foreach=None` uses the vectorised path whenever torch provides the ops; `False` forces the
    per-tensor loop (both give identical results on CPU).
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 1e-2, *, foreach: Optional[bool] = None):
        _validate_hparams(lr, tuple(betas), weight_decay)
        defaults = dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay, foreach=foreach)
        super().__init__(params, defaults)

    def _init_group(self, group: dict) -> tuple[list, list, list, list, list]:
        """Collect the params that have a gradient, creating their state on first use."""
        params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("AdamAtan2 does not support sparse gradients")
            if torch.is_complex(p):
                raise RuntimeError("AdamAtan2 does not support complex parameters")
            state = self.state[p]
            if len(state) == 0:
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                self.__dict__.setdefault("_host_steps", {})[id(state["step"])] = (state["step"], 0.0)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            elif state["step"].device != p.device:
                # A checkpoint loaded with map_location="cpu" leaves `step` on the CPU; foreach
                # ops need every list of a device group on that device.
                state["step"] = state["step"].to(device=p.device, dtype=torch.float32)
            params.append(p)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        return params, grads, exp_avgs, exp_avg_sqs, steps

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            tensors = self._init_group(group)
            if not tensors[0]:
                continue
            use_foreach = group.get("foreach")
            if use_foreach is None:
                use_foreach = _foreach_available()
            beta1, beta2 = group["betas"]
            update = _multi_tensor_adam_atan2 if use_foreach else _single_tensor_adam_atan2
            update(*tensors, self._next_host_steps(tensors[4]), lr=group["lr"], beta1=beta1, beta2=beta2,
                   weight_decay=group["weight_decay"])
        return loss

    def _next_host_steps(self, steps: list[torch.Tensor]) -> list[float]:
        """The step counts after this step, as Python numbers for the host-side scalars (as the kernel computes
        them). A mirror of each `step` tensor is kept on the host, so only the first step after the state was
        created or loaded reads them from the device (one transfer); later steps need no sync."""
        mirror = self.__dict__.setdefault("_host_steps", {})
        unknown = [s for s in steps if mirror.get(id(s), (None,))[0] is not s]
        if unknown:
            for s, value in zip(unknown, torch.stack([s.float() for s in unknown]).tolist()):
                mirror[id(s)] = (s, value)
        values = []
        for s in steps:
            value = mirror[id(s)][1] + 1.0
            mirror[id(s)] = (s, value)
            values.append(value)
        return values


def _step_scalars(step: float, lr: float, beta1: float, beta2: float) -> tuple[float, float]:
    """(step_size, sqrt of bias correction 2) in float64, as the kernel computes them on the host side."""
    bias_correction1 = 1.0 - beta1 ** step
    bias_correction2 = 1.0 - beta2 ** step
    return lr / bias_correction1, math.sqrt(bias_correction2)


# The kernel loads half/bfloat16 values into float32 ("opmath"), does all the math there and rounds
# once on store; computing in the storage dtype would round after every op (and CPU in-place
# foreach ops with a scalar even round the scalar to that dtype first).
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _in_compute_dtype(tensors: list) -> list:
    """float32 copies of low-precision tensors (written back later), the tensors themselves otherwise."""
    return [t.float() if t.dtype in _LOW_PRECISION else t for t in tensors]


def _write_back(targets: list, computed: list) -> None:
    for target, value in zip(targets, computed):
        if value is not target:
            target.copy_(value)


def _single_tensor_adam_atan2(params, grads, exp_avgs, exp_avg_sqs, steps, step_values, *, lr, beta1, beta2,
                              weight_decay) -> None:
    """Per-tensor path (no foreach ops); the same op sequence as the foreach path. `step_values`: the steps
    after this one, on the host."""
    wd_alpha = 1.0 - lr * weight_decay
    for tensors, step, step_value in zip(zip(params, grads, exp_avgs, exp_avg_sqs), steps, step_values):
        p, g, m, v = _in_compute_dtype(list(tensors))
        step.add_(1)
        step_size, bc2_sqrt = _step_scalars(step_value, lr, beta1, beta2)
        p.mul_(wd_alpha)
        m.lerp_(g, 1.0 - beta1)
        v.lerp_(g * g, 1.0 - beta2)
        denom = v.sqrt().div_(bc2_sqrt)
        p.sub_(torch.atan2(m, denom, out=denom).mul_(step_size))
        _write_back([tensors[0], tensors[2], tensors[3]], [p, m, v])


def _group_by_device_and_dtype(*tensor_lists: list) -> dict:
    """Split parallel lists into sub-lists whose params share device and dtype (a foreach requirement)."""
    groups: dict = defaultdict(lambda: tuple([] for _ in tensor_lists))
    for items in zip(*tensor_lists):
        key = (items[0].device, items[0].dtype)
        for bucket, item in zip(groups[key], items):
            bucket.append(item)
    return groups


def _multi_tensor_adam_atan2(params, grads, exp_avgs, exp_avg_sqs, steps, step_values, *, lr, beta1, beta2,
                             weight_decay) -> None:
    """Vectorised path: foreach ops per device/dtype group; atan2 has no foreach op, so it loops."""
    wd_alpha = 1.0 - lr * weight_decay
    groups = _group_by_device_and_dtype(params, grads, exp_avgs, exp_avg_sqs, steps, step_values)
    for d_params, d_grads, d_exp_avgs, d_exp_avg_sqs, d_steps, d_step_values in groups.values():
        torch._foreach_add_(d_steps, 1.0)
        scalars = [_step_scalars(s, lr, beta1, beta2) for s in d_step_values]
        step_sizes = [s[0] for s in scalars]
        bc2_sqrts = [s[1] for s in scalars]

        c_params, c_grads, c_exp_avgs, c_exp_avg_sqs = (
            _in_compute_dtype(ts) for ts in (d_params, d_grads, d_exp_avgs, d_exp_avg_sqs))
        torch._foreach_mul_(c_params, wd_alpha)
        torch._foreach_lerp_(c_exp_avgs, c_grads, 1.0 - beta1)
        torch._foreach_lerp_(c_exp_avg_sqs, torch._foreach_mul(c_grads, c_grads), 1.0 - beta2)
        denoms = torch._foreach_sqrt(c_exp_avg_sqs)
        torch._foreach_div_(denoms, bc2_sqrts)
        for m, denom in zip(c_exp_avgs, denoms):
            torch.atan2(m, denom, out=denom)
        torch._foreach_mul_(denoms, step_sizes)
        torch._foreach_sub_(c_params, denoms)
        for targets, computed in ((d_params, c_params), (d_exp_avgs, c_exp_avgs), (d_exp_avg_sqs, c_exp_avg_sqs)):
            _write_back(targets, computed)


def _materialize(params: Iterable) -> list:
    """`params` as a list, each param-group dict's params a list too: the device check must not
    exhaust generators the optimizer reads afterwards."""
    materialized = []
    for item in params:
        if isinstance(item, dict):
            group_params = item["params"]
            item = {**item, "params": [group_params] if isinstance(group_params, torch.Tensor) else list(group_params)}
        materialized.append(item)
    return materialized


def _flatten_params(params: list) -> list:
    """All tensors of a materialized param list (plain tensors or param-group dicts)."""
    return [p for item in params for p in (item["params"] if isinstance(item, dict) else [item])]


def _import_fused_adam_atan2():
    """The fused optimizer class, or None when the optional CUDA package is not installed/built."""
    try:
        from adam_atan2 import AdamATan2  # optional dependency, needs a CUDA toolchain to build
    except ImportError:
        return None
    return AdamATan2


def build_adam_atan2(params, lr: float, betas: tuple[float, float], weight_decay: float) -> torch.optim.Optimizer:
    """Fused `adam_atan2.AdamATan2` when importable and every param is on CUDA, else `AdamAtan2`."""
    params = _materialize(params)
    fused_cls = _import_fused_adam_atan2()
    if fused_cls is not None and all_on_cuda(_flatten_params(params)):
        return fused_cls(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    return AdamAtan2(params, lr=lr, betas=betas, weight_decay=weight_decay)
