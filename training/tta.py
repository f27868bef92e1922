"""Test-time augmentation (TTA) voting: answer each test puzzle K more times under validity-preserving
transforms, undo each transform on the prediction and vote over the K+1 whole answers (docs/evaluation.md).

Each task's transforms are its `Task.transforms` (dataset/tasks/): Sudoku the builder's shuffles (digit
relabelling, band/row and stack/column permutations, transpose), Maze the 8 symmetries of the square; the
tasks without them are refused. Each transform is a permutation of positions and one of token values,
so its inverse is exact. The K transforms are drawn once from `seed`: every puzzle gets the same K, on any
number of processes and batch sizes, and all copies of a puzzle are answered in one process, so the
votes need no gathering. Votes count identical whole answers; a tie goes to the answer with the highest
mean sigmoid(q_halt) over its votes (as the ARC evaluator breaks ties).
"""
from collections.abc import Callable

import numpy as np
import torch

from dataset.common import IGNORE_LABEL_ID
from dataset.tasks import TASKS, task_of
from dataset.tasks.permutation import TokenPermutation
from utils.errors import ConfigError

TTA_METRIC = "tta_exact_accuracy"
TTA_VALID_METRIC = "tta_valid_exact_accuracy"  # Sudoku: valid completions of the clues preferred
# (C, B, S) candidate answers, (B, S) inputs -> (C, B): the candidates that may vote (a task's valid_completions).
EligibleCheck = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def tta_transforms(vocab_size: int, seq_len: int, count: int, seed: int) -> list[TokenPermutation]:
    """`count` seeded transforms for the task this dataset encodes; an error for tasks without a family."""
    task = TASKS[task_of(vocab_size, seq_len)]
    if task.transforms is None:
        having = ", ".join(name for name, t in TASKS.items() if t.transforms is not None)
        reason = f" {task.no_transforms}" if task.no_transforms else ""
        raise ConfigError(f"Test-time augmentation is defined for {having}; this dataset "
                          f"(vocab_size {vocab_size}, seq_len {seq_len}) is {task.name}.{reason} "
                          "Set tta=0 (eval_tta=0 in training).")
    return task.transforms(count, np.random.default_rng(seed))


def valid_completions_check(vocab_size: int, seq_len: int) -> EligibleCheck:
    """The valid-completions check (tta_sudoku_check) of the task this dataset encodes, on tensors; an error for
    tasks without one."""
    task = TASKS[task_of(vocab_size, seq_len)]
    if task.valid_completions is None:
        having = ", ".join(t.title for t in TASKS.values() if t.valid_completions is not None)
        raise ConfigError(f"tta_sudoku_check is for {having} datasets; this dataset (vocab_size {vocab_size}, "
                          f"seq_len {seq_len}) is {task.name}.")

    def check(answers: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        eligible = task.valid_completions(answers.cpu().numpy(), inputs.cpu().numpy())
        return torch.as_tensor(eligible, device=answers.device)

    return check


def vote(answers: torch.Tensor, q_halt_logits: torch.Tensor, eligible: torch.Tensor | None = None) -> torch.Tensor:
    """(C, B, S) candidate answers, (C, B) q_halt logits -> (B, S): per puzzle, the answer given most often,
    ties broken by the mean sigmoid(q_halt) of its votes, then by candidate order (the untransformed first).

    `eligible` (C, B): only those candidates vote and can win, where a puzzle has any (else all do).
    """
    if eligible is not None:
        eligible = eligible | ~eligible.any(0, keepdim=True)
    else:
        eligible = torch.ones(answers.shape[:2], dtype=torch.bool, device=answers.device)
    same = (answers[:, None] == answers[None, :]).all(-1) & eligible[None, :]  # (C, C, B): b votes for a
    votes = same.sum(1).to(torch.float32)
    confidence = (same * torch.sigmoid(q_halt_logits.to(torch.float32))[None, :]).sum(1) / votes.clamp_min(1)
    score = torch.where(eligible, 2 * votes + confidence, -1.0)  # confidence <= 1: votes decide first
    winner = score.argmax(0)  # first maximum: the lowest candidate index among equals
    return answers.gather(0, winner.view(1, -1, 1).expand(1, *answers.shape[1:]))[0]


def exact_correct(answers: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B,) whole answer right on every labelled position, for sequences that have labels (as exact_accuracy)."""
    mask = labels != IGNORE_LABEL_ID
    return ((answers == labels) | ~mask).all(-1) & mask.any(-1)


def tta_candidates(run: Callable[[dict], dict], batch: dict, first: dict, transforms: list[TokenPermutation],
                   keys: tuple[str, ...] = ("preds", "q_halt_logits")) -> dict[str, torch.Tensor]:
    """The candidates a vote is over, (C, B, ...) per output key: the untransformed outputs `first` and one per
    transform, `run(batch)` answering the transformed inputs; `preds` are mapped back to the untransformed frame
    (the other keys are per sequence)."""
    runs = [first]
    for transform in transforms:
        outputs = run({**batch, "inputs": transform(batch["inputs"])})
        runs.append({**outputs, "preds": transform.inverse()(outputs["preds"])})
    return {key: torch.stack([outputs[key] for outputs in runs]) for key in keys}


def tta_metric_sums(run: Callable[[dict], dict], batch: dict, first: dict, transforms: list[TokenPermutation],
                    eligible_check: EligibleCheck | None = None) -> dict[str, torch.Tensor]:
    """Metric sums (to divide by the eval count) of voting over the untransformed answer `first` and one per
    transform; `run(batch)` answers a batch (outputs with `preds` and `q_halt_logits`). With `eligible_check`
    (valid_completions_check) also the vote among the candidates it passes."""
    candidates = tta_candidates(run, batch, first, transforms)
    answers, confidences = candidates["preds"], candidates["q_halt_logits"]
    sums = {TTA_METRIC: exact_correct(vote(answers, confidences), batch["labels"]).sum()}
    if eligible_check is not None:
        eligible = eligible_check(answers, batch["inputs"])
        sums[TTA_VALID_METRIC] = exact_correct(vote(answers, confidences, eligible), batch["labels"]).sum()
    return sums
