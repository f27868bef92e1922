"""Non-finite gradients and weights never reach the weights or a checkpoint (issue 13 finding 12)."""
import math

import pytest
import torch

import training.loop
from rundir.layout import list_train_states
from tests.helpers import TINY_ARCH, compose_config, cpu_context
from training.config import parse_config
from utils.errors import NonFiniteLossError

pytestmark = pytest.mark.integration  # whole (tiny) runs


def run_with(copy_task, tmp_path, corrupt, *overrides):
    """Train a tiny TRM, calling corrupt(state) after every optimizer step (on the built TrainState)."""
    raw = compose_config([f"data_paths=[{copy_task}]", "evaluators=[]", *TINY_ARCH, "global_batch_size=16",
                          "epochs=4", "eval_interval=4", "lr=1e-3", "wandb_mode=disabled", "num_workers=0",
                          "checkpoint_interval=2", f"+checkpoint_path={tmp_path}", *overrides])
    real_train_batch = training.loop.train_batch

    def train_batch_then_corrupt(config, state, *args):
        metrics = real_train_batch(config, state, *args)
        corrupt(state)
        return metrics

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training.loop, "train_batch", train_batch_then_corrupt)
        return training.loop.train(parse_config(raw), cpu_context())


def test_non_finite_gradient_stops_before_the_update(copy_task, tmp_path):
    """A gradient turning NaN (the loss still finite) stops the step, names the parameter and the last good state."""
    calls = []

    def poison_gradients_from_step_3(state):
        if state.step == 2 and not calls:
            weight = state.raw_model.model.inner.lm_head.weight
            calls.append(weight.register_hook(lambda grad: torch.full_like(grad, math.nan)))

    with pytest.raises(NonFiniteLossError, match=r"(?s)Non-finite gradient at step 3.*lm_head\.weight.*"
                                                 r"train_state_step_2"):
        run_with(copy_task, tmp_path, poison_gradients_from_step_3)
    assert [s for s, _ in list_train_states(str(tmp_path))] == [2]
    state = torch.load(tmp_path / "train_state_step_2" / "state.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_non_finite_weights_are_never_saved(copy_task, tmp_path):
    """A weight that became inf (e.g. an overflow in an update) is caught before any checkpoint holds it."""
    def overflow_a_weight_at_step_4(state):  # after the update of step 4, before its checkpoint
        if state.step == 4:
            with torch.no_grad():
                state.raw_model.model.inner.q_head.bias[0] = math.inf

    with pytest.raises(NonFiniteLossError, match=r"(?s)Non-finite weights at step 4.*q_head\.bias.*train_state_step_2"):
        run_with(copy_task, tmp_path, overflow_a_weight_at_step_4)
    assert [s for s, _ in list_train_states(str(tmp_path))] == [2]
    assert not (tmp_path / "step_4").exists()
