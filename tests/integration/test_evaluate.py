"""evaluate.py on saved checkpoints: a checkpoint scores in a fresh process (and under torchrun) exactly as at the
end of training; bad arguments, a checkpoint of another model or a dataset of another shape are one clear error; an
earlier evaluation is never overwritten unless asked."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

import evaluate as evaluate_cli
from dataset import build_arc_dataset
from dataset.build_copy_dataset import write_copy_task
from tests.helpers import (
    REPO_ROOT,
    TINY_EVAL_ARCH,
    assert_kaggle_submission,
    compose_config,
    cpu_context,
    write_tiny_arc_source,
)
from tests.unit.test_evaluation import saved_untrained_model
from training.config import parse_config
from training.loop import train
from utils.errors import ConfigError

TINY_ARCH = TINY_EVAL_ARCH


def run_evaluate_cli(args: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO_ROOT, WANDB_MODE="disabled")
    return subprocess.run([sys.executable, os.path.join(REPO_ROOT, "evaluate.py"), *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def read_jsonl(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def arc_run(tmp_path_factory):
    """A tiny model trained a few steps on a tiny ARC build (aug 2), evaluated once, at the end, with arc@ARC."""
    root = tmp_path_factory.mktemp("arc_e2e")
    data = str(root / "arc-aug-2")
    build_arc_dataset.main(["--input-file-prefix", write_tiny_arc_source(str(root / "kaggle")), "--output-dir", data,
                            "--subsets", "training", "evaluation", "--test-set-name", "evaluation", "--num-aug", "2"])
    run_dir = str(root / "run")
    raw = compose_config([f"data_paths=[{data}]", *TINY_ARCH, "global_batch_size=8", "epochs=4", "eval_interval=4",
                          "lr=1e-3", "lr_warmup_steps=1", "wandb_mode=disabled", "num_workers=0", "device=cpu",
                          f"+checkpoint_path={run_dir}"])
    assert raw["evaluators"] == [{"name": "arc@ARC"}]
    train(parse_config(raw), cpu_context())
    logged = [line for line in read_jsonl(os.path.join(run_dir, "metrics.jsonl")) if "ARC/pass@1" in line]
    assert len(logged) == 1  # one evaluation: aggregated voting has nothing older to mix in
    checkpoint = os.path.join(run_dir, f"step_{logged[0]['step']}")
    return {"data": data, "run_dir": run_dir, "logged": logged[0], "checkpoint": checkpoint}


# ---------------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------------
def test_fresh_process_reproduces_training_metrics(arc_run, tmp_path):
    out = tmp_path / "eval"
    result = run_evaluate_cli([f"checkpoint={arc_run['checkpoint']}", f"output_dir={out}", "device=cpu",
                               "num_workers=0",
                               "save_outputs=[puzzle_identifiers,preds,q_halt_logits]"])
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics == arc_run["logged"]  # every key and value, bit for bit (same step too)
    assert "exact accuracy" in result.stdout and "token accuracy" in result.stdout and "ARC/pass@1" in result.stdout

    step = arc_run["logged"]["step"]
    with open(out / f"evaluator_ARC_step_{step}" / "submission.json") as f:
        submission = json.load(f)
    with open(os.path.join(arc_run["run_dir"], f"evaluator_ARC_step_{step}", "submission.json")) as f:
        assert submission == json.load(f)
    with open(os.path.join(arc_run["data"], "test_puzzles.json")) as f:
        assert_kaggle_submission(submission, json.load(f))

    saved = torch.load(out / f"step_{step}_all_preds.0", weights_only=True)
    num_test = np.load(os.path.join(arc_run["data"], "test", "all__inputs.npy")).shape[0]
    padded = -(-num_test // 8) * 8  # the last batch is padded to the batch size
    assert set(saved) == {"puzzle_identifiers", "preds", "q_halt_logits"}
    assert saved["preds"].shape == (padded, 900) and saved["q_halt_logits"].shape == (padded,)


def test_published_checkpoint_format_evaluates(arc_run, tmp_path, capsys):
    """Keys of the compiled loss head (`_orig_mod.`), a run directory as checkpoint=, config=PATH elsewhere."""
    published = tmp_path / "published"
    published.mkdir()
    state = torch.load(arc_run["checkpoint"], weights_only=True)
    torch.save({f"_orig_mod.{k}": v for k, v in state.items()}, published / "step_7")
    config = tmp_path / "all_config.yaml"
    shutil.copy(os.path.join(arc_run["run_dir"], "all_config.yaml"), config)
    evaluate_cli.main([f"checkpoint={published}", f"config={config}", f"output_dir={tmp_path / 'out'}",
                       "device=cpu", "num_workers=0"])
    with open(tmp_path / "out" / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics == {**arc_run["logged"], "step": 7}
    assert "Submission written to" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["checkpoint={missing}"], "does not exist"),
    (["checkpoint={lonely}"], "point at it with config=PATH/all_config.yaml"),
    (["checkpoint={ckpt}", "halt_erly=true"], "halt_erly: unknown key"),
    (["checkpoint={ckpt}", "global_batch_size=many"], "global_batch_size"),
    (["{ckpt}"], "Arguments must be key=value"),
    (["checkpoint={ckpt}", "data_paths=[{missing}]"], "point at the built dataset with data_paths=[DIR]"),
    (["checkpoint={ckpt}", "device=tpu"], "Invalid device 'tpu'"),
], ids=["missing_checkpoint", "missing_config", "unknown_key", "bad_type", "not_key_value", "missing_data", "device"])
def test_errors_are_clear(arc_run, tmp_path, capsys, args, message):
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    shutil.copy(arc_run["checkpoint"], lonely / "step_1")
    paths = dict(missing=tmp_path / "nope", lonely=lonely / "step_1", ckpt=arc_run["checkpoint"])
    with pytest.raises(SystemExit) as exit_info:
        evaluate_cli.main([arg.format(**paths) for arg in args])
    assert str(exit_info.value.code).startswith("error: ") and message in str(exit_info.value.code)


def test_checkpoint_of_another_model_is_a_clear_error(arc_run, tmp_path):
    config = yaml.safe_load(open(os.path.join(arc_run["run_dir"], "all_config.yaml")))
    config["arch"]["hidden_size"] = 64
    (tmp_path / "run").mkdir()
    shutil.copy(arc_run["checkpoint"], tmp_path / "run" / "step_3")
    with open(tmp_path / "run" / "all_config.yaml", "w") as f:
        yaml.safe_dump(config, f)
    with pytest.raises(SystemExit, match="does not fit the model of this config and dataset"):
        evaluate_cli.main([f"checkpoint={tmp_path / 'run'}", "device=cpu", "num_workers=0"])


@pytest.mark.slow
def test_torchrun_two_processes_match_one(arc_run, tmp_path):
    """Under torchrun each rank evaluates its slice; metrics are reduced and ARC votes gathered on rank 0."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO_ROOT)
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             os.path.join(REPO_ROOT, "evaluate.py"), f"checkpoint={arc_run['checkpoint']}",
                             f"output_dir={tmp_path}", "device=cpu", "num_workers=0"],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics.keys() == arc_run["logged"].keys()
    for key, value in arc_run["logged"].items():
        assert metrics[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


# ---------------------------------------------------------------------------------------------
# Sudoku / Maze style: no evaluator, exact and token accuracy per set
# ---------------------------------------------------------------------------------------------
def test_exact_and_token_accuracy_per_set_are_reported(tmp_path, capsys):
    checkpoint, _ = saved_untrained_model(tmp_path)
    metrics = evaluate_cli.run(evaluate_cli.EvaluateConfig(checkpoint=checkpoint, device="cpu", num_workers=0,
                                                           output_dir=str(tmp_path / "out")), cpu_context())
    printed = capsys.readouterr().out
    assert "[all] exact accuracy" in printed and "token accuracy" in printed and "mean steps 3.00" in printed
    assert {"all/exact_accuracy", "all/accuracy", "all/steps", "all/lm_loss", "all/q_halt_accuracy"} <= set(metrics)
    with open(tmp_path / "out" / "metrics.json") as f:
        assert json.load(f) == {"step": 5, **metrics}


# ---------------------------------------------------------------------------------------------
# The dataset is checked against the checkpoint, and an earlier evaluation is never overwritten silently
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


def test_evaluate_refuses_a_dataset_of_another_shape(tiny_run, tmp_path):
    other = write_copy_task(str(tmp_path / "longer"), num_train_puzzles=64, num_test_puzzles=8, seq_len=12,
                            vocab_size=6, num_puzzle_identifiers=65)
    with pytest.raises(ConfigError, match=r"has seq_len 12, but .* was trained on seq_len 8"):
        _evaluate(tiny_run, data_paths=[other], output_dir=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_evaluate_never_overwrites_an_earlier_evaluation_unless_asked(tiny_run, tmp_path):
    out = tmp_path / "out"
    first = _evaluate(tiny_run, output_dir=str(out))
    (out / "metrics.json").write_text('{"mine": 1}')
    with pytest.raises(ConfigError, match=r"metrics\.json already exists.*overwrite=true"):
        _evaluate(tiny_run, output_dir=str(out))
    assert (out / "metrics.json").read_text() == '{"mine": 1}'
    assert _evaluate(tiny_run, output_dir=str(out), overwrite=True) == first


def test_a_second_evaluation_into_the_same_output_dir_refuses(tiny_run, tmp_path):
    """Issue 23 A4: while one evaluate.py writes into output_dir, a second one into it refuses."""
    from rundir.lock import RunLock
    from utils.errors import RunLockedError
    out = tmp_path / "out"
    held = RunLock(str(out)).acquire()  # the first evaluation, still running
    try:
        with pytest.raises(RunLockedError, match=r"in use"):
            _evaluate(tiny_run, output_dir=str(out), overwrite=True)
        assert not (out / "metrics.json").exists()
    finally:
        held.release()


def test_issue23_e_non_finite_weights_warn_and_write_null(tiny_run, tmp_path, capsys):
    """Issue 23 E: evaluate.py of all-NaN weights exited 0 silently and wrote bare NaN (not JSON) to metrics.json."""
    run = tmp_path / "nan_run"
    shutil.copytree(tiny_run, run)
    weights = sorted(run.glob("step_*"), key=lambda p: int(p.name.split("_")[1]))[-1]
    state = torch.load(weights, weights_only=True)
    torch.save({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()},
               weights)
    capsys.readouterr()
    _evaluate(str(run), output_dir=str(tmp_path / "out"))
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "not finite" in warnings[0] and str(weights) in warnings[0], out

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text(), parse_constant=refuse)
    assert None in metrics.values()


@pytest.mark.parametrize("kind", ["file", "dangling symlink"])
def test_issue23_b_an_output_dir_that_cannot_be_made_is_one_line(tiny_run, tmp_path, kind):
    """Issue 23 B: an existing file or a dangling symlink as output_dir was a raw FileExistsError traceback."""
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("thesis")
    else:
        out.symlink_to(tmp_path / "gone")
    result = run_evaluate_cli([f"checkpoint={tiny_run}", "device=cpu", "num_workers=0", f"output_dir={out}"])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 1 and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert str(out) in errors[0] and ("is a file" if kind == "file" else "does not exist") in errors[0]
    assert sorted(os.listdir(tmp_path)) == ["out"]
    if kind == "file":
        assert out.read_text() == "thesis"


def test_issue23_b_a_read_only_default_output_dir_is_one_line(tiny_run, monkeypatch):
    """Issue 23 B: evaluate's default output dir (beside the checkpoint) on a read-only file system was a traceback
    (simulated: chmod does not stop root)."""
    from utils.errors import WriteError

    def refuse(path, *args, **kwargs):
        raise OSError(30, "Read-only file system", path)

    before = sorted(os.listdir(tiny_run))
    monkeypatch.setattr(os, "mkdir", refuse)
    with pytest.raises(WriteError, match=r"Cannot write the directory .*eval_step_\d+: the file system is read-only"):
        _evaluate(tiny_run)
    assert sorted(os.listdir(tiny_run)) == before


def test_issue23_c_a_huge_global_batch_size_is_cut_to_the_test_set(tiny_run, tmp_path, monkeypatch):
    """Issue 23 C: evaluate global_batch_size=100000 built the model for, and padded its batch to, 100000 rows; the
    batch is the test set's 16 examples, and the metrics are those of the trained batch size."""
    import evaluate as evaluate_cli
    built = []
    load_trained = evaluate_cli.load_trained
    monkeypatch.setattr(evaluate_cli, "load_trained", lambda *args, **kwargs: built.append(
        kwargs["local_batch_size"]) or load_trained(*args, **kwargs))
    huge = _evaluate(tiny_run, output_dir=str(tmp_path / "huge"), global_batch_size=100000)
    assert built == [16]
    assert huge == pytest.approx(_evaluate(tiny_run, output_dir=str(tmp_path / "usual")))
