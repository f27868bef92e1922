"""The keys of the small recipes, checked before any data is read: `max_eval_examples` (training) and
`generate_if_missing: {kind: arc, ...}` (config/quickstart_arc.yaml)."""
import pytest

from tests.helpers import compose_config
from training.config import parse_config
from utils.errors import ConfigError


def test_max_eval_examples_is_checked():
    assert parse_config(compose_config(["data_paths=[unused]"])).max_eval_examples is None  # all, as published
    assert parse_config(compose_config(["data_paths=[unused]", "max_eval_examples=64"])).max_eval_examples == 64
    for bad in ("0", "many"):
        with pytest.raises(ConfigError, match="max_eval_examples"):
            parse_config(compose_config(["data_paths=[unused]", f"max_eval_examples={bad}"]))


@pytest.mark.parametrize("overrides, match", [
    (["+generate_if_missing.num_train=100"], "num_train does not apply to kind=arc"),
    (["generate_if_missing.max_tasks=2"], "tasks and max_tasks both select"),
    (["generate_if_missing.tasks=null", "generate_if_missing.max_tasks=0"], "max_tasks must be >= 1"),
    (["+generate_if_missing.aug=true"], "aug is Maze's"),
    (["generate_if_missing.kind=sudoku", "generate_if_missing.tasks=null", "+generate_if_missing.num_test=8"],
     "num_train is missing"),
    (["generate_if_missing.kind=maze", "+generate_if_missing.num_train=8", "+generate_if_missing.num_test=8"],
     "tasks and max_tasks select ARC tasks"),
])
def test_generated_arc_keys_are_checked(overrides, match):
    assert parse_config(compose_config([], "quickstart_arc")).generate_if_missing.kind == "arc"
    with pytest.raises(ConfigError, match=match):
        parse_config(compose_config(overrides, "quickstart_arc"))
