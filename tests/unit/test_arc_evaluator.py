"""ARC evaluator (docs/arc-evaluator.md): crop, de-augmentation, voting, pass@k, submission.json, ranks."""
import json
import os

import numpy as np
import pytest
import torch

from dataset.common import PuzzleDatasetMetadata
from dataset.tasks.dihedral import dihedral_transform
from evaluators import arc as arc_eval
from evaluators.arc import ARC, canonical_keys, crop_shapes, grid_key, parse_augmentation
from tests.helpers import assert_kaggle_submission
from utils.errors import ConfigError

GRID = 30
IDENTITY = "0123456789"
# Test tasks: "multi" has two test pairs; "unseen" never gets a prediction.
TASKS = {
    "alpha": {"train": [], "test": [{"input": [[1, 2, 3], [4, 5, 6]], "output": [[7, 8], [9, 1], [2, 3]]}]},
    "multi": {"train": [], "test": [{"input": [[1, 1], [0, 2]], "output": [[3, 0, 4]]},
                                     {"input": [[5, 0, 6]], "output": [[6], [0], [5], [1]]}]},
    "unseen": {"train": [], "test": [{"input": [[1]], "output": [[2]]}]},
}
AUGMENTATIONS = [(0, IDENTITY), (1, "0918273645"), (6, "0987654321")]  # (trans, colour map digits)


# ---------------------------------------------------------------------------------------------
# Helpers: the builder's token layout and a tiny ARC "build" on disk
# ---------------------------------------------------------------------------------------------
def grid_tokens(grid) -> np.ndarray:
    """900 tokens of one example as the builder writes it (offset 0): colour + 2, EOS row/column, PAD."""
    grid = np.asarray(grid, dtype=np.int64)
    canvas = np.zeros((GRID, GRID), dtype=np.int64)
    rows, cols = grid.shape
    canvas[:rows, :cols] = grid + 2
    if rows < GRID:
        canvas[rows, :cols] = 1
    if cols < GRID:
        canvas[:rows, cols] = 1
    return canvas.reshape(-1)


def augment(grid, trans: int, digits: str) -> np.ndarray:
    """The builder's augmentation: dihedral(map[grid]) with map[c] = digits[c]."""
    colour_map = np.array([int(d) for d in digits])
    return dihedral_transform(colour_map[np.asarray(grid)], trans)


def aug_name(task: str, trans: int, digits: str) -> str:
    return task if (trans, digits) == (0, IDENTITY) else f"{task}|||t{trans}|||{digits}"


def write_arc_eval_data(path, tasks=TASKS, augmentations=AUGMENTATIONS, extra_names=("trainonly",)) -> list[str]:
    """identifiers.json (blank, then every task x augmentation, then non-test names) and test_puzzles.json."""
    names = ["<blank>"] + [aug_name(t, tr, d) for t in tasks for tr, d in augmentations] + list(extra_names)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "identifiers.json"), "w") as f:
        json.dump(names, f)
    with open(os.path.join(path, "test_puzzles.json"), "w") as f:
        json.dump(tasks, f)
    return names


def metadata(seq_len: int = GRID * GRID) -> PuzzleDatasetMetadata:
    return PuzzleDatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=12, seq_len=seq_len,
                                 num_puzzle_identifiers=16, total_groups=3, mean_puzzle_examples=1.0,
                                 total_puzzles=9, sets=["all"])


def make_batch(examples: list[tuple[str, np.ndarray, np.ndarray, float]], names: list[str], pad_to: int = 0):
    """(identifier name, input grid (augmented), predicted tokens, q_halt logit) -> (batch, preds)."""
    ids = [names.index(name) for name, _, _, _ in examples]
    inputs = [grid_tokens(grid) for _, grid, _, _ in examples]
    preds = [pred for _, _, pred, _ in examples]
    q = [q for _, _, _, q in examples]
    for _ in range(pad_to - len(examples)):  # padding rows: blank identifier, garbage tokens
        ids.append(0)
        inputs.append(np.full(GRID * GRID, 5))
        preds.append(np.full(GRID * GRID, 7))
        q.append(9.0)
    batch = {"inputs": torch.tensor(np.stack(inputs), dtype=torch.int32),
             "labels": torch.zeros(len(ids), GRID * GRID, dtype=torch.int32),
             "puzzle_identifiers": torch.tensor(ids, dtype=torch.int32)}
    outputs = {"preds": torch.tensor(np.stack(preds), dtype=torch.int64),
               "q_halt_logits": torch.tensor(q, dtype=torch.float32)}
    return batch, outputs


def examples_for(task: str, answer, q: float = 0.0, pairs=None):
    """One example per augmentation and test pair.

    `answer(pair_index, pair, trans, digits)` gives the predicted grid in the original frame; it is
    augmented like the input, as a model answering in the augmented frame would.
    """
    out = []
    for index, pair in enumerate(TASKS[task]["test"]):
        if pairs is not None and index not in pairs:
            continue
        for trans, digits in AUGMENTATIONS:
            grid = answer(index, pair, trans, digits)
            out.append((aug_name(task, trans, digits), augment(pair["input"], trans, digits),
                        grid_tokens(augment(grid, trans, digits)), q))
    return out


def oracle(index, pair, trans, digits):
    return pair["output"]


@pytest.fixture
def data_dir(tmp_path):
    names = write_arc_eval_data(tmp_path / "arc")
    return str(tmp_path / "arc"), names


def evaluate_examples(data_dir, examples, save_path=None, **kwargs):
    path, names = data_dir
    evaluator = ARC(path, metadata(), **kwargs)
    evaluator.begin_eval()
    for start in range(0, len(examples), 4):  # several batches, the last one padded
        evaluator.update_batch(*make_batch(examples[start:start + 4], names, pad_to=4))
    return evaluator.result(save_path, rank=0, world_size=1), evaluator


# ---------------------------------------------------------------------------------------------
# Crop and de-augmentation
# ---------------------------------------------------------------------------------------------
def reference_crop(tokens: np.ndarray) -> tuple[int, int]:
    """The crop (docs/arc-evaluator.md) cell by cell: scan rows, cut the column limit at the first non-colour token."""
    grid = tokens.reshape(GRID, GRID)
    best_area, best, limit = 0, (0, 0), GRID
    for rows in range(1, GRID + 1):
        for col in range(limit):
            if not 2 <= grid[rows - 1, col] <= 11:
                limit = col
                break
        if rows * limit > best_area:
            best_area, best = rows * limit, (rows, limit)
    return best


def test_crop_matches_cellwise_scan():
    rng = np.random.default_rng(0)
    grids = [grid_tokens(rng.integers(0, 10, (r, c))) for r, c in rng.integers(1, 31, (60, 2))]
    noisy = rng.integers(2, 12, (60, GRID * GRID))
    noisy[rng.random(noisy.shape) < 0.01] = 1  # scattered non-colour tokens: ragged rectangles
    special = np.stack([np.full(900, 5), np.zeros(900, np.int64), np.r_[[3], np.zeros(899, np.int64)]])
    tall = np.full((GRID, GRID), 4)
    tall[0, 10:], tall[1:, 3:] = 1, 0  # 1x10 (area 10) loses to 30x3 (area 90)
    tokens = np.concatenate([np.stack(grids), noisy, special, tall.reshape(1, -1)])
    rows, cols = crop_shapes(tokens)
    assert [(int(r), int(c)) for r, c in zip(rows, cols)] == [reference_crop(t) for t in tokens]
    assert (rows[-4], cols[-4]) == (30, 30) and (rows[-3], cols[-3]) == (0, 0) and (rows[-1], cols[-1]) == (30, 3)


@pytest.mark.parametrize("trans", range(8))
def test_canonical_keys_undo_each_augmentation(trans):
    rng = np.random.default_rng(trans)
    grid = rng.integers(0, 10, (3, 5))
    digits = "0" + "".join(map(str, rng.permutation(np.arange(1, 10))))
    _, parsed_trans, inverse = parse_augmentation(f"task|||t{trans}|||{digits}")
    assert parsed_trans == trans
    keys = canonical_keys(grid_tokens(augment(grid, trans, digits))[None], np.array([trans]), inverse[None])
    assert keys == [grid_key(grid)] == [bytes([3, 5]) + grid.astype(np.uint8).tobytes()]


def test_canonical_keys_of_a_mixed_batch():
    """Random shapes (1..30 per side), transforms and colour maps in one call, against dataset.common."""
    rng = np.random.default_rng(1)
    grids, tokens, trans, inverses = [], [], [], []
    for _ in range(64):
        grid = rng.integers(0, 10, rng.integers(1, 31, 2))
        digits = "".join(map(str, rng.permutation(10)))
        _, t, inverse = parse_augmentation(f"x|||t{rng.integers(8)}|||{digits}")
        grids.append(grid)
        tokens.append(grid_tokens(augment(grid, t, digits)))
        trans.append(t)
        inverses.append(inverse)
    keys = canonical_keys(np.stack(tokens), np.array(trans), np.stack(inverses))
    assert keys == [grid_key(grid) for grid in grids]


def test_parse_augmentation():
    name, trans, inverse = parse_augmentation("abc|||t3|||0321456789")
    assert (name, trans) == ("abc", 3) and inverse.tolist() == [0, 3, 2, 1, 4, 5, 6, 7, 8, 9]
    assert parse_augmentation("abc")[1] == 0
    for bad in ("abc|||t8|||0123456789", "abc|||t1|||0123", "abc|||x1|||0123456789", "abc|||t1|||0123456788"):
        with pytest.raises(ValueError, match="not 'task"):
            parse_augmentation(bad)


# ---------------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------------
def all_tasks(answer, q=0.0):
    return [e for task in ("alpha", "multi", "unseen") for e in examples_for(task, answer, q)]


def test_oracle_predictions_score_one(data_dir):
    result, _ = evaluate_examples(data_dir, all_tasks(oracle))
    assert result == {f"ARC/pass@{k}": 1.0 for k in (1, 2, 5, 10, 100, 1000)}


def test_constant_wrong_predictions_score_zero(data_dir):
    constant = np.full(GRID * GRID, 2)  # a 30x30 grid of colour 0 under every identifier
    examples = [(name, inp, constant, 1.0) for name, inp, _, _ in all_tasks(oracle)]
    result, _ = evaluate_examples(data_dir, examples)
    assert set(result.values()) == {0.0}


def test_right_only_under_one_augmentation_is_undone(data_dir):
    """Only the t1 member answers correctly (in its own rotated, recoloured frame); the others give
    distinct wrong grids, so every candidate has one vote and the confident t1 vote must win."""
    def answer(index, pair, trans, digits):
        return pair["output"] if trans == 1 else np.full_like(np.asarray(pair["output"]), 9 - trans)
    examples = examples_for("alpha", answer)
    # Give the correct (t1) vote the highest confidence: ties on count are decided by mean q.
    examples = [(n, i, p, 3.0 if "|||t1|||" in n else -3.0) for n, i, p, _ in examples]
    result, _ = evaluate_examples(data_dir, examples, pass_Ks=(1, 2))
    assert result == {"ARC/pass@1": 1 / 3, "ARC/pass@2": 1 / 3}  # alpha right; multi, unseen wrong

    # Feeding the *original-frame* answer under the augmented identifier is wrong once undone.
    name, inp, _, q = [e for e in examples if "|||t1|||" in e[0]][0]
    raw = grid_tokens(TASKS["alpha"]["test"][0]["output"])
    result, _ = evaluate_examples(data_dir, [(name, inp, raw, q)], pass_Ks=(1,))
    assert result == {"ARC/pass@1": 0.0}


def vote(task, trans_digits, grid, q, pair=0):
    trans, digits = trans_digits
    pair_data = TASKS[task]["test"][pair]
    return (aug_name(task, trans, digits), augment(pair_data["input"], trans, digits),
            grid_tokens(augment(grid, trans, digits)), q)


def test_votes_rank_by_count_then_mean_q_then_first_vote(data_dir, tmp_path):
    label = TASKS["alpha"]["test"][0]["output"]
    wrong_a, wrong_b = [[1]], [[2, 2]]
    a0, a1, a2 = AUGMENTATIONS
    logit = lambda p: float(np.log(p / (1 - p)))  # noqa: E731

    # Equal counts (2 each): the higher mean sigmoid(q) wins (0.9, 0.3 -> 0.6 beats 0.5, 0.5).
    examples = [vote("alpha", a0, wrong_a, logit(0.5)), vote("alpha", a1, label, logit(0.9)),
                vote("alpha", a2, wrong_a, logit(0.5)), vote("alpha", a0, label, logit(0.3))]
    result, _ = evaluate_examples(data_dir, examples, pass_Ks=(1, 2))
    assert result == {"ARC/pass@1": 1 / 3, "ARC/pass@2": 1 / 3}
    examples[1] = vote("alpha", a1, label, logit(0.6))  # now 0.45 < 0.5: the label drops to second
    result, _ = evaluate_examples(data_dir, examples, pass_Ks=(1, 2))
    assert result == {"ARC/pass@1": 0.0, "ARC/pass@2": 1 / 3}

    # More votes beat a higher mean q.
    examples = [vote("alpha", a0, wrong_b, logit(0.01)), vote("alpha", a1, wrong_b, logit(0.01)),
                vote("alpha", a2, wrong_b, logit(0.01)), vote("alpha", a0, label, logit(0.99)),
                vote("alpha", a1, label, logit(0.99))]
    result, _ = evaluate_examples(data_dir, examples, pass_Ks=(1, 2))
    assert result == {"ARC/pass@1": 0.0, "ARC/pass@2": 1 / 3}

    # Exact tie on (count, mean q): the candidate voted for first comes first.
    for first, second in ((wrong_a, wrong_b), (wrong_b, wrong_a)):
        save = tmp_path / f"tie{len(first[0])}"
        evaluate_examples(data_dir, [vote("alpha", a0, first, 0.0), vote("alpha", a1, second, 0.0)], str(save))
        with open(save / "submission.json") as f:
            attempts = json.load(f)["alpha"][0]
        assert attempts == {"attempt_1": first, "attempt_2": second}


def test_multi_pair_task_scores_fractions(data_dir):
    def half_right(index, pair, trans, digits):
        return pair["output"] if index == 0 else [[9]]
    result, _ = evaluate_examples(data_dir, examples_for("multi", half_right) + examples_for("alpha", oracle))
    assert result == {f"ARC/pass@{k}": (1.0 + 0.5 + 0.0) / 3 for k in (1, 2, 5, 10, 100, 1000)}  # alpha, multi, unseen


def test_blank_and_non_test_identifiers_are_ignored(data_dir):
    path, names = data_dir
    evaluator = ARC(path, metadata())
    batch, outputs = make_batch([("trainonly", [[1]], grid_tokens([[1]]), 0.0)], names, pad_to=3)
    evaluator.update_batch(batch, outputs)
    assert evaluator._votes == []
    with pytest.raises(ValueError, match="not in identifiers.json"):
        evaluator.update_batch({**batch, "puzzle_identifiers": torch.tensor([99, 0, 0], dtype=torch.int32)}, outputs)


def test_aggregated_voting_keeps_votes_across_evaluations(data_dir):
    path, names = data_dir
    right = examples_for("alpha", oracle, q=1.0)[:1]
    wrong = [vote("alpha", AUGMENTATIONS[1], [[4]], 1.0), vote("alpha", AUGMENTATIONS[2], [[4]], 1.0)]
    for aggregated, expected in ((True, 1 / 3), (False, 0.0)):
        evaluator = ARC(path, metadata(), pass_Ks=(2,), aggregated_voting=aggregated)
        evaluator.begin_eval()
        evaluator.update_batch(*make_batch(right, names))
        evaluator.result(None, rank=0, world_size=1)
        evaluator.begin_eval()
        evaluator.update_batch(*make_batch(wrong, names))
        assert evaluator.result(None, rank=0, world_size=1) == {"ARC/pass@2": expected}


# ---------------------------------------------------------------------------------------------
# submission.json
# ---------------------------------------------------------------------------------------------
def test_submission_is_valid_kaggle_format(data_dir, tmp_path):
    path, _ = data_dir
    examples = examples_for("alpha", oracle) + examples_for("multi", oracle, pairs=[1])
    alpha_input = TASKS["alpha"]["test"][0]["input"]
    examples.append(("alpha", np.asarray(alpha_input), np.zeros(GRID * GRID, np.int64), 5.0))  # crops to 0x0
    evaluate_examples(data_dir, examples, str(tmp_path / "out"), submission_K=3)
    with open(tmp_path / "out" / "submission.json") as f:
        submission = json.load(f)
    with open(os.path.join(path, "test_puzzles.json")) as f:
        assert_kaggle_submission(submission, json.load(f), attempts=3)
    assert submission["alpha"][0] == {"attempt_1": TASKS["alpha"]["test"][0]["output"], "attempt_2": [[0]],
                                      "attempt_3": TASKS["alpha"]["test"][0]["output"]}  # empty grid -> [[0]], padded
    assert submission["multi"][0] == {f"attempt_{k}": [[0]] for k in (1, 2, 3)}  # no predictions
    assert submission["multi"][1]["attempt_1"] == TASKS["multi"]["test"][1]["output"]
    assert submission["unseen"] == [{f"attempt_{k}": [[0]] for k in (1, 2, 3)}]


# ---------------------------------------------------------------------------------------------
# Several ranks and bad input
# ---------------------------------------------------------------------------------------------
def test_votes_of_several_ranks_are_pooled(data_dir, monkeypatch, tmp_path):
    """Rank payloads merged in rank order give exactly the single-process result and submission."""
    path, names = data_dir
    examples = all_tasks(lambda i, p, t, d: p["output"] if t != 6 else [[t]], q=0.0)
    examples = [(n, i, p, float(k % 5)) for k, (n, i, p, _) in enumerate(examples)]
    single, _ = evaluate_examples(data_dir, examples, str(tmp_path / "one"))

    ranks = [ARC(path, metadata()) for _ in range(2)]
    for k, evaluator in enumerate(ranks):
        evaluator.update_batch(*make_batch(examples[k * 6:(k + 1) * 6] if k == 0 else examples[6:], names))
    payloads = [evaluator._local_payload() for evaluator in ranks]
    monkeypatch.setattr(arc_eval, "_gather_to_main", lambda payload, rank, world_size, group: payloads)
    assert ranks[0].result(str(tmp_path / "two"), rank=0, world_size=2) == single
    with open(tmp_path / "one" / "submission.json") as a, open(tmp_path / "two" / "submission.json") as b:
        assert json.load(a) == json.load(b)
    monkeypatch.setattr(arc_eval, "_gather_to_main", lambda payload, rank, world_size, group: None)
    assert ranks[1].result(None, rank=1, world_size=2) is None


def test_world_size_without_process_group_is_an_error(data_dir):
    evaluator = ARC(data_dir[0], metadata())
    with pytest.raises(RuntimeError, match="not initialised"):
        evaluator.result(None, rank=0, world_size=2)


def test_bad_data_is_a_clear_error(tmp_path, data_dir):
    with pytest.raises(ConfigError, match="test_puzzles.json not found.*evaluators=\\[\\]"):
        ARC(str(tmp_path), metadata())
    with pytest.raises(ConfigError, match="seq_len 900"):
        ARC(data_dir[0], metadata(seq_len=81))
