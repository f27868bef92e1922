"""The typed training config (training/config.py) rejects bad values before anything runs, naming the key."""
import pytest

from tests.helpers import compose_config
from training.config import parse_config
from utils.errors import ConfigError


@pytest.mark.parametrize("override, message", [
    ("lr=-1", "lr must be >= 0"),
    ("puzzle_emb_lr=-5", "puzzle_emb_lr must be >= 0"),
    ("weight_decay=-3", "weight_decay must be >= 0"),
    ("puzzle_emb_weight_decay=-0.5", "puzzle_emb_weight_decay must be >= 0"),
    ("lr_min_ratio=5", "lr_min_ratio must be in [0, 1]"),
    ("lr_min_ratio=-0.1", "lr_min_ratio must be in [0, 1]"),
])
def test_out_of_range_optimizer_values_are_rejected(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_config(compose_config(["data_paths=[unused]", override]))


def test_in_range_values_are_accepted():
    config = parse_config(compose_config(["data_paths=[unused]", "lr=0", "lr_min_ratio=0", "weight_decay=0"]))
    assert config.lr == 0 and config.lr_min_ratio == 0


def test_freeze_weights_without_a_puzzle_embedding_is_rejected():
    from utils.errors import ConfigError
    raw = compose_config(["data_paths=[unused]", "freeze_weights=true", "arch.puzzle_emb_ndim=0"])
    with pytest.raises(ConfigError, match="freeze_weights=True trains only the puzzle embedding"):
        parse_config(raw)


@pytest.mark.parametrize("override, message", [
    ("seed=-1", "seed must be >= 0"),
    ("lr=nan", "lr must be a finite number"),
    ("lr=inf", "lr must be a finite number"),
    ("beta2=nan", "beta2 must be a finite number"),
    ("ema_rate=nan", "ema_rate must be a finite number"),
    ("+run_name=../../../x", "run_name"),
    ("+run_name=a/b", "run_name"),
    ("+project_name=..", "project_name"),
    ("+generate_if_missing={kind: sudoku, num_train: 0, num_test: 4}", "generate_if_missing.num_train must be >= 1"),
    ("+generate_if_missing={kind: maze, num_train: 4, num_test: 0}", "generate_if_missing.num_test must be >= 1"),
])
def test_issue23_d_invalid_values_are_one_message(override, message):
    """Issue 23 D: each stops at the config, naming the key, before any run directory exists."""
    with pytest.raises(ConfigError, match=message):
        parse_config(compose_config(["data_paths=[unused]", override]))


@pytest.mark.parametrize("override", ["arch.loss.loss_type=mse", "+arch.loss.bogus=1"])
def test_issue23_d_bad_loss_keys_are_named_without_a_traceback(override):
    with pytest.raises(ConfigError, match="arch.loss."):
        parse_config(compose_config(["data_paths=[unused]", override]))


def test_the_torch_free_loss_types_are_the_loss_heads():
    from models.arch import LOSS_TYPES
    from models.losses import LOSS_FUNCTIONS
    assert sorted(LOSS_TYPES) == sorted(LOSS_FUNCTIONS)


def test_issue23_d_unknown_eval_save_outputs_are_named():
    with pytest.raises(ConfigError, match="eval_save_outputs: unknown output.*predz"):
        parse_config(compose_config(["data_paths=[unused]", "eval_save_outputs=[preds,predz]"]))
    assert parse_config(compose_config(["data_paths=[unused]", "eval_save_outputs=[inputs,preds]"]))


def test_issue26_run_slugs_do_not_follow_the_seeded_global_stream():
    """Every run seeds Python's `random` (seed_everything); the slug of the next run in the same process (a
    sweep's second job) was then the same every time (`urban-chimera`)."""
    import random

    from training.config import random_slug
    pairs = []
    for _ in range(3):
        random.seed(0)
        first = random_slug()
        random.seed(0)
        pairs.append((first, random_slug()))
    assert any(a != b for a, b in pairs), pairs
    assert all(len(a.split("-")) == 2 for a, _ in pairs)
