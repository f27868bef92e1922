"""The best checkpoint (checkpoint_best_metric), evaluate.py which=best and tta=K, and hf:// checkpoints offline."""
import json
import os
import shutil

import pytest
import torch

import evaluate as evaluate_cli
from rundir.best import file_sha256
from rundir.layout import BEST_FILE, BEST_WEIGHTS, CONFIG_FILE
from tests.helpers import TINY_EVAL_ARCH, compose_config, cpu_context, offline_hub_folder, read_metrics
from training.best import best_on_resume, improves
from training.config import parse_config
from training.loop import train
from utils.errors import CheckpointError, ConfigError

# 64 copy puzzles / batch 16, one evaluation per epoch: 6 evaluations.
RUN = [*TINY_EVAL_ARCH, "global_batch_size=16", "epochs=6", "eval_interval=1", "lr=3e-3", "lr_warmup_steps=2",
       "evaluators=[]", "wandb_mode=disabled", "num_workers=0", "checkpoint_every_eval=true"]


def run_training(data: str, run_dir, *extra: str):
    config = parse_config(compose_config([f"data_paths=[{data}]", *RUN, f"+checkpoint_path={run_dir}", *extra]))
    return train(config, cpu_context())


def evaluations(run_dir) -> dict[int, dict]:
    return {m["step"]: m for m in read_metrics(str(run_dir)) if "all/lm_loss" in m}


@pytest.fixture(scope="module")
def best_run(copy_task, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("best") / "run"
    run_training(copy_task, run_dir, "checkpoint_best_metric=all/lm_loss", "checkpoint_best_mode=min",
                 "checkpoint_keep_last=1")
    return run_dir


def test_best_checkpoint_is_the_best_evaluation_and_survives_pruning(best_run, capsys):
    evals = evaluations(best_run)
    assert len(evals) == 6
    best_step = min(evals, key=lambda s: evals[s]["all/lm_loss"])
    with open(best_run / BEST_FILE) as f:
        best = json.load(f)
    assert {k: best[k] for k in ("step", "metric", "value", "mode")} == {
        "step": best_step, "metric": "all/lm_loss", "value": evals[best_step]["all/lm_loss"], "mode": "min"}
    assert best["sha256"] == file_sha256(best_run / BEST_WEIGHTS)  # the record names the weights it goes with
    assert os.path.isfile(best_run / BEST_WEIGHTS)
    assert sorted(n for n in os.listdir(best_run) if n.startswith("step_")) == ["step_24", BEST_WEIGHTS]
    # evaluate.py which=best scores step_best as the run scored that step.
    flat = evaluate_cli.run(evaluate_cli.parse_args([f"checkpoint={best_run}", "which=best", "num_workers=0",
                                                     "device=cpu"]), cpu_context())
    assert flat["all/lm_loss"] == pytest.approx(best["value"], rel=1e-6)
    assert os.path.isfile(best_run / f"eval_{BEST_WEIGHTS}" / "metrics.json")
    with open(best_run / f"eval_{BEST_WEIGHTS}" / "metrics.json") as f:
        assert json.load(f)["step"] == best_step


def test_best_is_printed_in_the_summary(copy_task, tmp_path, capsys):
    run_training(copy_task, tmp_path / "run", "checkpoint_best_metric=all/exact_accuracy", "epochs=2")
    out = capsys.readouterr().out
    assert f"best: {tmp_path / 'run' / BEST_WEIGHTS} (step " in out
    assert "eval at step 4: all/exact_accuracy " in out and "eval at step 8: " in out
    assert "checkpoint: " + str(tmp_path / "run" / "step_8") in out


def test_an_unknown_best_metric_names_the_available_ones(copy_task, tmp_path):
    with pytest.raises(ConfigError, match=r"checkpoint_best_metric='ARC/pass@2' is not among .*all/exact_accuracy"):
        run_training(copy_task, tmp_path / "run", "checkpoint_best_metric=ARC/pass@2", "epochs=1")


def test_improves_and_resume_rules(tmp_path):
    assert improves(0.5, None, "max") and not improves(float("nan"), None, "max")
    assert improves(0.6, {"value": 0.5}, "max") and not improves(0.5, {"value": 0.5}, "max")
    assert improves(0.4, {"value": 0.5}, "min") and not improves(0.6, {"value": 0.5}, "min")
    (tmp_path / BEST_FILE).write_text(json.dumps({"step": 12, "metric": "m", "value": 1.0, "mode": "max"}))
    assert best_on_resume(str(tmp_path), 12)["step"] == 12
    assert best_on_resume(str(tmp_path), 8) is None  # recorded by an attempt the resume supersedes


def test_which_best_without_a_best_checkpoint_is_clear(copy_task, tmp_path):
    run_training(copy_task, tmp_path / "run", "epochs=1")
    with pytest.raises(CheckpointError, match="no step_best.*checkpoint_best_metric"):
        evaluate_cli.run(evaluate_cli.parse_args([f"checkpoint={tmp_path / 'run'}", "which=best"]), cpu_context())


def test_evaluate_tta_on_a_dataset_without_transforms_is_refused(best_run):
    with pytest.raises(ConfigError, match="defined for sudoku, maze.*generic"):
        evaluate_cli.run(evaluate_cli.parse_args([f"checkpoint={best_run}", "tta=2", "output_dir=/nonexistent/x",
                                                  "num_workers=0"]), cpu_context())


# ---------------------------------------------------------------------------------------------
# hf:// checkpoints, from a hub cache laid out by the test (HF_HUB_OFFLINE=1)
# ---------------------------------------------------------------------------------------------
REPO, COMMIT = "someone/trm-copy", "89abcdef0123456789abcdef0123456789abcdef"


@pytest.fixture
def offline_hub(best_run, tmp_path, monkeypatch):
    """The best run's step_24 and all_config.yaml published as someone/trm-copy/copy/step_24, in a local cache."""
    folder = offline_hub_folder(monkeypatch, tmp_path / "hub", REPO, COMMIT, "copy")
    for name in ("step_24", CONFIG_FILE):
        shutil.copy(best_run / name, folder / name)
    return f"hf://{REPO}/copy/step_24"


def test_evaluate_a_hub_checkpoint_offline(offline_hub, best_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    flat = evaluate_cli.run(evaluate_cli.parse_args([f"checkpoint={offline_hub}", "num_workers=0"]), cpu_context())
    assert flat["all/lm_loss"] == pytest.approx(evaluations(best_run)[24]["all/lm_loss"], rel=1e-6)
    assert os.path.isfile(tmp_path / "evals" / "someone--trm-copy" / "copy--step_24" / "metrics.json")
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE=1"):
        evaluate_cli.run(evaluate_cli.parse_args([f"checkpoint=hf://{REPO}/copy/step_99"]), cpu_context())


def test_fine_tune_from_a_hub_checkpoint(offline_hub, best_run, copy_task, tmp_path):
    run_training(copy_task, tmp_path / "run", f"+load_checkpoint={offline_hub}", "epochs=1", "lr=0",
                 "puzzle_emb_lr=0")
    # lr 0: the weights stay those loaded from the hub.
    loaded = torch.load(best_run / "step_24", weights_only=True)
    tuned = torch.load(tmp_path / "run" / "step_4", weights_only=True)
    assert all(torch.equal(loaded[k], tuned[k]) for k in loaded)


def test_the_bar_ends_at_the_steps_that_ran(copy_task, tmp_path, capsys, monkeypatch):
    """64 puzzles, batch 24, one epoch per iteration: 2 full batches an epoch (the short third is dropped), so 8
    steps run while the published estimate (the schedule's) is int(4 * 64 / 24) = 10."""
    from tqdm import tqdm

    import training.loop
    bars = []

    class Recorded(tqdm):
        def close(self):
            bars.append((self.n, self.total))
            super().close()

    monkeypatch.setattr(training.loop, "tqdm", Recorded)
    run_training(copy_task, tmp_path / "run", "global_batch_size=24", "epochs=4", "eval_interval=1")
    assert bars[-1] == (8, 8)
    assert "steps: 8 (the lr schedule's estimate, by the published formula: 10)" in capsys.readouterr().out
