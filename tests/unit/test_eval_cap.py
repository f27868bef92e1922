"""The evaluation cap `max_eval_examples` (evaluate.py key here; the training key in test_small_recipe_keys.py): the
first N test examples of each test set, rounded up to whole groups, the same on every rank; ARC scores the tasks
evaluated."""
import numpy as np
import pytest

import evaluate as evaluate_cli
from dataset import build_arc_dataset
from dataset.common import load_metadata, write_set
from dataset.puzzle_dataset import PuzzleDataset, PuzzleDatasetConfig, capped_size
from evaluators.base import EvaluatorConfig
from tests.helpers import write_tiny_arc_source
from tests.unit.test_arc_evaluator import TASKS, evaluate_examples, examples_for, oracle, write_arc_eval_data
from training.evaluation import create_evaluators
from utils.errors import ConfigError

# 10 examples in puzzles of 1, 2, 3 and 4; groups of 2 puzzles: examples 0-2 and 3-9.
PUZZLE_INDICES, GROUP_INDICES = np.array([0, 1, 3, 6, 10]), np.array([0, 2, 4])


@pytest.mark.parametrize("cap, expected", [(None, 10), (1, 3), (3, 3), (4, 10), (10, 10), (1000, 10)])
def test_the_cap_rounds_up_to_whole_groups(cap, expected):
    assert capped_size(PUZZLE_INDICES, GROUP_INDICES, cap) == expected


@pytest.fixture
def test_split(tmp_path):
    inputs = np.stack([np.arange(10), np.ones(10), np.ones(10)], axis=1).astype(np.uint8) + 1  # row i starts i+1
    write_set(str(tmp_path), "test", inputs, inputs, puzzle_sizes=[1, 2, 3, 4], group_sizes=[2, 2],
              puzzle_identifiers=[1, 2, 3, 4], vocab_size=16, num_puzzle_identifiers=5, pad_id=0,
              ignore_label_id=None, blank_identifier_id=0)
    return str(tmp_path)


def evaluated_rows(path: str, cap: int | None, batch: int = 2, rank: int = 0, replicas: int = 1) -> list[int]:
    """The first token (example index + 1) of every real row a rank's loader yields."""
    dataset = PuzzleDataset(PuzzleDatasetConfig(seed=0, dataset_paths=[path, path], global_batch_size=batch,
                                                test_set_mode=True, epochs_per_iter=1, rank=rank,
                                                num_replicas=replicas, max_examples=cap), split="test")
    batches = [b for _, b, _ in dataset]
    assert dataset.num_test_batches() == len(batches)  # the progress bar's total
    return [int(r) for b in batches for r in b["inputs"][:, 0] if r]


def test_the_loader_yields_the_first_whole_groups_of_each_set_on_every_rank(test_split):
    assert evaluated_rows(test_split, None) == list(range(1, 11)) * 2  # both paths, everything
    assert evaluated_rows(test_split, 2) == [1, 2, 3] * 2  # each path's first group
    # Two processes split the same capped examples between them.
    ranks = [evaluated_rows(test_split, 2, batch=2, rank=r, replicas=2) for r in range(2)]
    assert sorted(ranks[0] + ranks[1]) == sorted([1, 2, 3] * 2)
    summary = PuzzleDataset(PuzzleDatasetConfig(seed=0, dataset_paths=[test_split], global_batch_size=2,
                                                test_set_mode=True, epochs_per_iter=1, rank=0, num_replicas=1,
                                                max_examples=2), split="test").cap_summary()
    assert summary.startswith("max_eval_examples=2: evaluating 3 of 10 test examples, whole groups (1 of 2 groups")


@pytest.fixture
def arc_dir(tmp_path):
    names = write_arc_eval_data(tmp_path / "arc")
    return str(tmp_path / "arc"), names


def test_capped_arc_scores_only_the_tasks_evaluated(arc_dir, tmp_path):
    alpha_only = examples_for("alpha", oracle)
    published, evaluator = evaluate_examples(arc_dir, alpha_only, pass_Ks=(1,))
    assert published == {"ARC/pass@1": 1 / len(TASKS)}  # the tasks without a vote count as failures
    evaluator.scores_unseen_tasks = False
    assert evaluator.result(None, rank=0, world_size=1) == {"ARC/pass@1": 1.0}  # alpha, the one task evaluated

    # The loop tells the evaluators when the evaluation is capped.
    built = str(tmp_path / "built")
    build_arc_dataset.main(["--input-file-prefix", write_tiny_arc_source(str(tmp_path / "kaggle")), "--output-dir",
                            built, "--num-aug", "1", "--subsets", "training", "evaluation"])
    for capped in (False, True):
        (entry,) = create_evaluators([EvaluatorConfig(name="arc@ARC")], [built], load_metadata(built, "test"),
                                     capped=capped)
        assert entry.evaluator.scores_unseen_tasks is not capped


def test_the_evaluate_key_is_checked_and_names_the_output_dir():
    for bad in ("0", "many"):
        with pytest.raises(ConfigError, match="max_eval_examples"):
            evaluate_cli.parse_args(["checkpoint=x", f"max_eval_examples={bad}"])
    args = evaluate_cli.parse_args(["checkpoint=x", "max_eval_examples=50"])
    assert "max_eval_examples50" in evaluate_cli.evaluation_choices(args)  # its own output_dir
