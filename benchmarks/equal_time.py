"""Training for a fixed budget of time and held-out accuracy: shared by lma_speed.py --equal-time and lma_study.py.

The budget counts only training steps (forward, backward, optimizer steps): making batches and evaluating
pause the clock, so every model gets the same time to learn in, however slow its evaluation is.
"""
import time
from typing import Callable, Optional

import torch

from benchmarks import train_step
from models.losses import ACTLossHead
from models.optimizers import build_adam_atan2
from models.sparse_embedding import SparseEmbeddingSignSGD

Batch = dict[str, torch.Tensor]
LR, BETAS, WEIGHT_DECAY = 1e-3, (0.9, 0.95), 0.1  # short budgets: 10x the published lr, no warm-up
PUZZLE_EMB_LR, PUZZLE_EMB_WEIGHT_DECAY = 1e-2, 0.1  # as published


def training_clock(device: torch.device) -> Callable[[], float]:
    """CPU time of this process on a CPU, so that other jobs on a shared machine do not shorten one
    model's budget; wall-clock time on accelerators, whose work the CPU clock does not see."""
    return time.process_time if device.type == "cpu" else time.perf_counter


def build_optimizers(head: ACTLossHead, puzzle_emb: bool) -> list[torch.optim.Optimizer]:
    """Sign-SGD for the puzzle-embedding table when there is one, then Adam-atan2 (the trainer's order)."""
    optimizers = []
    if puzzle_emb:
        optimizers.append(SparseEmbeddingSignSGD(head.model.puzzle_emb.buffers(), world_size=1, lr=PUZZLE_EMB_LR,
                                                 weight_decay=PUZZLE_EMB_WEIGHT_DECAY))
    optimizers.append(build_adam_atan2(head.parameters(), lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY))
    return optimizers


def train_for(seconds: float, head: ACTLossHead, optimizers: list, next_batch: Callable[[], Batch], batch_size: int,
              device: torch.device, every: Optional[float] = None,
              at_point: Optional[Callable[[float, int], None]] = None,
              on_step: Optional[Callable[[float], None]] = None) -> int:
    """Train on `next_batch()` (a fresh batch per call) until `seconds` of training time have passed.

    `at_point(trained_s, steps)` is called at 0 s, after every `every` seconds of training and at the end
    (outside the clock, with the head in train mode again afterwards); `on_step(seconds_of_that_step)`
    after each step. Returns the steps taken.
    """
    clock = training_clock(device)
    carry, steps, trained, next_point = None, 0, 0.0, 0.0
    while True:
        if at_point is not None and every is not None and trained >= next_point and trained < seconds:
            at_point(trained, steps)
            next_point += every
        if trained >= seconds:
            break
        head.train()
        batch = next_batch()
        if carry is None:
            carry = head.initial_carry(batch)
        start = clock()
        carry = train_step.train_step(head, optimizers, carry, batch, batch_size)
        train_step.synchronize(device)
        spent = clock() - start
        trained += spent
        steps += 1
        if on_step is not None:
            on_step(spent)
    if at_point is not None:
        at_point(trained, steps)
    return steps


@torch.inference_mode()
def held_out_accuracy(head: ACTLossHead, batches: list[Batch]) -> dict[str, float]:
    """Exact (whole answer right) and token accuracy (mean over examples) on `batches`, each example run
    for halt_max_steps ACT steps, as evaluation does."""
    head.eval()
    exact = token = count = 0.0
    for batch in batches:
        carry = head.initial_carry(batch)
        while True:
            carry, _, metrics, _, all_halted = head(carry=carry, batch=batch, return_keys=[])
            if all_halted:
                break
        exact += metrics["exact_accuracy"].item()
        token += metrics["accuracy"].item()
        count += metrics["count"].item()
    return {"exact_accuracy": exact / max(count, 1), "token_accuracy": token / max(count, 1)}
