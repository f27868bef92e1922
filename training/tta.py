"""Test-time augmentation (TTA) voting: answer each test puzzle K more times under validity-preserving
transforms, undo each transform on the prediction and vote over the K+1 whole answers (docs/training.md).

Sudoku uses the builder's shuffles (digit relabelling, band/row and stack/column permutations, transpose),
Maze the 8 symmetries of the square. Each transform is a permutation of positions and one of token values,
so its inverse is exact. The K transforms are drawn once from `seed`: every puzzle gets the same K, on any
number of processes and batch sizes, and all copies of a puzzle are answered in one process, so the
votes need no gathering. Votes count identical whole answers; a tie goes to the answer with the highest
mean sigmoid(q_halt) over its votes (as the ARC evaluator breaks ties).
"""
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from dataset.common import IGNORE_LABEL_ID
from dataset.tasks import maze, sudoku, task_of
from dataset.tasks.dihedral import NUM_DIHEDRAL, dihedral_transform
from utils.errors import ConfigError

TTA_TASKS = ("sudoku", "maze")
TTA_METRIC = "tta_exact_accuracy"
TTA_VALID_METRIC = "tta_valid_exact_accuracy"  # Sudoku: valid completions of the clues preferred


@dataclass(frozen=True)
class TokenPermutation:
    """tokens -> values[tokens[..., positions]]: output position k takes the relabelled token of `positions[k]`."""

    positions: np.ndarray  # (seq_len,) a permutation of 0..seq_len-1
    values: np.ndarray  # (vocab_size,) a permutation of the token ids

    def inverse(self) -> "TokenPermutation":
        return TokenPermutation(np.argsort(self.positions), np.argsort(self.values))

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.as_tensor(self.positions, device=tokens.device)
        values = torch.as_tensor(self.values, device=tokens.device, dtype=tokens.dtype)
        return values[tokens[..., positions].long()]


def sudoku_transforms(count: int, rng: np.random.Generator) -> list[TokenPermutation]:
    """The builder's shuffles, on tokens: PAD and blank stay, digit tokens are relabelled."""
    digit_maps, sources = sudoku.random_shuffles(rng, count)
    token_maps = np.concatenate([np.zeros((count, 1), dtype=np.int64), digit_maps + sudoku.DIGIT_OFFSET], axis=1)
    return [TokenPermutation(sources[i], token_maps[i]) for i in range(count)]


def maze_transforms(count: int, rng: np.random.Generator) -> list[TokenPermutation]:
    """Dihedral transforms other than the identity (walls, S and G move with the grid), without repeats while
    there are fewer than 8, then drawn again."""
    cells = np.arange(maze.SEQ_LEN).reshape(maze.GRID_SIZE, maze.GRID_SIZE)
    ids = np.concatenate([rng.permutation(np.arange(1, NUM_DIHEDRAL)) for _ in range(-(-count // 7))])[:count]
    return [TokenPermutation(np.ascontiguousarray(dihedral_transform(cells, int(t))).reshape(-1),
                             np.arange(maze.VOCAB_SIZE)) for t in ids]


TRANSFORMS: dict[str, Callable[[int, np.random.Generator], list[TokenPermutation]]] = {
    "sudoku": sudoku_transforms, "maze": maze_transforms}


def tta_transforms(vocab_size: int, seq_len: int, count: int, seed: int) -> list[TokenPermutation]:
    """`count` seeded transforms for the task this dataset encodes; an error for tasks without a family."""
    task = task_of(vocab_size, seq_len)
    if task not in TRANSFORMS:
        hint = (" ARC test sets hold their augmented copies already: the ARC evaluator votes over them."
                if task == "arc" else "")
        raise ConfigError(f"Test-time augmentation is defined for {', '.join(TTA_TASKS)}; this dataset "
                          f"(vocab_size {vocab_size}, seq_len {seq_len}) is {task}.{hint} Set tta=0.")
    return TRANSFORMS[task](count, np.random.default_rng(seed))


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


def sudoku_valid_completions(answers: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """(C, B, 81) answer tokens, (B, 81) input tokens -> (C, B): a valid solved grid agreeing with every clue."""
    digits = (answers - sudoku.DIGIT_OFFSET).clamp(0, sudoku.SIDE)
    valid = torch.as_tensor(sudoku.is_valid_solution(digits.reshape(-1, sudoku.SEQ_LEN).cpu().numpy()),
                            device=answers.device).view(answers.shape[:2])
    clues = inputs > sudoku.BLANK_TOKEN
    return valid & ((answers == inputs[None]) | ~clues[None]).all(-1)


def exact_correct(answers: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B,) whole answer right on every labelled position, for sequences that have labels (as exact_accuracy)."""
    mask = labels != IGNORE_LABEL_ID
    return ((answers == labels) | ~mask).all(-1) & mask.any(-1)


def tta_metric_sums(run: Callable[[dict], dict], batch: dict, first: dict, transforms: list[TokenPermutation],
                    check_sudoku: bool = False) -> dict[str, torch.Tensor]:
    """Metric sums (to divide by the eval count) of voting over the untransformed answer `first` and one per
    transform; `run(batch)` answers a batch (outputs with `preds` and `q_halt_logits`)."""
    answers, confidences = [first["preds"]], [first["q_halt_logits"]]
    for transform in transforms:
        outputs = run({**batch, "inputs": transform(batch["inputs"])})
        answers.append(transform.inverse()(outputs["preds"]))
        confidences.append(outputs["q_halt_logits"])
    answers, confidences = torch.stack(answers), torch.stack(confidences)
    sums = {TTA_METRIC: exact_correct(vote(answers, confidences), batch["labels"]).sum()}
    if check_sudoku:
        eligible = sudoku_valid_completions(answers, batch["inputs"])
        sums[TTA_VALID_METRIC] = exact_correct(vote(answers, confidences, eligible), batch["labels"]).sum()
    return sums
