"""`python -m kaggle.adapt`: new ARC tasks -> dataset -> fine-tuned checkpoint -> submission.json, on CPU."""
import json
import os
import signal
import subprocess
import sys

import pytest

import evaluate as evaluate_cli
from dataset.build_arc_dataset import ArcBuildConfig, build_arc_dataset
from kaggle import adapt
from rundir.layout import list_train_states
from tests.helpers import REPO_ROOT, TINY_EVAL_ARCH, assert_kaggle_submission, compose_config, cpu_context
from tests.integration.test_run_lock import kill_everything, train_steps, wait_until
from training.config import parse_config
from training.loop import train

CONCEPT = os.path.join(REPO_ROOT, "kaggle", "concept", "arc-agi_concept")
TINY = ["global_batch_size=8", "num_workers=0", "device=cpu", "wandb_mode=disabled", "lr_warmup_steps=1"]


def concept_tasks(names: list[str]) -> tuple[dict, dict]:
    with open(f"{CONCEPT}_challenges.json") as f:
        challenges = json.load(f)
    with open(f"{CONCEPT}_solutions.json") as f:
        solutions = json.load(f)
    return {n: challenges[n] for n in names}, {n: solutions[n] for n in names}


def write_json(path, value) -> str:
    with open(path, "w") as f:
        json.dump(value, f)
    return str(path)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A tiny ARC model trained a few steps on four ConceptARC tasks (not the ones adapted to)."""
    root = tmp_path_factory.mktemp("pretrain")
    tasks, solutions = concept_tasks(["ExtractObjects1", "ExtractObjects2", "Count3", "Count9"])
    write_json(root / "arc-agi_pre_challenges.json", tasks)
    write_json(root / "arc-agi_pre_solutions.json", solutions)
    data = str(root / "data")
    build_arc_dataset(ArcBuildConfig(input_file_prefix=str(root / "arc-agi"), output_dir=data, subsets=["pre"],
                                     test_set_name="pre", num_aug=1), progress=False)
    run_dir = root / "run"
    train(parse_config(compose_config([f"data_paths=[{data}]", *TINY_EVAL_ARCH, *TINY, "epochs=2", "eval_interval=2",
                                       "evaluators=[]", f"+checkpoint_path={run_dir}"])), cpu_context())
    return run_dir


@pytest.fixture(scope="module")
def new_tasks(tmp_path_factory):
    root = tmp_path_factory.mktemp("new")
    tasks, solutions = concept_tasks(["ExtractObjects3", "Count1", "Count2"])
    return write_json(root / "tasks.json", tasks), write_json(root / "solutions.json", solutions), tasks


def run_adapt(tasks: str, checkpoint, out, *extra: str) -> None:
    adapt.main(["--tasks", tasks, "--checkpoint", str(checkpoint), "--output-dir", str(out), "--num-aug", "2",
                "--epochs", "2", *extra, *TINY])


def test_new_tasks_to_a_submission(pretrained, new_tasks, tmp_path, capsys):
    tasks_file, solutions_file, tasks = new_tasks
    out = tmp_path / "out"
    run_adapt(tasks_file, pretrained, out, "--solutions", solutions_file)
    printed = capsys.readouterr().out
    assert "[1/3]" in printed and "[2/3]" in printed and "[3/3]" in printed
    with open(out / "submission.json") as f:
        submission = json.load(f)
    assert_kaggle_submission(submission, tasks)  # every task and test input, two attempts each
    with open(out / "metrics.json") as f:
        metrics = json.load(f)
    assert {"ARC/pass@1", "ARC/pass@2"} <= metrics.keys()
    # The pipeline's pass@k is what evaluate.py gives on its fine-tuned checkpoint.
    flat = evaluate_cli.run(evaluate_cli.parse_args([f"checkpoint={out / 'run'}", "num_workers=0", "device=cpu"]),
                            cpu_context())
    for key in ("ARC/pass@1", "ARC/pass@2"):
        assert flat[key] == pytest.approx(metrics[key])
    # The puzzle table was sized for the new tasks; run again: every stage is reused.
    run_adapt(tasks_file, pretrained, out, "--solutions", solutions_file)
    assert "Already complete" in capsys.readouterr().out


def test_without_solutions_and_with_frozen_weights(pretrained, new_tasks, tmp_path):
    tasks_file, _, tasks = new_tasks
    run_adapt(tasks_file, pretrained, tmp_path / "out", "--freeze-weights")
    with open(tmp_path / "out" / "submission.json") as f:
        assert_kaggle_submission(json.load(f), tasks)
    with open(tmp_path / "out" / "metrics.json") as f:
        assert "pass@k not computed" in json.load(f)["note"]


def bad_input_message(capsys, tasks: str, checkpoint, out, *extra: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_adapt(tasks, checkpoint, out, *extra)
    assert exit_info.value.code not in (0, None)
    printed = capsys.readouterr()
    message = str(exit_info.value.code) if isinstance(exit_info.value.code, str) else printed.err
    assert len(message.strip().splitlines()) == 1, message
    assert printed.out == "", f"printed before the error: {printed.out}"  # issue 23 E: no irrelevant note first
    assert not os.path.exists(out), "nothing written for bad input"
    return message


def test_bad_input_is_one_message_and_writes_nothing(pretrained, new_tasks, tmp_path, capsys, copy_task):
    tasks_file, _, tasks = new_tasks
    malformed = tmp_path / "malformed.json"
    malformed.write_text('{"t": {"train": [')
    assert "malformed.json" in bad_input_message(capsys, str(malformed), pretrained, tmp_path / "o1")
    big = {"big": {"train": [{"input": [[1] * 31] * 2, "output": [[1]]}], "test": [{"input": [[0]]}]}}
    assert "30" in bad_input_message(capsys, write_json(tmp_path / "big.json", big), pretrained, tmp_path / "o2")
    copy_run = tmp_path / "copy_run"
    train(parse_config(compose_config([f"data_paths=[{copy_task}]", *TINY_EVAL_ARCH, *TINY, "epochs=1",
                                       "eval_interval=1", "evaluators=[]", f"+checkpoint_path={copy_run}"])),
          cpu_context())
    capsys.readouterr()  # the training's own report
    assert "not an ARC model" in bad_input_message(capsys, tasks_file, copy_run, tmp_path / "o3")


def test_issue23_d_bad_training_keys_and_stray_solutions_write_nothing(pretrained, new_tasks, tmp_path, capsys):
    """Issue 23 D: lr=abc failed only after data/, source/ and adapt.json were written (and the corrected rerun
    was then refused); solutions of tasks not in --tasks were silently ignored."""
    tasks_file, solutions_file, _ = new_tasks
    assert "lr" in bad_input_message(capsys, tasks_file, pretrained, tmp_path / "o1", "lr=abc")
    assert "seed must be >= 0" in bad_input_message(capsys, tasks_file, pretrained, tmp_path / "o2", "seed=-1")
    with open(solutions_file) as f:
        stray = dict(json.load(f), NotATask=[[[0]]])
    message = bad_input_message(capsys, tasks_file, pretrained, tmp_path / "o3", "--solutions",
                                write_json(tmp_path / "stray.json", stray))
    assert "NotATask" in message and "--tasks" in message


def test_issue26_epochs_that_give_no_step_stop_before_anything_is_written(pretrained, tmp_path, capsys):
    """Issue 26 finding 6: `--epochs 2` trained 0 steps and wrote a submission from the unadapted model without a
    word. Here the published estimate (groups x mean examples per puzzle: 2 x 10/4 x 2 epochs = 10) fills the batch
    of 10, but 2 epochs draw 8 examples (one puzzle of each task: 3 + 1 train pairs; the blank task has no distinct
    augmentation). It stops with one message giving the --epochs that train; those train."""
    count1, _ = concept_tasks(["Count1"])
    blank = {"train": [{"input": [[0]], "output": [[0]]}], "test": [{"input": [[0]]}]}
    tasks = write_json(tmp_path / "tasks.json", {**count1, "Blank": blank})
    keys = [*(k for k in TINY if not k.startswith(("global_batch_size", "lr_warmup"))), "global_batch_size=10"]

    def adapt_with(epochs: int, out) -> None:
        adapt.main(["--tasks", tasks, "--checkpoint", str(pretrained), "--output-dir", str(out), "--num-aug", "2",
                    "--epochs", str(epochs), *keys])

    with pytest.raises(SystemExit) as exit_info:
        adapt_with(2, tmp_path / "o1")
    printed = capsys.readouterr()
    message = str(exit_info.value.code) if isinstance(exit_info.value.code, str) else printed.err
    assert len(message.strip().splitlines()) == 1 and printed.out == "", message
    assert "--epochs 2" in message and "--epochs 3" in message and "global_batch_size=10" in message, message
    assert not os.path.exists(tmp_path / "o1"), "nothing written"
    adapt_with(3, tmp_path / "o2")
    assert json.loads((tmp_path / "o2" / "metrics.json").read_text())["step"] == 1
    # One step of the default 100-step warm-up trains at lr/100: said, with what to change.
    assert "1 step(s), within the lr warm-up of 100" in capsys.readouterr().out


def test_scores_survive_an_interruption_after_the_final_evaluation(pretrained, new_tasks, tmp_path):
    """Stopped after the fine-tuning's last checkpoint but before metrics.json: the rerun takes the scores from
    the run's metrics.jsonl (it evaluates nothing again)."""
    tasks_file, solutions_file, _ = new_tasks
    out = tmp_path / "out"
    run_adapt(tasks_file, pretrained, out, "--solutions", solutions_file)
    with open(out / "metrics.json") as f:
        expected = json.load(f)
    manifest = json.loads((out / "adapt.json").read_text())
    manifest["stages"] = ["data"]
    (out / "adapt.json").write_text(json.dumps(manifest))
    os.remove(out / "metrics.json")
    run_adapt(tasks_file, pretrained, out, "--solutions", solutions_file)
    with open(out / "metrics.json") as f:
        assert json.load(f) == expected


def test_issue23_c_sigterm_during_fine_tuning_saves_and_says_rerun(pretrained, new_tasks, tmp_path):
    """Issue 23 C: SIGTERM while fine-tuning saved the state, then reported "holds no ARC evaluation" and exited 1;
    it stops as pretrain.py does (exit 0) and says how to continue."""
    tasks_file, _, _ = new_tasks
    out = tmp_path / "out"
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1", PYTHONPATH=REPO_ROOT)
    job = subprocess.Popen([sys.executable, "-m", "kaggle.adapt", "--tasks", tasks_file, "--checkpoint",
                            str(pretrained), "--output-dir", str(out), "--num-aug", "2", "--epochs", "100000", *TINY],
                           cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    try:
        wait_until(lambda: len(train_steps(out / "run")) >= 2, job, timeout=120)
        os.killpg(job.pid, signal.SIGTERM)  # the process and its DataLoader worker, as a scheduler does
        stdout, stderr = job.communicate(timeout=60)
    finally:
        kill_everything(job)
    assert job.returncode == 0, stderr[-3000:]
    assert "error:" not in stderr, stderr[-3000:]
    assert "interrupted; rerun the same command to continue" in stdout, stdout[-3000:]
    assert list_train_states(str(out / "run")), "the state was saved"
