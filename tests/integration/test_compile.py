"""torch.compile on CPU (inductor): the ACT step has no graph breaks, and `compile=true` trains and evaluates
TRM and TRM+LMA as eager does, within float32 round-off.

`compile: null` compiles on CUDA only (README "CPU and Apple MPS"); an explicit `compile=true` is honoured on
CPU too (`utils.device.should_compile`), so these tests run the real inductor path on a CI CPU.

Compile time dominates here (a cold inductor cache compiles every kernel with g++), so the models are tiny,
training runs STEPS steps and one compiled state serves both the training and the evaluation comparison.
"""
import contextlib
import itertools

import pytest
import torch
from torch._dynamo.eval_frame import OptimizedModule
from torch._dynamo.utils import counters

from models.recursive_reasoning.common import RecursiveInner
from rundir.layout import outputs_path
from tests.helpers import TINY_ARCH, build_head, compose_config, cpu_context, train_metadata
from training import loop
from training.config import parse_config
from training.data import create_dataloader, split_paths
from training.evaluation import evaluate
from training.state import evaluation_model, init_train_state, update_ema
from utils.random_state import seed_everything

# TINY_ARCH with two H cycles, so that the gradient-free cycle (`torch.no_grad()` inside the step) is compiled too.
COMPILE_ARCH = [*(o for o in TINY_ARCH if not o.startswith("arch.H_cycles")), "arch.H_cycles=2"]
VARIANTS = {
    "trm": [],
    # The automatic latent for L = 1 + 8 positions of width 32: 9 tokens of width 32, each encoding a chunk of 32
    # numbers read column by column (so not a row). The recursion has the plain model's shapes, which lets the
    # compiled kernels of its blocks be reused from the "trm" run: compile time, not coverage, is what it saves.
    "trm_lma": ["arch.lma_enable=true"],
}
BATCH = 8
STEPS = 3
# float32 round-off: compiled kernels fuse and reorder float32 sums, so values differ from eager in the last bits
# (measured on CPU: logged metrics <= 5e-8 relative, weights <= 1.2e-7 absolute after 3 steps). A real difference
# (a missed update, a wrong halt, a mask or cast lost by the compiler) is orders of magnitude larger: one Adam-atan2
# step moves a weight by ~lr = 1e-3, 100x ATOL.
RTOL, ATOL = 1e-4, 1e-5
SAVED = ("preds", "q_halt_logits")


@contextlib.contextmanager
def inductor_for_tests():
    """Inductor settings for these tests only (restored on exit), with a clean dynamo cache before and after.

    - compile_threads=1: kernels are built in this process; on a 2-core CI machine the default worker pool
      only adds its start-up time. The generated code is the same.
    - fallback_random=True: the ACT exploration draws (`rand_like`, `randint_like` in `_min_halt_steps`) use
      torch's generator as in eager, instead of inductor's own random kernels, so both runs explore alike.
    DISABLE_COMPILE (which beats compile=true) is removed for the duration.
    """
    with pytest.MonkeyPatch.context() as env, torch._inductor.config.patch(compile_threads=1, fallback_random=True):
        env.delenv("DISABLE_COMPILE", raising=False)
        torch._dynamo.reset()
        try:
            yield
        finally:
            torch._dynamo.reset()


def make_config(data: str, variant: str, compile: bool | None = None):
    return parse_config(compose_config([f"data_paths=[{data}]", *COMPILE_ARCH, *VARIANTS[variant],
                                        f"global_batch_size={BATCH}", "epochs=1", "eval_interval=1", "evaluators=[]",
                                        "lr=1e-3", "lr_warmup_steps=1", "ema=true", "ema_rate=0.5",
                                        f"compile={'null' if compile is None else str(compile).lower()}",
                                        "device=cpu", "num_workers=0", f"eval_save_outputs=[{','.join(SAVED)}]"]))


def first_train_batch(config) -> dict:
    loader, _ = create_dataloader(config.data_paths, "train", cpu_context(), seed=config.seed,
                                  global_batch_size=BATCH, num_workers=0)
    return next(iter(loader))[1]


# ---------------------------------------------------------------------------------------------
# No graph breaks in the ACT step
# ---------------------------------------------------------------------------------------------
def explain_act_step(head: torch.nn.Module, batch: dict):
    """torch._dynamo.explain of one ACT step as the trainer and evaluation call it (dynamo only, no inductor)."""
    torch._dynamo.reset()
    try:
        return torch._dynamo.explain(head)(carry=head.initial_carry(batch), batch=batch, return_keys=[])
    finally:
        torch._dynamo.reset()


def assert_no_graph_breaks(head: torch.nn.Module, batch: dict, inference: bool) -> None:
    with torch.inference_mode() if inference else contextlib.nullcontext():
        report = explain_act_step(head, batch)
    reasons = [str(r.reason).splitlines()[0] + (f" (at {r.user_stack[-1].filename}:{r.user_stack[-1].lineno})"
                                                  if r.user_stack else "") for r in report.break_reasons]
    graphs, breaks = report.graph_count, report.graph_break_count
    assert (graphs, breaks) == (1, 0), f"the ACT step compiles to {graphs} graphs, {breaks} graph break(s): {reasons}"


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_act_step_has_no_graph_breaks(copy_task, variant, mode):
    """One whole ACT step (embeddings, H_cycles recursion, heads, halting, loss and metrics) is one graph:
    in train mode (exploration, the puzzle-embedding copy into its local buffer) and in eval mode under
    inference_mode, as `evaluate` runs it."""
    config = make_config(copy_task, variant)
    torch.manual_seed(0)
    head = build_head(config, train_metadata(config))
    getattr(head, mode)()
    assert_no_graph_breaks(head, first_train_batch(config), inference=mode == "eval")


def test_graph_break_check_catches_a_host_sync(copy_task, monkeypatch):
    """The check above fails when the step holds a graph break: here a `.item()` (a host sync) in head_input."""
    original = RecursiveInner.head_input

    def head_input_with_a_sync(self, answer, embedding):
        if answer.abs().max().item() > 1e9:  # the kind of debugging check that sneaks into model code
            raise RuntimeError("answer blew up")
        return original(self, answer, embedding)

    monkeypatch.setattr(RecursiveInner, "head_input", head_input_with_a_sync)
    config = make_config(copy_task, "trm")
    head = build_head(config, train_metadata(config))
    head.train()
    with pytest.raises(AssertionError, match=r"graph break\(s\).*Tensor.item\(\)"):
        assert_no_graph_breaks(head, first_train_batch(config), inference=False)


# ---------------------------------------------------------------------------------------------
# compile=true trains and evaluates as eager
# ---------------------------------------------------------------------------------------------
def train_steps(config) -> tuple:
    """(state, per-step logged metrics) after STEPS steps of `training.loop.train_batch`, EMA updated as in the loop."""
    ctx = cpu_context()
    loader, metadata = create_dataloader(config.data_paths, "train", ctx, seed=config.seed, global_batch_size=BATCH,
                                         num_workers=0)
    seed_everything(config.seed)  # the same initial weights for both runs
    state = init_train_state(config, metadata, ctx)
    state.model.train()
    logged = []
    for _, batch, size in itertools.islice(loader, STEPS):
        logged.append(loop.train_batch(config, state, batch, size, ctx))
        update_ema(state)
    return state, logged


def dynamo_stats() -> dict:
    return {"graph_breaks": dict(counters["graph_break"]), "graphs": counters["stats"]["unique_graphs"]}


@pytest.fixture(scope="module", params=list(VARIANTS))
def trained(request, copy_task):
    """Eager and compile=true runs of the same config (the same data and initial weights) for each variant."""
    data = copy_task
    with inductor_for_tests():
        eager = train_steps(make_config(data, request.param, compile=False))
        counters.clear()
        compiled = train_steps(make_config(data, request.param, compile=True))
        stats = dynamo_stats()
        yield dict(variant=request.param, data=data, eager=eager, compiled=compiled, stats=stats)


def assert_close(actual, expected, what: str) -> None:
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=ATOL, msg=lambda m: f"{what}: {m}")


@pytest.mark.slow
def test_compiled_training_matches_eager(trained):
    (eager, eager_logged), (compiled, compiled_logged) = trained["eager"], trained["compiled"]
    assert not isinstance(eager.model, OptimizedModule)
    assert isinstance(compiled.model, OptimizedModule), "compile=true on CPU should compile (should_compile)"
    # All STEPS steps ran one graph: no graph break, no recompilation between steps.
    assert trained["stats"] == {"graph_breaks": {}, "graphs": 1}, trained["stats"]

    for step, (e, c) in enumerate(zip(eager_logged, compiled_logged), start=1):
        assert set(c) == set(e), f"step {step}: logged keys differ"
        for key in e:
            assert c[key] == pytest.approx(e[key], rel=RTOL, abs=ATOL), f"step {step}: {key} {c[key]} != {e[key]}"
    eager_weights, compiled_weights = eager.raw_model.state_dict(), compiled.raw_model.state_dict()
    assert set(compiled_weights) == set(eager_weights)
    for name, value in eager_weights.items():
        assert_close(compiled_weights[name], value, f"weight {name} after {STEPS} steps")
    for name, value in eager.ema.shadow.items():
        assert_close(compiled.ema.shadow[name], value, f"EMA shadow {name}")
    # The carry the next step would start from: same latents, step counts and halting decisions.
    assert torch.equal(compiled.carry.halted, eager.carry.halted) and torch.equal(compiled.carry.steps,
                                                                                  eager.carry.steps)
    for field in ("z_H", "z_L"):
        assert_close(getattr(compiled.carry.inner_carry, field), getattr(eager.carry.inner_carry, field),
                     f"carry {field}")


def evaluate_model(model, config, save_dir: str) -> tuple[dict, dict]:
    """`evaluate` as the training loop calls it; (metrics, saved outputs)."""
    ctx = cpu_context()
    paths = split_paths(config, "test")
    loader, metadata = create_dataloader(paths, "test", ctx, seed=config.seed, global_batch_size=BATCH,
                                         num_workers=0)
    results = evaluate(model, loader, metadata, [], ctx, STEPS, save_dir, save_outputs=config.eval_save_outputs)
    return results, torch.load(outputs_path(save_dir, STEPS), weights_only=True)


@pytest.mark.slow
def test_compiled_evaluation_matches_eager(trained, tmp_path):
    """The evaluation model of the compiled run (the EMA copy of the compiled module) against the same weights
    run eagerly (its `_orig_mod`): same predictions, metrics within float32 round-off."""
    config = make_config(trained["data"], trained["variant"], compile=True)
    compiled_state, _ = trained["compiled"]
    with inductor_for_tests():
        eval_model = evaluation_model(compiled_state)
        assert isinstance(eval_model, OptimizedModule)
        counters.clear()
        compiled_results, compiled_outputs = evaluate_model(eval_model, config, str(tmp_path / "compiled"))
        stats = dynamo_stats()
        eager_results, eager_outputs = evaluate_model(eval_model._orig_mod, config, str(tmp_path / "eager"))

    # Every batch and every one of the halt_max_steps steps ran the one eval graph.
    assert stats == {"graph_breaks": {}, "graphs": 1}, stats
    assert torch.equal(compiled_outputs["preds"], eager_outputs["preds"])
    assert_close(compiled_outputs["q_halt_logits"], eager_outputs["q_halt_logits"], "q_halt_logits")
    assert set(compiled_results) == set(eager_results) == {"all"}
    assert compiled_results["all"] == pytest.approx(eager_results["all"], rel=RTOL, abs=ATOL)
