"""Ready for the GPU without having one: bfloat16 training and every architecture on a device that is not the CPU.

1. bfloat16 (the default `forward_dtype`): every architecture trains a few steps on the copy task with finite,
   falling losses, and its tensors have the dtypes the published code gives them: carries in the forward dtype,
   logits too (the published `lm_head` output is not cast), the Q logits in float32 (`q_head(...).to(float32)`),
   master weights in float32.

2. Every architecture, with the code paths only some settings take, on the simulated accelerator (training steps
   and both evaluation loops, the same numbers as on the CPU) and on the meta device (forward and backward): the
   devices and what they catch are in tests/unit/test_devices.py."""
import math

import pytest
import torch

from tests.helpers import cpu_context
from tests.unit import test_devices as device_tests
from tests.unit.test_devices import (
    ARCHS,
    DEVICE_ARCHS,
    make_config,
    run_on_meta,
    run_on_simulated_device,
    train_batches,
)
from training import loop
from training.state import init_train_state
from utils.random_state import seed_everything

one_thread = device_tests.one_thread  # the unit module's fixture, by name


# ---------------------------------------------------------------------------------------------
# 1. bfloat16
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_bf16_training(arch, copy_task, one_thread):
    epochs = 6  # 64 puzzles / 16 = 4 steps an epoch: 24 steps
    config = make_config(copy_task, arch, f"epochs={epochs}", f"eval_interval={epochs}", "lr=3e-3",
                         "lr_warmup_steps=1")
    assert config.arch.model_keys["forward_dtype"] == "bfloat16"  # the default, not overridden
    batches, metadata = train_batches(config, epochs)
    seed_everything(config.seed)
    ctx = cpu_context()
    state = init_train_state(config, metadata, ctx)
    logged = [loop.train_batch(config, state, batch, size, ctx) for batch, size in batches]
    assert len(logged) == 24 and all(m is not None for m in logged)  # log_interval=1: every step
    for name in ("train/lm_loss", "train/q_halt_loss", "train/q_continue_loss"):
        values = [m[name] for m in logged if name in m]
        assert all(math.isfinite(v) for v in values), f"{arch}: non-finite {name}: {values}"
    assert ("train/q_continue_loss" in logged[0]) == (arch == "hrm")
    losses = [m["train/lm_loss"] for m in logged]
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.8 * first, f"{arch}: lm_loss {first:.3f} -> {last:.3f}"

    head = state.raw_model
    bf16 = torch.bfloat16
    carry = state.carry
    for name, value in vars(carry.inner_carry).items():
        assert value.dtype == bf16, f"{arch}: carry {name} is {value.dtype}"
    assert carry.steps.dtype == torch.int32 and carry.halted.dtype == torch.bool
    # One more step: the outputs of a trained model.
    keys = ["logits", "q_halt_logits", "q_continue_logits", "target_q_continue", "preds"]
    _, loss, metrics, outputs, _ = head(carry=carry, batch=batches[0][0], return_keys=keys)
    assert outputs["logits"].dtype == bf16  # lm_head(y) in the forward dtype, as published
    assert outputs["q_halt_logits"].dtype == outputs["q_continue_logits"].dtype == torch.float32
    if arch == "hrm":
        assert outputs["target_q_continue"].dtype == torch.float32
    assert outputs["preds"].dtype == torch.int64
    assert metrics["lm_loss"].dtype == torch.float64  # stablemax log-probs in float64 (models/losses.py)
    assert torch.isfinite(loss)
    # Master weights stay float32; the init vectors (and so the carries they reset to) are bfloat16.
    assert {p.dtype for p in head.parameters()} == {torch.float32}
    inits = {name: b.dtype for name, b in head.named_buffers() if name.endswith("_init")}
    assert inits and set(inits.values()) == {bf16}, inits
    assert head.model.inner.puzzle_emb.weights.dtype == torch.float32


# ---------------------------------------------------------------------------------------------
# 2. Every architecture on a simulated accelerator and on the meta device
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", DEVICE_ARCHS)
def test_every_architecture_on_a_simulated_accelerator(arch, copy_task, one_thread):
    run_on_simulated_device(copy_task, arch)


@pytest.mark.parametrize("arch", DEVICE_ARCHS)
def test_every_architecture_on_the_meta_device(arch, copy_task):
    run_on_meta(copy_task, arch)
