"""Test-time augmentation voting (training/tta.py): exact inverses, validity kept, votes, the evaluation metric.
(In evaluation: tests/integration/test_tta.py.)"""
import numpy as np
import pytest
import torch

from dataset.common import IGNORE_LABEL_ID
from dataset.generated import build_generated_dataset
from dataset.tasks import arc, maze, sudoku
from dataset.tasks.dihedral import dihedral_transform
from training.tta import (
    TTA_METRIC,
    TTA_VALID_METRIC,
    exact_correct,
    tta_metric_sums,
    tta_transforms,
    valid_completions_check,
    vote,
)
from utils.errors import ConfigError

SOLUTION = np.array([int(c) for c in "534678912672195348198342567859761423426853791"
                                     "713924856961537284287419635345286179"])


def sudoku_tokens(digits: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(digits + sudoku.DIGIT_OFFSET, dtype=torch.int32)


@pytest.fixture(scope="module")
def maze_set(tmp_path_factory) -> str:
    return build_generated_dataset(str(tmp_path_factory.mktemp("maze") / "maze"), "maze", num_train=8, num_test=6,
                                   seed=0)


@pytest.mark.parametrize("task, vocab, seq_len", [("sudoku", sudoku.VOCAB_SIZE, sudoku.SEQ_LEN),
                                                  ("maze", maze.VOCAB_SIZE, maze.SEQ_LEN)])
def test_transform_then_inverse_is_the_identity(task, vocab, seq_len):
    grids = torch.randint(0, vocab, (5, seq_len), dtype=torch.int32)
    transforms = tta_transforms(vocab, seq_len, 16, seed=3)
    assert len(transforms) == 16
    for t in transforms:
        moved = t(grids)
        assert moved.dtype == grids.dtype and not torch.equal(moved, grids)
        assert torch.equal(t.inverse()(moved), grids)
        assert torch.equal(t(t.inverse()(grids)), grids)


def test_transforms_are_seeded():
    first, again, other = (tta_transforms(sudoku.VOCAB_SIZE, sudoku.SEQ_LEN, 4, seed=s) for s in (0, 0, 1))
    grids = torch.randint(0, sudoku.VOCAB_SIZE, (2, sudoku.SEQ_LEN))
    assert all(torch.equal(a(grids), b(grids)) for a, b in zip(first, again))
    assert not all(torch.equal(a(grids), b(grids)) for a, b in zip(first, other))


def test_sudoku_transforms_keep_puzzles_valid_and_blanks_blank():
    puzzle = SOLUTION.copy()
    puzzle[np.random.default_rng(0).choice(81, 40, replace=False)] = 0
    question, answer = sudoku_tokens(puzzle[None]), sudoku_tokens(SOLUTION[None])
    for t in tta_transforms(sudoku.VOCAB_SIZE, sudoku.SEQ_LEN, 32, seed=0):
        moved_q, moved_a = t(question), t(answer)
        assert sudoku.is_valid_solution((moved_a - sudoku.DIGIT_OFFSET).numpy()).all()
        assert ((moved_q == sudoku.BLANK_TOKEN) == (t(question) == sudoku.BLANK_TOKEN)).all()
        assert (moved_q == sudoku.BLANK_TOKEN).sum() == 40
        clues = moved_q != sudoku.BLANK_TOKEN
        assert torch.equal(moved_q[clues], moved_a[clues]), "the transformed answer completes the transformed clues"
    assert (t(torch.tensor([[sudoku.PAD_ID] * 81])) == sudoku.PAD_ID).all()


def test_maze_transforms_are_the_dihedral_ones(maze_set):
    inputs = np.load(f"{maze_set}/test/all__inputs.npy")
    grid = torch.as_tensor(inputs[:1])
    expected = [np.ascontiguousarray(dihedral_transform(inputs[0].reshape(30, 30), t)).reshape(-1) for t in range(8)]
    transforms = tta_transforms(maze.VOCAB_SIZE, maze.SEQ_LEN, 7, seed=0)
    got = [t(grid)[0].numpy() for t in transforms]
    # 7 transforms: the 7 non-identity symmetries, each once; S, G and walls move with the grid.
    assert sorted(g.tobytes() for g in got) == sorted(e.tobytes() for e in expected[1:])
    for g in got:
        assert (g == maze.START).sum() == (g == maze.GOAL).sum() == 1
        assert (g == maze.WALL).sum() == (inputs[0] == maze.WALL).sum()


@pytest.mark.parametrize("vocab, seq_len, message", [
    (arc.VOCAB_SIZE, arc.SEQ_LEN, "ARC evaluator votes"), (6, 8, "is generic")])
def test_tasks_without_a_transform_family_are_refused(vocab, seq_len, message):
    with pytest.raises(ConfigError, match=message) as refused:
        tta_transforms(vocab, seq_len, 4, seed=0)
    assert "eval_tta=0 in training" in str(refused.value)  # the key to change in both faces


def test_vote_counts_whole_answers_and_breaks_ties_by_confidence():
    a, b, c = torch.tensor([1, 2]), torch.tensor([3, 4]), torch.tensor([5, 6])
    # Puzzle 0: a twice, b once -> a. Puzzle 1: a, b, c once each -> the most confident (c).
    answers = torch.stack([torch.stack([a, a]), torch.stack([b, b]), torch.stack([a, c])])
    q = torch.tensor([[0.0, -1.0], [5.0, -2.0], [-3.0, 3.0]])
    assert torch.equal(vote(answers, q), torch.stack([a, c]))
    # A tie of counts goes to the higher mean sigmoid(q_halt): a (votes 0, 2) against b (vote 1).
    answers = torch.stack([a, b, b, a])[:, None]
    q = torch.tensor([[4.0], [0.0], [0.1], [4.0]])
    assert torch.equal(vote(answers, q), a[None])
    q = torch.tensor([[-4.0], [0.0], [0.1], [-4.0]])
    assert torch.equal(vote(answers, q), b[None])
    # Only eligible candidates vote; none eligible: all vote.
    answers = torch.stack([a, a, b])[:, None]
    q = torch.zeros(3, 1)
    assert torch.equal(vote(answers, q, torch.tensor([[False], [False], [True]])), b[None])
    assert torch.equal(vote(answers, q, torch.zeros(3, 1, dtype=torch.bool)), a[None])


def test_sudoku_valid_completions():
    puzzle = SOLUTION.copy()
    puzzle[:30] = 0
    inputs = sudoku_tokens(puzzle[None])
    right = sudoku_tokens(SOLUTION[None])
    swapped = right.clone()
    swapped[0, [0, 1]] = swapped[0, [1, 0]]  # breaks the rows' columns
    other = torch.as_tensor(tta_transforms(sudoku.VOCAB_SIZE, 81, 1, 0)[0](right))  # valid, contradicts clues
    ok = valid_completions_check(sudoku.VOCAB_SIZE, sudoku.SEQ_LEN)(torch.stack([right, swapped, other]), inputs)
    assert ok[:, 0].tolist() == [True, False, False]


def test_valid_completions_check_is_for_sudoku_only():
    with pytest.raises(ConfigError, match="tta_sudoku_check is for Sudoku datasets; .* is maze"):
        valid_completions_check(maze.VOCAB_SIZE, maze.SEQ_LEN)


def test_exact_correct_ignores_unlabelled_positions_and_empty_rows():
    labels = torch.tensor([[1, IGNORE_LABEL_ID], [IGNORE_LABEL_ID, IGNORE_LABEL_ID], [2, 3]])
    answers = torch.tensor([[1, 9], [0, 0], [2, 4]])
    assert exact_correct(answers, labels).tolist() == [True, False, False]


def test_metric_sums_vote_over_the_inverted_answers():
    """A model that is right only on the untransformed input loses against two transformed answers that agree."""
    inputs = sudoku_tokens(np.tile(SOLUTION, (3, 1)))
    batch = {"inputs": inputs, "labels": inputs.clone(), "puzzle_identifiers": torch.zeros(3, dtype=torch.int32)}
    transforms = tta_transforms(sudoku.VOCAB_SIZE, sudoku.SEQ_LEN, 2, seed=0)
    wrong = inputs.clone()
    wrong[:, 0] = 1

    def equivariant_but_wrong(b):  # answers `wrong` for every transformed copy, in that copy's frame
        t = next(t for t in transforms if torch.equal(t(inputs), b["inputs"]))
        return {"preds": t(wrong), "q_halt_logits": torch.zeros(3)}

    first = {"preds": inputs.clone(), "q_halt_logits": torch.full((3,), 9.0)}
    sums = tta_metric_sums(equivariant_but_wrong, batch, first, transforms,
                           valid_completions_check(sudoku.VOCAB_SIZE, sudoku.SEQ_LEN))
    assert sums[TTA_METRIC] == 0  # two votes for `wrong` beat one confident right answer
    assert sums[TTA_VALID_METRIC] == 3  # `wrong` is not a valid grid: the valid answer wins


def test_maze_voting_changes_answers_only_through_votes(maze_set):
    """On a generated maze set: an equivariant model (right in every frame) scores the same with and without TTA;
    a model whose transformed answers all agree on one wrong path makes the vote choose that path."""
    labels = torch.as_tensor(np.load(f"{maze_set}/test/all__labels.npy")).int()
    inputs = torch.as_tensor(np.load(f"{maze_set}/test/all__inputs.npy")).int()
    batch = {"inputs": inputs, "labels": labels, "puzzle_identifiers": torch.zeros(len(labels), dtype=torch.int32)}
    transforms = tta_transforms(maze.VOCAB_SIZE, maze.SEQ_LEN, 7, seed=0)

    def frame_of(b):
        return next(t for t in transforms if torch.equal(t(inputs), b["inputs"]))

    def equivariant(b):
        return {"preds": frame_of(b)(labels), "q_halt_logits": torch.zeros(len(labels))}

    first = {"preds": labels.clone(), "q_halt_logits": torch.zeros(len(labels))}
    assert tta_metric_sums(equivariant, batch, first, transforms)[TTA_METRIC] == len(labels)
    wrong = labels.clone()
    wrong[:, 0] = maze.PATH if int(labels[0, 0]) != maze.PATH else maze.WALL

    def agreeing_on_wrong(b):
        return {"preds": frame_of(b)(wrong), "q_halt_logits": torch.zeros(len(labels))}

    assert tta_metric_sums(agreeing_on_wrong, batch, first, transforms)[TTA_METRIC] == 0
    # Without transforms the answer is the untransformed one.
    assert tta_metric_sums(agreeing_on_wrong, batch, first, [])[TTA_METRIC] == len(labels)
