"""pretrain.py with a bad config or setup, as a user runs it (a subprocess; two processes under torchrun): one
clear message, printed once, no traceback, and nothing generated or written."""
import os
import time

import pytest

from tests.helpers import TINY_ARCH, run_pretrain


@pytest.mark.parametrize("args, message", [
    (["+arch.L_cylces=4"], "arch.L_cylces: unknown key"),
    (["arch.L_cylces=4"], "arch.L_cylces is not a key of the configuration; did you mean arch.L_cycles?"),
    (["epocs=4"], "epocs is not a key of the configuration; did you mean epochs?"),
    (["+lr_typo=1"], "lr_typo: unknown key"),
    (["eval_interval=3"], "eval_interval (3) must be >= 1 and divide epochs"),
    (["arch.pos_encodings=sinusoid"], "arch.pos_encodings"),
], ids=["arch_plus", "arch_no_plus", "top_level_no_plus", "top_level", "eval_interval", "bad_value"])
def test_config_errors_are_clear(copy_task, args, message):
    result = run_pretrain([f"data_paths=[{copy_task}]", "evaluators=[]", "epochs=4", "eval_interval=2", *args])
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert "To append to your config" not in result.stderr  # Hydra's advice (add `+`) is the wrong fix for a typo


@pytest.mark.parametrize("args, message", [
    (["+arch.L_cylces=4"], "arch.L_cylces: unknown key"),
    (["arch.halt_max_steps=many"], "arch.halt_max_steps: Input should be a valid integer"),
    (["arch=hrm", "+arch.no_ACT_continue=false"], "arch.no_ACT_continue: not a key of this architecture"),
    (["+arch.seq_len=81"], "arch.seq_len: set by the trainer from the dataset"),
], ids=["misspelt", "mistyped", "other_member", "derived"])
def test_bad_arch_key_stops_before_any_data_is_generated(tmp_path, args, message):
    """The quick demo generates its dataset on first use: a bad arch key must stop first, and quickly."""
    start = time.monotonic()
    result = run_pretrain(["--config-name", "quickstart", *args], cwd=str(tmp_path))
    elapsed = time.monotonic() - start
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not os.path.exists(tmp_path / "data"), "the dataset was generated before the config was checked"
    assert elapsed < 5, f"took {elapsed:.1f} s"


def test_missing_dataset_is_clear(tmp_path):
    result = run_pretrain([f"data_paths=[{tmp_path / 'missing'}]", "evaluators=[]"])
    assert result.returncode != 0
    assert "does not exist" in result.stderr and "build" in result.stderr
    assert "Traceback" not in result.stderr


def test_unavailable_evaluator_is_an_error(copy_task):
    result = run_pretrain([f"data_paths=[{copy_task}]", "evaluators=[{name: nonexistent@Nope}]", "epochs=4",
                           "eval_interval=4",
                           *TINY_ARCH, "global_batch_size=16"])
    assert result.returncode != 0
    assert "evaluator 'nonexistent@Nope' is not available" in result.stderr


NO_GPUS = {"CUDA_VISIBLE_DEVICES": ""}  # device=cuda must fail here as on a machine without a GPU


@pytest.mark.parametrize("args, message", [
    (["device=cuda"], "Requested device 'cuda' but CUDA is not available"),
    (["arch.name=recursive_reasoning.nope@Model"], "arch.name: Model name 'recursive_reasoning.nope@Model'"),
    (["weight_decay=-3"], "weight_decay must be >= 0"),
], ids=["no_gpu", "bad_arch_name", "negative_weight_decay"])
def test_bad_setups_give_one_message_and_no_traceback(copy_task, args, message):
    result = run_pretrain([f"data_paths=[{copy_task}]", "evaluators=[]", "epochs=1", "eval_interval=1", *args],
                          env=NO_GPUS)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.count(message) == 1, result.stderr[-2000:]


def test_batch_not_divisible_by_processes_is_reported_once(copy_task, tmp_path):
    from tests.helpers import TINY_ARCH
    result = run_pretrain([f"data_paths=[{copy_task}]", "evaluators=[]", *TINY_ARCH, "epochs=1", "eval_interval=1",
                           "global_batch_size=15", "device=cpu", f"+checkpoint_path={tmp_path / 'run'}"],
                          nproc=2, env=NO_GPUS)
    # torchrun itself reports a failed child with its own traceback; none comes from our processes.
    assert result.returncode != 0 and 'pretrain.py", line' not in result.stderr, result.stderr[-3000:]
    message = "global_batch_size (15) must be divisible by the number of processes (2)"
    assert result.stderr.count(message) == 1, result.stderr[-3000:]
    assert not (tmp_path / "run").exists()
