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
