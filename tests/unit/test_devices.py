"""Device placement, checked on the CPU: no tensor is created on an implicit device; and choosing a device.

A stray CPU tensor only fails on a GPU, so the tests run the model on a device that is not the CPU:

- a *simulated accelerator*: every tensor on it reports device `lazy:0` but holds CPU data, so real values flow
  and the whole trainer runs (`train_batch` with its host reads, `evaluate` with its `all_finish` loop, the
  sparse puzzle-embedding optimizer's `unique`, checkpoint save and resume). An op mixing its tensors with CPU
  tensors fails as on CUDA (a CPU 0-dim tensor passes there as on CUDA, indices may be CPU tensors as on
  CUDA), and, stricter than CUDA, every tensor made from nothing on the CPU during a watched call (a factory
  such as `torch.zeros(3)` or `torch.tensor(1.0)` without `device=`) is reported, so a stray that CUDA would
  silently accept (a 0-dim one, or one only stored in the carry) is caught too. The `lazy` device type is used
  only because it is the one non-CPU type whose autograd works in a CPU-only PyTorch; its real backend never
  runs (an op that escaped the simulation would fail with "Could not run ... 'Lazy' backend").
- the `meta` device: PyTorch's own check ("Tensor on device cpu is not on the expected device meta"), for the
  model's forward and backward. Meta tensors hold no values, so the trainer's host reads, `all_finish` and the
  checkpoint round-trip (loading into meta parameters is a no-op) cannot run there: that is what the
  simulated device is for.

`test_a_stray_cpu_tensor_is_caught` breaks the model code in three ways and checks that each is reported. Every
architecture on both devices, and bfloat16 training: tests/integration/test_devices.py.
"""
import contextlib
import copy
import dataclasses
import math
import os
import traceback

import pytest
import torch
import torch.utils._pytree as pytree
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from models.recursive_reasoning.common import ACTModel, RecursiveInner
from models.weights import build_model, load_weights
from rundir.layout import weights_path
from rundir.states import safe_load
from tests.helpers import REPO_ROOT, compose_config, cpu_context
from training import loop
from training.checkpointing import restore_training_state, save_checkpoint, save_weights
from training.config import parse_config
from training.data import create_dataloader, split_paths
from training.evaluation import evaluate
from training.state import evaluation_model, init_train_state, update_ema
from utils.device import select_device, should_compile, wide_float_dtype
from utils.distributed import DistContext
from utils.random_state import seed_everything

# Tiny versions of every architecture (README "Ablations and baselines", "Latent Meta Attention").
TINY = ["arch.hidden_size=32", "arch.num_heads=2", "arch.expansion=2", "arch.halt_max_steps=2"]
TRM_TINY = ["arch.L_layers=1", "arch.H_cycles=2", "arch.L_cycles=2", "arch.puzzle_emb_len=1"]
ARCHS = {
    "trm": ["arch=trm", *TRM_TINY],
    "trm_mlp_t": ["arch=trm", *TRM_TINY, "arch.mlp_t=true"],
    "hrm": ["arch=hrm", "arch.H_layers=1", "arch.L_layers=1", "arch.H_cycles=2", "arch.L_cycles=2"],
    "trm_singlez": ["arch=trm_singlez", *TRM_TINY],
    "trm_hier6": ["arch=trm_hier6", "arch.L_layers=1", "arch.H_cycles=2", "arch.L_cycles=3", "arch.puzzle_emb_len=1"],
    "transformers_baseline": ["arch=transformers_baseline", "arch.H_layers=2"],
    "trm_lma": ["arch=trm", *TRM_TINY, "arch.lma_enable=true"],
}
# For the device checks also the code paths that only some settings take.
DEVICE_ARCHS = {
    **ARCHS,
    "baseline_act_inference": [*ARCHS["transformers_baseline"], "arch.act_inference=true"],  # eval outputs actual_steps
    "trm_lma_learned_act_continue": [*ARCHS["trm_lma"], "arch.pos_encodings=learned", "arch.no_ACT_continue=false"],
}
BATCH = 16


def make_config(data: str, arch: str, *extra: str, archs: dict = ARCHS):
    return parse_config(compose_config([f"data_paths=[{data}]", *TINY, *archs[arch], f"global_batch_size={BATCH}",
                                        "evaluators=[]", "num_workers=0", "wandb_mode=disabled", *extra]))


def train_batches(config, epochs: int) -> tuple[list, object]:
    loader, metadata = create_dataloader(config.data_paths, "train", cpu_context(), seed=config.seed,
                                         global_batch_size=BATCH, epochs_per_iter=epochs, num_workers=0)
    return [(batch, size) for _, batch, size in loader], metadata


def eval_batches(config) -> tuple[list, object]:
    loader, metadata = create_dataloader(split_paths(config, "test"), "test", cpu_context(), seed=config.seed,
                                         global_batch_size=BATCH)
    return list(loader), metadata


@pytest.fixture
def one_thread():
    """bf16 matmuls on a loaded 2-core CPU: one thread is several times faster than two competing ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# A simulated accelerator
# ---------------------------------------------------------------------------------------------
SIM_DEVICE = torch.device("lazy", 0)
CPU = torch.device("cpu")
_TRANSFERS = {torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default}
# On CUDA these take their index tensors from the CPU as well; self and values must be on the device.
_INDEXING = {torch.ops.aten.index.Tensor, torch.ops.aten.index_put_.default, torch.ops.aten.index_put.default,
             torch.ops.aten._index_put_impl_.default}
_DATA_FACTORIES = (torch.tensor, torch.as_tensor, torch.asarray)


class StrayDeviceError(RuntimeError):
    pass


def _where() -> str:
    """The innermost frame of the project's own code (not this file's, not torch's)."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        path = os.path.abspath(frame.filename)
        if path.startswith(REPO_ROOT + os.sep) and os.sep + ".venv" + os.sep not in path and path != __file__:
            return f"{os.path.relpath(path, REPO_ROOT)}:{frame.lineno} in {frame.name}: {frame.line}"
    return "(not in the project's code)"


def _is_sim(device) -> bool:
    return device is not None and torch.device(device).type == SIM_DEVICE.type


class SimTensor(torch.Tensor):
    """A tensor on the simulated accelerator: device `lazy:0`, data in the CPU tensor `elem`."""

    @staticmethod
    def __new__(cls, elem: torch.Tensor):
        assert elem.device == CPU and not isinstance(elem, SimTensor)
        # An inference tensor exactly when the CPU one is (a view of a normal tensor stays normal in inference mode).
        with torch.inference_mode(elem.is_inference()):
            wrapper = torch.Tensor._make_wrapper_subclass(
                cls, elem.size(), strides=elem.stride(), storage_offset=elem.storage_offset(), dtype=elem.dtype,
                layout=elem.layout, device=SIM_DEVICE, requires_grad=elem.requires_grad)
        wrapper.elem = elem
        return wrapper

    def __repr__(self, *, tensor_contents=None):
        return f"SimTensor({self.elem!r}, device='{SIM_DEVICE}')"

    def tolist(self):  # a device-to-host read, as on CUDA
        return self.elem.tolist()

    def __reduce_ex__(self, protocol):  # torch.save: stored as its CPU data
        return self.elem.__reduce_ex__(protocol)

    def __deepcopy__(self, memo):  # a copy on the device (torch's would deep-copy `elem` as a CPU tensor of its own)
        if id(self) not in memo:
            with torch.no_grad():
                copied = self.clone()
            copied.requires_grad_(self.requires_grad)
            for key, value in self.__dict__.items():
                if key != "elem":
                    setattr(copied, key, copy.deepcopy(value, memo))
            memo[id(self)] = copied
        return memo[id(self)]

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return _run(func, args, kwargs or {}, None)


def _run(func, args, kwargs, simulator: "Simulator | None"):
    tensors = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
    on_sim = [t for t in tensors if isinstance(t, SimTensor)]
    checked = tensors
    if func in _INDEXING:
        checked = [t for t in (args[0], *args[2:3]) if isinstance(t, torch.Tensor)]
    cpu = [t for t in checked if not isinstance(t, SimTensor)]
    if func not in _TRANSFERS and on_sim and any(t.dim() > 0 for t in cpu):
        raise StrayDeviceError(f"{func} got tensors on {SIM_DEVICE} and CPU tensors of shapes "
                               f"{[tuple(t.shape) for t in cpu if t.dim() > 0]}, at {_where()}")
    device = kwargs.get("device")
    to_sim = _is_sim(device) if device is not None else bool(on_sim)
    if _is_sim(device):
        kwargs = dict(kwargs, device=CPU)
    cpu_args, cpu_kwargs = pytree.tree_map(lambda t: t.elem if isinstance(t, SimTensor) else t, (args, kwargs))
    out = func(*cpu_args, **cpu_kwargs)
    if func is torch.ops.aten.copy_.default:
        return args[0]  # the destination, on its own device
    same = {id(t.elem): t for t in on_sim}
    made_from_nothing = not tensors or func is torch.ops.aten.lift_fresh.default  # lift_fresh: torch.tensor(data)

    def wrap(t):
        if not isinstance(t, torch.Tensor):
            return t
        if id(t) in same:  # in-place and out= ops return their argument
            return same[id(t)]
        if to_sim:
            return SimTensor(t)
        if simulator is not None and simulator.strays is not None and made_from_nothing:
            simulator.strays.append(f"{func} made a CPU tensor of shape {tuple(t.shape)} at {_where()}")
        return t

    return pytree.tree_map(wrap, out)


class Simulator(TorchDispatchMode):
    """Runs factories for the simulated device on the CPU and records CPU tensors made from nothing when watched."""

    def __init__(self):
        super().__init__()
        self.strays: list[str] | None = None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return _run(func, args, kwargs or {}, self)

    @contextlib.contextmanager
    def watch(self):
        """Collect the CPU tensors made from nothing in the block (a list, filled as they come)."""
        outer, self.strays = self.strays, []
        try:
            yield self.strays
        finally:
            self.strays = outer


class HostData(TorchFunctionMode):
    """What an accelerator does below the dispatcher (where the simulator does not see it): tensors made from Python
    data for the device (`torch.tensor(..., device=)`, list indices of a device tensor) are copied to it."""

    def __init__(self, simulator: Simulator):
        super().__init__()
        self.simulator = simulator

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _DATA_FACTORIES and _is_sim(kwargs.get("device")):
            requires_grad = kwargs.pop("requires_grad", False)
            with self.simulator.watch():  # the host copy of the data is not a stray
                host = func(*args, **dict(kwargs, device=CPU))
            return host.to(SIM_DEVICE).requires_grad_(requires_grad)
        if func in (torch.Tensor.__getitem__, torch.Tensor.__setitem__) and isinstance(args[0], SimTensor):
            args = (args[0], _lists_on_device(args[1], self.simulator), *args[2:])
        return func(*args, **kwargs)


def _lists_on_device(index, simulator: Simulator):
    if isinstance(index, tuple):
        return tuple(_lists_on_device(i, simulator) for i in index)
    if isinstance(index, list):
        with simulator.watch():
            return torch.tensor(index).to(SIM_DEVICE)
    return index


@contextlib.contextmanager
def simulated_accelerator():
    simulator = Simulator()
    with simulator, HostData(simulator):
        yield simulator


def sim_context() -> DistContext:
    return DistContext(rank=0, world_size=1, local_rank=0, device=SIM_DEVICE, cpu_group=None)


def off_device(obj, path: str = "", device: torch.device = SIM_DEVICE) -> list[str]:
    """Paths of the tensors in `obj` (dataclasses, dicts, lists, modules, optimizers) that are not on `device`."""
    if isinstance(obj, torch.Tensor):
        return [] if obj.device == device else [f"{path} on {obj.device}"]
    if isinstance(obj, torch.nn.Module):
        grads = {f"{name}.grad": p.grad for name, p in obj.named_parameters() if p.grad is not None}
        return off_device({**dict(obj.named_parameters()), **dict(obj.named_buffers()), **grads}, path, device)
    if isinstance(obj, torch.optim.Optimizer):
        return off_device(list(obj.state.values()), path + "state", device)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return off_device({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}, path, device)
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in off_device(v, f"{path}.{k}" if path else str(k), device)]
    if isinstance(obj, (list, tuple)):
        return [p for i, v in enumerate(obj) for p in off_device(v, f"{path}[{i}]", device)]
    return []


def state_off_device(state) -> list[str]:
    return (off_device(state.raw_model, "head") + off_device(state.carry, "carry")
            + [p for i, o in enumerate(state.optimizers) for p in off_device(o, f"optimizer{i}.")]
            + off_device(state.first_bad_step, "first_bad_step")
            + (off_device(state.ema.shadow, "ema") if state.ema is not None else []))


def assert_clean(strays: list[str], where: str) -> None:
    assert not strays, f"{where}: tensors made on the CPU from nothing (no device=):\n  " + "\n  ".join(strays)


def test_the_simulator_itself():
    """What the checks below rely on, op by op."""
    with simulated_accelerator() as simulator:
        x = torch.arange(6.0, device=SIM_DEVICE)
        assert type(x) is SimTensor and x.device == SIM_DEVICE
        with simulator.watch() as strays:
            y = (x * 2 + torch.ones_like(x)).sum()  # derived tensors stay on the device
            assert y.device == SIM_DEVICE and y.item() == 36.0 and x[[0, 2]].tolist() == [0.0, 2.0]
            assert x.cpu().device == CPU and torch.zeros(2, device=x.device).device == SIM_DEVICE
            assert (x + 1.5).device == SIM_DEVICE and torch.where(x > 2, 0, x).device == SIM_DEVICE
            assert x[torch.tensor([1], device=SIM_DEVICE)].tolist() == [1.0]
        assert strays == []
        with pytest.raises(StrayDeviceError, match=r"got tensors on lazy:0 and CPU tensors of shapes \[\(6,\)\]"):
            x + torch.zeros(6)  # what CUDA refuses
        with simulator.watch() as strays:
            _ = x * torch.tensor(2.0)  # CUDA accepts a CPU 0-dim tensor; the watch reports it
            _ = torch.zeros(3)
        assert len(strays) == 2 and "lift_fresh" in strays[0] and "aten.zeros" in strays[1], strays
        w = torch.nn.Parameter(torch.randn(3, 2, device=SIM_DEVICE))
        (x[:3] @ w).sum().backward()  # autograd works on the simulated device
        assert w.grad.device == SIM_DEVICE and w.grad.tolist() == [[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]
    with pytest.raises(NotImplementedError, match="Lazy"):  # outside the simulation the device does not exist
        torch.zeros(1, device=SIM_DEVICE)


def run_steps(config, ctx, batches, steps: int, state=None, metadata=None, watch=None) -> tuple[object, list]:
    """`steps` training steps as the trainer takes them (a fresh seeded state unless given); the logged metrics."""
    if state is None:
        seed_everything(config.seed)
        state = init_train_state(config, metadata, ctx)
    logged = []
    for batch, size in batches[:steps]:
        with watch() if watch else contextlib.nullcontext() as strays:
            logged.append(loop.train_batch(config, state, batch, size, ctx))
            update_ema(state)
        if watch:
            assert_clean(strays, f"training step {state.step}")
    return state, logged


def assert_same_metrics(actual: list[dict], expected: list[dict], what: str) -> None:
    """The simulation computes with the CPU kernels; only the op decomposition may differ (round-off)."""
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        assert got.keys() == want.keys(), what
        for key in want:
            assert math.isclose(got[key], want[key], rel_tol=1e-5, abs_tol=1e-6), f"{what}: {key} {got} != {want}"


def run_on_simulated_device(data: str, arch: str, steps: int = 3) -> None:
    """Train, evaluate (both ACT loops) and check every tensor of the state on the simulated device."""
    config = make_config(data, arch, "arch.forward_dtype=float32", "epochs=1", "eval_interval=1", "lr=1e-3",
                         "lr_warmup_steps=1", archs=DEVICE_ARCHS)
    batches, metadata = train_batches(config, 1)
    tests, test_metadata = eval_batches(config)
    ctx = sim_context()
    with simulated_accelerator() as simulator:
        state, logged = run_steps(config, ctx, batches, steps, metadata=metadata, watch=simulator.watch)
        assert state_off_device(state) == []
        assert all(m is not None for m in logged)
        for halt_early in (False, True):
            with simulator.watch() as strays:
                result = evaluate(state.model, tests, test_metadata, [], ctx, state.step, None, halt_early=halt_early)
            assert_clean(strays, f"evaluation (halt_early={halt_early})")
            assert result["all"]["steps"] >= 1
    # The same steps on the CPU give the same numbers: the simulation ran the real computation.
    _, cpu_logged = run_steps(config, cpu_context(), batches, steps, metadata=metadata)
    assert_same_metrics(logged, cpu_logged, arch)


def test_training_evaluation_and_resume_on_a_simulated_accelerator(copy_task, tmp_path, one_thread):
    """A run on the device with EMA: steps, evaluation (of the EMA copy) with saved outputs, checkpoint, resume.

    Checkpoints hold CPU tensors (`safe_load` maps to the CPU, as a GPU run that resumes elsewhere needs): after
    loading, weights, optimizer states and the carry must be back on the model's device.
    """
    config = make_config(copy_task, "trm", "arch.forward_dtype=float32", "epochs=2", "eval_interval=2", "lr=1e-3",
                         "lr_warmup_steps=1", f"+checkpoint_path={tmp_path / 'run'}",
                         "eval_save_outputs=[inputs,preds,q_halt_logits]", "ema=true")
    batches, metadata = train_batches(config, 2)
    tests, test_metadata = eval_batches(config)
    ctx = sim_context()
    with simulated_accelerator() as simulator:
        state, logged = run_steps(config, ctx, batches, 3, metadata=metadata, watch=simulator.watch)
        with simulator.watch() as strays:
            result = evaluate(evaluation_model(state), tests, test_metadata, [], ctx, state.step, str(tmp_path / "run"),
                              save_outputs=config.eval_save_outputs)
        assert_clean(strays, "evaluation")
        saved = safe_load(os.path.join(tmp_path, "run", f"step_{state.step}_all_preds.0"))
        assert set(saved) == {"inputs", "preds", "q_halt_logits"} and saved["preds"].shape == (16, 8)

        state_dir = save_checkpoint(config, state, metadata, ctx)
        save_weights(str(tmp_path / "weights"), state.raw_model, state.step)
        weights = {k: v.cpu().clone() for k, v in state.raw_model.state_dict().items()}
        rng = torch.get_rng_state()  # the simulation draws from the CPU generator; the resumed step draws the same
        _, continued = run_steps(config, ctx, batches[3:], 1, state=state, watch=simulator.watch)

        fresh = init_train_state(config, metadata, ctx)
        restore_training_state(config, fresh, metadata, state_dir, ctx)
        assert off_device(fresh.raw_model) == []
        # torch's Optimizer.load_state_dict moves the moments to the parameters' device but leaves the `step`
        # counts where they were loaded (the CPU); AdamAtan2 moves them at its next step (checked below).
        assert [p for p in off_device(fresh.optimizers, "optimizers") if not p.endswith(".step on cpu")] == []
        torch.set_rng_state(rng)
        _, resumed = run_steps(config, ctx, batches[3:], 1, state=fresh, watch=simulator.watch)
        # The restored carry, optimizer steps and EMA shadow went to the device too.
        assert state_off_device(fresh) == []
        assert_same_metrics(resumed, continued, "resumed step")

        head = build_model(config.arch, metadata, BATCH, ctx.device)
        load_weights(head, safe_load(weights_path(str(tmp_path / "weights"), 3)))
        assert off_device(head) == []
        assert all(torch.equal(v.cpu(), weights[k]) for k, v in head.state_dict().items())
    cpu_state, cpu_logged = run_steps(config, cpu_context(), batches, 3, metadata=metadata)
    assert_same_metrics(logged, cpu_logged, "training")
    cpu_result = evaluate(evaluation_model(cpu_state), tests, test_metadata, [], cpu_context(), 3, None)
    assert_same_metrics([result["all"]], [cpu_result["all"]], "evaluation")


# ---------------------------------------------------------------------------------------------
# The meta device: PyTorch's own device check, forward and backward
# ---------------------------------------------------------------------------------------------
def meta_batch(batch_size: int = 4) -> dict[str, torch.Tensor]:
    return {"inputs": torch.empty(batch_size, 8, dtype=torch.int32, device="meta"),
            "labels": torch.empty(batch_size, 8, dtype=torch.int32, device="meta"),
            "puzzle_identifiers": torch.empty(batch_size, dtype=torch.int32, device="meta")}


def run_on_meta(data: str, arch: str) -> None:
    config = make_config(data, arch, archs=DEVICE_ARCHS)
    _, metadata = train_batches(config, 1)
    head = build_model(config.arch, metadata, 4, torch.device("meta"))
    assert off_device(head, device=torch.device("meta")) == []
    batch = meta_batch()
    head.train()
    carry = head.initial_carry(batch)
    for _ in range(2):
        carry, loss, metrics, outputs, all_halted = head(carry=carry, batch=batch, return_keys=["logits"])
        loss.backward()
    assert off_device([carry, metrics, outputs, all_halted, head], device=torch.device("meta")) == []
    head.eval()
    with torch.inference_mode():
        carry = head.initial_carry(batch)
        for _ in range(config.arch.model_keys["halt_max_steps"]):  # all_finish needs values: a fixed count
            carry, loss, metrics, outputs, _ = head(carry=carry, batch=batch, return_keys=["logits", "preds"])
    assert off_device([carry, loss, metrics, outputs], device=torch.device("meta")) == []


# ---------------------------------------------------------------------------------------------
# The checks fail when a stray CPU tensor is introduced
# ---------------------------------------------------------------------------------------------
def _carry_on_the_default_device(monkeypatch):
    """`empty_carry` ignoring its device: the carries are made on the CPU."""
    original = RecursiveInner.empty_carry
    monkeypatch.setattr(RecursiveInner, "empty_carry", lambda self, batch_size, device=None: original(self, batch_size))


def _exploration_on_the_default_device(monkeypatch):
    """The exploration minimum drawn with `torch.randint(..., shape)`: a CPU tensor of shape (B,)."""
    monkeypatch.setattr(ACTModel, "_min_halt_steps", lambda self, q_halt_logits, steps: (
        (torch.rand(steps.shape) < self.config.halt_exploration_prob)
        * torch.randint(2, self.config.halt_max_steps + 1, steps.shape)))


def _zero_dim_cpu_tensor(monkeypatch):
    """A CPU 0-dim tensor next to device tensors: CUDA (and meta) accept it silently; the watch reports it."""
    original = RecursiveInner.forward

    def forward(self, carry, batch):
        carry, logits, q_logits = original(self, carry, batch)
        return carry, logits * torch.tensor(1.0, dtype=logits.dtype), q_logits
    monkeypatch.setattr(RecursiveInner, "forward", forward)


@pytest.mark.parametrize("breakage, simulated, meta", [
    (_carry_on_the_default_device, r"aten.where.self got tensors on lazy:0 and CPU tensors of shapes "
     r"\[\(16, 9, 32\)\], at models/recursive_reasoning/common.py:\d+ in <lambda>: return map_carry",
     "is not on the expected device meta"),
    (_exploration_on_the_default_device, r"got tensors on lazy:0 and CPU tensors of shapes \[\(16,\)\]",
     "is not on the expected device meta"),
    (_zero_dim_cpu_tensor, r"lift_fresh.default made a CPU tensor of shape \(\) at .*common.py", None),
], ids=["carry", "exploration", "zero_dim"])
def test_a_stray_cpu_tensor_is_caught(breakage, simulated, meta, monkeypatch, copy_task):
    breakage(monkeypatch)
    with pytest.raises((StrayDeviceError, AssertionError), match=simulated) as caught:
        run_on_simulated_device(copy_task, "trm", steps=1)
    print(caught.value)
    if meta is not None:  # (meta, like CUDA, accepts a CPU 0-dim tensor: that stray only the watch reports)
        with pytest.raises(RuntimeError, match=meta):
            run_on_meta(copy_task, "trm")


# ---------------------------------------------------------------------------------------------
# Choosing a device (utils/device.py)
# ---------------------------------------------------------------------------------------------
NO_CUDA = not torch.cuda.is_available()


@pytest.mark.skipif(not NO_CUDA or torch.backends.mps.is_available(), reason="expects a CPU-only machine")
@pytest.mark.parametrize("request_", [None, "auto", "cpu"])
def test_select_device_cpu_only(request_):
    assert select_device(request_) == torch.device("cpu")


@pytest.mark.skipif(not NO_CUDA, reason="CUDA is available here")
@pytest.mark.parametrize("request_", ["cuda", "cuda:1"])
def test_select_device_rejects_missing_cuda(request_):
    with pytest.raises(ValueError, match=r"CUDA is not available; available: \['cpu'"):
        select_device(request_)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="MPS is available here")
def test_select_device_rejects_missing_mps():
    with pytest.raises(ValueError, match="MPS is not available"):
        select_device("mps")


@pytest.mark.parametrize("request_", ["tpu", "not-a-device"])
def test_select_device_rejects_unknown(request_):
    with pytest.raises(ValueError, match=f"{request_!r}"):
        select_device(request_)


def test_select_device_with_faked_cuda(monkeypatch):
    """The CUDA branches, checked without a GPU: only availability and count are consulted."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert select_device(None, local_rank=1) == torch.device("cuda", 1)
    assert select_device("auto") == torch.device("cuda", 0)
    assert select_device("cuda", local_rank=1) == torch.device("cuda", 1)
    assert select_device("cuda:0", local_rank=1) == torch.device("cuda", 0)
    assert select_device("cpu", local_rank=1) == torch.device("cpu")
    with pytest.raises(ValueError, match=r"only 2 CUDA device\(s\) exist; available: \['cpu', 'cuda:0', 'cuda:1'"):
        select_device("cuda:2")
    with pytest.raises(ValueError, match="only 2 CUDA"):
        select_device(None, local_rank=2)


def test_wide_float_dtype():
    assert wide_float_dtype(torch.device("cpu")) is torch.float64
    assert wide_float_dtype(torch.device("cuda", 0)) is torch.float64
    assert wide_float_dtype(torch.device("mps")) is torch.float32


def test_should_compile_defaults_and_flag(monkeypatch):
    monkeypatch.delenv("DISABLE_COMPILE", raising=False)
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert should_compile(cuda, None) is True
    assert should_compile(cpu, None) is False
    assert should_compile(torch.device("mps"), None) is False
    assert should_compile(cpu, True) is True
    assert should_compile(cuda, False) is False


@pytest.mark.parametrize("value", ["1", "0", ""])
def test_should_compile_env_disables_everything(monkeypatch, value):
    monkeypatch.setenv("DISABLE_COMPILE", value)
    cuda = torch.device("cuda", 0)
    assert should_compile(cuda, None) is False
    assert should_compile(cuda, True) is False
