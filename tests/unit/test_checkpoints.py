"""Bad values and bad files are named before anything runs (issue 13 findings 5, 8, 9, 10, 12)."""
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


# ---------------------------------------------------------------------------------------------
# Finding 9 (and 8's load_checkpoint case): messages that say what is wrong, never unsafe advice
# ---------------------------------------------------------------------------------------------
def test_resume_from_a_run_directory_says_to_name_a_state(tmp_path):
    from rundir.states import load_train_state
    from utils.errors import CheckpointError
    (tmp_path / "train_state_step_4").mkdir()
    (tmp_path / "step_4").write_bytes(b"")
    with pytest.raises(CheckpointError) as err:
        load_train_state(str(tmp_path))
    message = str(err.value)
    assert "fewer processes" not in message
    assert "is a run directory" in message and "train_state_step_4" in message and "resume=auto" in message


def test_random_file_as_checkpoint_gives_no_unsafe_advice(tmp_path):
    from rundir.states import safe_load
    from utils.errors import CheckpointError
    path = tmp_path / "notes.txt"
    path.write_text("these are not weights\n")
    with pytest.raises(CheckpointError) as err:
        safe_load(str(path))
    message = str(err.value)
    assert str(path) in message and "not a PyTorch checkpoint" in message
    assert "weights_only" not in message and "earlier one" not in message


def _tiny_config(copy_task, tmp_path, *overrides, arch=None):
    from tests.helpers import TINY_ARCH
    arch = TINY_ARCH if arch is None else arch
    return parse_config(compose_config([f"data_paths=[{copy_task}]", "evaluators=[]", *arch, "global_batch_size=16",
                                        "epochs=1", "eval_interval=1", "wandb_mode=disabled", "num_workers=0",
                                        f"+checkpoint_path={tmp_path / 'run'}", *overrides]))


def _saved_head(copy_task, tmp_path, *overrides) -> str:
    import torch

    from tests.helpers import build_head, train_metadata
    config = _tiny_config(copy_task, tmp_path, *overrides)
    path = tmp_path / f"weights{len(overrides)}.pt"
    torch.save(build_head(config, train_metadata(config)).state_dict(), path)
    return str(path)


def test_load_checkpoint_of_another_width_is_named_not_crashed(copy_task, tmp_path):
    from tests.helpers import cpu_context, train_metadata
    from training.state import init_train_state
    from utils.errors import CheckpointError
    narrow = _saved_head(copy_task, tmp_path)  # hidden 32
    config = _tiny_config(copy_task, tmp_path, "arch.hidden_size=64", f"+load_checkpoint={narrow}")
    with pytest.raises(CheckpointError, match=r"does not fit this model.*puzzle_emb.weights.*\(65, 32\).*\(65, 64\)"):
        init_train_state(config, train_metadata(config), cpu_context())


def test_load_checkpoint_of_another_variant_is_named(copy_task, tmp_path):
    from tests.helpers import cpu_context, train_metadata
    from training.state import init_train_state
    from utils.errors import CheckpointError
    trm = _saved_head(copy_task, tmp_path)
    hrm = ["arch=hrm", "arch.hidden_size=32", "arch.num_heads=2", "arch.H_layers=1", "arch.L_layers=1",
           "arch.forward_dtype=float32"]
    config = _tiny_config(copy_task, tmp_path, f"+load_checkpoint={trm}", arch=hrm)
    with pytest.raises(CheckpointError, match=r"load_checkpoint .* does not fit this model.*H_level"):
        init_train_state(config, train_metadata(config), cpu_context())


# ---------------------------------------------------------------------------------------------
# Finding 5: evaluate.py checks the dataset against the checkpoint and never overwrites silently
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(copy_task, tmp_path_factory) -> str:
    from tests.helpers import TINY_ARCH, cpu_context
    from training.loop import train
    run_dir = tmp_path_factory.mktemp("run")
    train(parse_config(compose_config([f"data_paths=[{copy_task}]", "evaluators=[]", *TINY_ARCH,
                                       "global_batch_size=16", "epochs=1", "eval_interval=1", "wandb_mode=disabled",
                                       "num_workers=0", f"+checkpoint_path={run_dir}"])), cpu_context())
    return str(run_dir)


def _evaluate(run_dir: str, **keys):
    import evaluate as evaluate_cli
    from tests.helpers import cpu_context
    return evaluate_cli.run(evaluate_cli.EvaluateConfig(checkpoint=run_dir, device="cpu", num_workers=0, **keys),
                            cpu_context())


@pytest.mark.integration
def test_evaluate_refuses_a_dataset_of_another_shape(tiny_run, tmp_path):
    from dataset.build_copy_dataset import write_copy_task
    other = write_copy_task(str(tmp_path / "longer"), num_train_puzzles=64, num_test_puzzles=8, seq_len=12,
                            vocab_size=6, num_puzzle_identifiers=65)
    with pytest.raises(ConfigError, match=r"has seq_len 12, but .* was trained on seq_len 8"):
        _evaluate(tiny_run, data_paths=[other], output_dir=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
def test_evaluate_never_overwrites_an_earlier_evaluation_unless_asked(tiny_run, tmp_path):
    out = tmp_path / "out"
    first = _evaluate(tiny_run, output_dir=str(out))
    (out / "metrics.json").write_text('{"mine": 1}')
    with pytest.raises(ConfigError, match=r"metrics\.json already exists.*overwrite=true"):
        _evaluate(tiny_run, output_dir=str(out))
    assert (out / "metrics.json").read_text() == '{"mine": 1}'
    assert _evaluate(tiny_run, output_dir=str(out), overwrite=True) == first


# ---------------------------------------------------------------------------------------------
# Finding 8: one clear message, printed once, non-zero exit
# ---------------------------------------------------------------------------------------------
def _pretrain(args: list[str], nproc: int = 1, cwd=None):
    import os
    import subprocess
    import sys

    from tests.helpers import REPO_ROOT
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    launcher = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                    "--nproc-per-node", str(nproc)]
    return subprocess.run([*launcher, os.path.join(REPO_ROOT, "pretrain.py"), *args], cwd=cwd or REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.integration
@pytest.mark.parametrize("args, message", [
    (["device=cuda"], "Requested device 'cuda' but CUDA is not available"),
    (["arch.name=recursive_reasoning.nope@Model"], "arch.name: Model name 'recursive_reasoning.nope@Model'"),
    (["weight_decay=-3"], "weight_decay must be >= 0"),
], ids=["no_gpu", "bad_arch_name", "negative_weight_decay"])
def test_bad_setups_give_one_message_and_no_traceback(copy_task, args, message):
    result = _pretrain([f"data_paths=[{copy_task}]", "evaluators=[]", "epochs=1", "eval_interval=1", *args])
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.count(message) == 1, result.stderr[-2000:]


@pytest.mark.integration
def test_batch_not_divisible_by_processes_is_reported_once(copy_task, tmp_path):
    from tests.helpers import TINY_ARCH
    result = _pretrain([f"data_paths=[{copy_task}]", "evaluators=[]", *TINY_ARCH, "epochs=1", "eval_interval=1",
                        "global_batch_size=15", "device=cpu", f"+checkpoint_path={tmp_path / 'run'}"], nproc=2)
    # torchrun itself reports a failed child with its own traceback; none comes from our processes.
    assert result.returncode != 0 and 'pretrain.py", line' not in result.stderr, result.stderr[-3000:]
    message = "global_batch_size (15) must be divisible by the number of processes (2)"
    assert result.stderr.count(message) == 1, result.stderr[-3000:]
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------
# Finding 6: a full disk is one line naming the path and the bytes
# ---------------------------------------------------------------------------------------------
def test_disk_full_is_one_clear_line_and_leaves_nothing_behind(tmp_path):
    import errno

    from utils.atomic import write_atomically
    from utils.errors import DiskFullError, UserFacingError
    target = tmp_path / "step_7"

    def write_until_full(f):
        f.write(b"x" * 4096)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskFullError) as err:
        write_atomically(str(target), write_until_full)
    message = str(err.value)
    assert isinstance(err.value, UserFacingError) and "\n" not in message
    assert str(target) in message and "No space left" in message and "4096 bytes" in message
    assert list(tmp_path.iterdir()) == []  # no partial file, no temporary


@pytest.mark.parametrize("path, expected", [
    ("data/arc1concept-aug-1000", "dataset.assemble_arc_data --output-dir kaggle/combined` and then `python -m "
     "dataset.build_arc_dataset --input-file-prefix kaggle/combined/arc-agi --output-dir data/arc1concept-aug-1000 "
     "--subsets training evaluation concept --test-set-name evaluation`"),
    ("data/arc2concept-aug-1000", "--subsets training2 evaluation2 concept --test-set-name evaluation2"),
    ("data/maze-30x30-hard-1k", "python dataset/build_maze_dataset.py --output-dir data/maze-30x30-hard-1k"),
    ("data/sudoku-extreme-1k-aug-1000", "python dataset/build_sudoku_dataset.py --output-dir data/sudoku-extreme"),
    ("data/my set", "one of the builders in dataset/"),
])
def test_a_missing_dataset_names_the_builder_of_its_task(tmp_path, path, expected):
    """A bare `python pretrain.py` names the ARC dataset: the hint must be the ARC commands, not Sudoku's."""
    from dataset.common import DatasetNotFoundError, load_metadata
    with pytest.raises(DatasetNotFoundError) as err:
        load_metadata(str(tmp_path / path), "train")
    assert expected.replace("data/", str(tmp_path) + "/data/") in str(err.value) or expected in str(err.value)
