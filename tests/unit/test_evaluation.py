"""Inference-time halting (training/evaluation.py, `halt_early=true`): without early halts it equals the
published evaluation, halting at the first step equals a one-step model, and halted sequences keep their outputs."""
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from dataset.build_copy_dataset import write_copy_task
from tests.helpers import TINY_EVAL_ARCH, build_head, compose_config, evaluate_head, train_metadata
from training.checkpointing import save_code_and_config, save_weights
from training.config import derive_names, parse_config
from training.evaluation import run_act_halting_early

TINY_ARCH = TINY_EVAL_ARCH


# ---------------------------------------------------------------------------------------------
# Halting early, on a saved untrained model (evaluated end to end too: tests/integration/test_evaluate.py)
# ---------------------------------------------------------------------------------------------
def saved_untrained_model(tmp_path, overrides=()) -> tuple[str, object]:
    data = write_copy_task(str(tmp_path / "copy"), num_train_puzzles=8, num_test_puzzles=10, seq_len=6, vocab_size=5)
    raw = compose_config([f"data_paths=[{data}]", "evaluators=[]", *TINY_ARCH, "global_batch_size=4", "epochs=1",
                          "eval_interval=1", "num_workers=0", f"+checkpoint_path={tmp_path / 'run'}", *overrides])
    config = derive_names(parse_config(raw), "test-run")
    torch.manual_seed(0)
    head = build_head(config, train_metadata(config))
    save_code_and_config(config)
    return save_weights(config.checkpoint_path, head, 5), config


def evaluate_model(config, head, halt_early: bool) -> dict:
    return evaluate_head(config, head, halt_early=halt_early)[0]


def set_q_halt_bias(head: nn.Module, value: float) -> None:
    q_heads = [m for name, m in head.named_modules() if name.endswith("q_head")]
    assert len(q_heads) == 1
    with torch.no_grad():
        q_heads[0].bias[0] = value


def test_halt_early_without_early_halts_equals_published_evaluation(tmp_path):
    checkpoint, config = saved_untrained_model(tmp_path)
    head = build_head(config, train_metadata(config))
    head.load_state_dict(torch.load(checkpoint, weights_only=True))  # Q head at its init: q_halt = -5, never halts
    published, early = evaluate_model(config, head, False), evaluate_model(config, head, True)
    assert published == early and published["all"]["steps"] == 3.0


def test_halting_at_step_one_equals_a_one_step_model(tmp_path):
    checkpoint, config = saved_untrained_model(tmp_path)
    one_step = config.model_copy(update={"arch": config.arch.model_copy(update={"halt_max_steps": 1})})
    assert one_step.arch.model_keys["halt_max_steps"] == 1
    results = []
    for cfg, halt_early in ((config, True), (one_step, False)):
        head = build_head(cfg, train_metadata(cfg))
        head.load_state_dict(torch.load(checkpoint, weights_only=True))
        set_q_halt_bias(head, 5.0)  # q_halt ~ +5 everywhere: every sequence halts at its first step
        results.append(evaluate_model(cfg, head, halt_early))
    assert results[0] == results[1] and results[0]["all"]["steps"] == 1.0


# ---------------------------------------------------------------------------------------------
# Halted sequences keep their outputs (a scripted stand-in for the loss head)
# ---------------------------------------------------------------------------------------------
@dataclass
class FakeCarry:
    steps: torch.Tensor
    halted: torch.Tensor


class ScheduledHaltHead(nn.Module):
    """An ACT loss-head stand-in: sequence b says halt from step halt_at[b] on; its predictions at step s are all s."""

    def __init__(self, halt_at: list[int], max_steps: int, vocab: int = 8):
        super().__init__()
        self.halt_at, self.max_steps, self.vocab, self.calls = torch.tensor(halt_at), max_steps, vocab, 0
        self.loss_fn = lambda logits, labels, ignore_index, valid_mask: torch.zeros(labels.shape)

    def initial_carry(self, batch):
        size = batch["inputs"].shape[0]
        return FakeCarry(torch.zeros(size, dtype=torch.int32), torch.ones(size, dtype=torch.bool))

    def forward(self, carry, batch, return_keys):
        self.calls += 1
        steps = torch.where(carry.halted, 0, carry.steps) + 1
        preds = steps[:, None].expand_as(batch["labels"]).long()
        outputs = {"preds": preds, "logits": F.one_hot(preds, self.vocab).float(),
                   "q_halt_logits": torch.where(steps >= self.halt_at, 1.0, -1.0),
                   "q_continue_logits": torch.full(steps.shape, 2.0)}
        halted = steps >= self.max_steps
        return FakeCarry(steps, halted), None, {}, {k: v for k, v in outputs.items() if k in return_keys}, halted.all()


def halts_on_positive_q_halt(q_halt, q_continue):
    return q_halt > 0


def test_halted_sequences_keep_their_outputs():
    halt_at = [1, 3, 9, 2]  # 9: never says halt, stops at halt_max_steps = 4
    batch = {"inputs": torch.zeros(4, 5, dtype=torch.int32),
             "labels": torch.tensor([[1] * 5, [3] * 5, [4] * 5, [-100] * 5], dtype=torch.int32)}
    head = ScheduledHaltHead(halt_at, max_steps=4)
    metrics, outputs = run_act_halting_early(head, batch, {"preds"}, halts_on_positive_q_halt)
    assert outputs.keys() == {"preds"} and outputs["preds"][:, 0].tolist() == [1, 3, 4, 2]
    assert head.calls == 4
    assert {k: float(v) for k, v in metrics.items()} == {
        "count": 3.0, "accuracy": 3.0, "exact_accuracy": 3.0,
        "q_halt_accuracy": 2.0,  # the third sequence is right but ended with q_halt < 0
        "steps": 8.0,  # 1 + 3 + 4: the label-less fourth row is not counted
        "lm_loss": 0.0,
        # every row (padding too, as in the loss head) is a "correct" target: BCE = softplus(-q)
        "q_halt_loss": pytest.approx(3 * float(F.softplus(torch.tensor(-1.0))) + float(F.softplus(torch.tensor(1.0))))}

    head = ScheduledHaltHead([1, 2, 1, 2], max_steps=16)
    _, outputs = run_act_halting_early(head, batch, {"preds", "q_halt_logits"}, halts_on_positive_q_halt)
    assert head.calls == 2 and outputs["preds"][:, 0].tolist() == [1, 2, 1, 2]  # stops once all halted

    head = ScheduledHaltHead(halt_at, max_steps=4)  # q_halt (1) never exceeds q_continue (2)
    _, outputs = run_act_halting_early(head, batch, {"preds"}, lambda q_halt, q_continue: q_halt > q_continue)
    assert outputs["preds"][:, 0].tolist() == [4, 4, 4, 4]
