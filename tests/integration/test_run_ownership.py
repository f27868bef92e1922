"""A run directory belongs to its run (rundir/ownership.py), in real runs: a new run refuses a directory that holds
an earlier run or anything else, a link to such a folder included, before writing anything there; resume=auto that
finds no state starts only where nothing but a run's own files lie. (The names a run writes, and pruning only the
run's own checkpoints: tests/unit/test_rundir_layout.py.)"""
import os

import pytest

from rundir.layout import LOCK_FILE
from tests.helpers import TINY_ARCH, compose_config, cpu_context, read_metrics
from training.config import parse_config
from utils.errors import ConfigError

RUN = [*TINY_ARCH, "global_batch_size=16", "epochs=2", "eval_interval=2", "lr_warmup_steps=1", "evaluators=[]",
       "wandb_mode=disabled", "num_workers=0"]


def train_in_process(data: str, run_dir, *extra: str):
    from training.loop import train
    raw = compose_config([f"data_paths=[{data}]", *RUN, f"+checkpoint_path={run_dir}", *extra])
    return train(parse_config(raw), cpu_context())


def snapshot(directory) -> dict[str, bytes | None]:
    """Every path under `directory` (links not followed) with a file's bytes."""
    found = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = os.path.join(root, name)
            found[os.path.relpath(path, directory)] = open(path, "rb").read() if os.path.isfile(path) else None
    return found


def test_a_new_run_refuses_a_directory_holding_an_earlier_run(copy_task, tmp_path):
    run_dir = tmp_path / "run"
    train_in_process(copy_task, run_dir, "stop_at_step=2")
    before = snapshot(run_dir)
    with pytest.raises(ConfigError, match=r"already holds .*all_config\.yaml.*resume=auto.*\+checkpoint_path=DIR"):
        train_in_process(copy_task, run_dir)
    assert snapshot(run_dir) == before  # config not overwritten, metrics not appended to, no lock left
    assert not os.path.exists(run_dir / LOCK_FILE)
    train_in_process(copy_task, run_dir, "resume=auto")  # the run itself continues
    assert [m["step"] for m in read_metrics(str(run_dir)) if "train/lm_loss" in m] == list(range(1, 9))


def test_a_link_to_a_folder_of_user_files_is_refused_by_a_new_run_and_by_resume_auto(copy_task, tmp_path):
    folder = tmp_path / "thesis"
    (folder / "train_state_step_3").mkdir(parents=True)
    (folder / "train_state_step_3" / "notes.txt").write_text("mine")
    (folder / "step_5").write_text("mine too")
    (folder / "all_config.yaml").write_text("a: 1\n")
    (folder / "thesis.tex").write_text("\\documentclass{article}")
    link = tmp_path / "run"
    link.symlink_to(folder)
    before = snapshot(folder)
    with pytest.raises(ConfigError, match=r"already holds all_config\.yaml, step_5, thesis\.tex, train_state_step_3"):
        train_in_process(copy_task, link)
    with pytest.raises(ConfigError, match=r"resume=auto found no training state .*thesis\.tex, "
                                          r"train_state_step_3/notes\.txt, which no run wrote"):
        train_in_process(copy_task, link, "resume=auto")
    assert snapshot(folder) == before


def test_resume_auto_without_a_state_starts_where_only_a_run_wrote(copy_task, tmp_path, monkeypatch):
    """A run killed before its first save left its config, sources and metrics: resume=auto starts it again."""
    import training.loop

    def killed(*args):
        raise RuntimeError("killed before the first save")

    with monkeypatch.context() as patch:
        patch.setattr(training.loop, "run_iterations", killed)
        with pytest.raises(RuntimeError):
            train_in_process(copy_task, tmp_path / "run")
    assert os.path.isfile(tmp_path / "run" / "all_config.yaml")
    train_in_process(copy_task, tmp_path / "run", "resume=auto")
    assert [m["step"] for m in read_metrics(str(tmp_path / "run")) if "train/lm_loss" in m] == list(range(1, 9))


def test_resume_from_a_state_into_a_folder_of_user_files_is_refused(copy_task, tmp_path):
    train_in_process(copy_task, tmp_path / "run", "stop_at_step=2")
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.tex").write_text("\\documentclass{article}")
    with pytest.raises(ConfigError, match=r"resume=PATH continues .*train_state_step_2 into a directory without a "
                                          r"training state .*thesis\.tex, which no run wrote"):
        train_in_process(copy_task, folder, f"resume={tmp_path / 'run' / 'train_state_step_2'}")
    assert os.listdir(folder) == ["thesis.tex"]
