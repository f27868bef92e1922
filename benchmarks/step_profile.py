"""`benchmarks/train_step.py --profile`: where a training step's time goes, by group of operators.

The step runs under torch.profiler with ranges the benchmark marks (the model code is left as it is):
`data` (making the batch), `loss head` (one ACT step of the loss head; a forward hook marks the model inside
it, so the loss head's own operators are the loss: cross-entropy, Q losses, metrics) and `optimizer` (every
optimizer's step and zero_grad). Each operator's self time goes to one group:

- data, optimizer: the operators inside those ranges;
- loss: the loss head's own operators, and in backward the operators of their gradient nodes (matched by the
  autograd sequence number the forward operator recorded);
- matmul, elementwise: the other operators by name (MATMUL, ELEMENTWISE);
- other: everything else (reductions, indexing, views, autograd bookkeeping, the model's Python between
  operators).
"""
import re
import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Callable

from torch import nn
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function, schedule

DATA_RANGE, LOSS_RANGE, MODEL_RANGE, OPTIMIZER_RANGE = "step: data", "step: loss head", "step: model", \
    "step: optimizer"
RANGE_GROUPS = {DATA_RANGE: "data", LOSS_RANGE: "loss", OPTIMIZER_RANGE: "optimizer", MODEL_RANGE: None}
GROUPS = ("matmul", "elementwise", "loss", "optimizer", "data", "other")
BACKWARD_NODE = "autograd::engine::evaluate_function: "
TOP_OPS = 10

# Operator names, without namespace, leading "_", in-place "_" and "_backward" (so "aten::silu_backward" is silu).
MATMUL = re.compile(r"(mm|addmm|bmm|baddbmm|addbmm|mv|addmv|dot|matmul|linear|einsum|conv\w*)"
                    r"|.*(scaled_dot_product|flash_attention|efficient_attention|mkldnn|onednn|gemm|linear_pointwise).*")
ELEMENTWISE = frozenset((
    "add", "sub", "rsub", "mul", "div", "neg", "reciprocal", "abs", "sign", "pow", "sqrt", "rsqrt", "exp", "log",
    "log1p", "square", "silu", "sigmoid", "tanh", "relu", "gelu", "threshold", "erf", "sin", "cos", "atan2", "lerp",
    "addcmul", "addcdiv", "clamp", "clamp_min", "clamp_max", "maximum", "minimum", "where", "masked_fill", "cat",
    "stack", "copy", "to", "to_copy", "fill", "zero", "ones_like", "zeros_like", "eq", "ne", "lt", "le", "gt", "ge",
    "logical_and", "logical_or", "logical_not", "bitwise_and", "bitwise_or", "bitwise_not"))


def base_name(name: str) -> str:
    """'aten::silu_backward' -> 'silu', 'aten::_to_copy' -> 'to_copy', 'aten::add_' -> 'add'."""
    name = name.rsplit("::", 1)[-1].strip("_")
    return name.removesuffix("_backward")


def group_by_name(name: str) -> str:
    base = base_name(name)
    if MATMUL.fullmatch(base):
        return "matmul"
    if base in ELEMENTWISE or base.startswith("foreach_"):
        return "elementwise"
    return "other"


@contextmanager
def marked_forward(module: nn.Module, label: str = MODEL_RANGE):
    """A profiler range around each forward of `module`, opened and closed by hooks on it."""
    opened = []

    def enter(_module, _args):
        opened.append(record_function(label))
        opened[-1].__enter__()

    def leave(_module, _args, _output):
        opened.pop().__exit__(None, None, None)

    handles = [module.register_forward_pre_hook(enter), module.register_forward_hook(leave, always_call=True)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def enclosing_range(event, loss_nodes: set) -> str | None:
    """The nearest marked range around (or at) `event`; a backward node of a loss operator counts as the loss."""
    while event is not None:
        if event.name in RANGE_GROUPS:
            return event.name
        if event.name.startswith(BACKWARD_NODE) and (event.fwd_thread, event.sequence_nr) in loss_nodes:
            return LOSS_RANGE
        event = event.cpu_parent
    return None


def group_of(event, loss_nodes: set) -> str:
    marked = enclosing_range(event, loss_nodes)
    group = RANGE_GROUPS.get(marked)
    if group is not None:
        return group
    return "other" if event.name == MODEL_RANGE else group_by_name(event.name)


def shown_name(name: str) -> str:
    if name in RANGE_GROUPS or name.startswith("ProfilerStep"):
        return f"{name.rstrip('*')} (outside operators)"
    return f"backward node {name.removeprefix(BACKWARD_NODE)}" if name.startswith(BACKWARD_NODE) else name


def group_events(events, steps: int) -> dict:
    """Self CPU (and device) milliseconds per step of each group and of the top operators."""
    cpu_events = [e for e in events if e.device_type == DeviceType.CPU]
    loss_nodes = {(e.thread, e.sequence_nr) for e in cpu_events
                  if e.sequence_nr >= 0 and enclosing_range(e, set()) == LOSS_RANGE}
    groups = {name: [0.0, 0.0] for name in GROUPS}  # group -> [self CPU us, self device us]
    ops = defaultdict(lambda: [0, 0.0, 0.0])  # (name, group) -> [calls, self CPU us, self device us]
    for event in cpu_events:
        group = group_of(event, loss_nodes)
        device_us = event.self_device_time_total  # its kernels' time (0 on a CPU)
        groups[group][0] += event.self_cpu_time_total
        groups[group][1] += device_us
        op = ops[(shown_name(event.name), group)]
        op[0] += 1
        op[1] += event.self_cpu_time_total
        op[2] += device_us
    total = sum(cpu for cpu, _ in groups.values()) or 1.0
    per_step = 1e-3 / steps  # microseconds in all steps -> milliseconds per step
    top = sorted(ops.items(), key=lambda item: -item[1][1])[:TOP_OPS]
    return {
        "groups": {name: {"cpu_ms": cpu * per_step, "share": cpu / total, "device_ms": device * per_step}
                   for name, (cpu, device) in groups.items()},
        "top": [{"name": name, "group": group, "calls": calls / steps, "cpu_ms": cpu * per_step,
                 "share": cpu / total, "device_ms": device * per_step}
                for (name, group), (calls, cpu, device) in top],
    }


def profile_steps(step: Callable[[], None], model: nn.Module, steps: int, cuda: bool) -> dict:
    """Run `step` `steps` times under torch.profiler (CUDA activity too when `cuda`), `model`'s forwards marked."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    # One step before the recorded ones takes the profiler's start-up cost, which would land in the first range.
    plan = schedule(wait=0, warmup=1, active=steps, repeat=1)
    with marked_forward(model), profile(activities=activities, schedule=plan) as prof:
        step()
        prof.step()
        start = time.perf_counter()
        for _ in range(steps):
            step()
            prof.step()
        wall = time.perf_counter() - start
    summary = group_events(prof.events(), steps)
    summary.update(steps=steps, wall_ms=wall * 1e3 / steps, device_time=cuda)
    return summary


def print_profile(summary: dict, title: str) -> None:
    device = summary["device_time"]
    print(f"profile of {title}: {summary['steps']} step(s) under torch.profiler, {summary['wall_ms']:.1f} ms/step "
          f"wall (with the profiler's overhead)")
    extra = f" {'device ms':>10}" if device else ""
    print(f"  {'group':<12} {'self CPU ms/step':>16} {'share':>7}{extra}")
    for name, group in summary["groups"].items():
        extra = f" {group['device_ms']:>10.2f}" if device else ""
        print(f"  {name:<12} {group['cpu_ms']:>16.2f} {group['share']:>7.1%}{extra}")
    print(f"  top {len(summary['top'])} operators by self CPU time:")
    extra = f" {'device ms':>10}" if device else ""
    print(f"  {'operator':<48} {'group':<12} {'calls/step':>10} {'ms/step':>8} {'share':>7}{extra}")
    for op in summary["top"]:
        extra = f" {op['device_ms']:>10.2f}" if device else ""
        print(f"  {op['name'][:48]:<48} {op['group']:<12} {op['calls']:>10.1f} {op['cpu_ms']:>8.2f} "
              f"{op['share']:>7.1%}{extra}")
