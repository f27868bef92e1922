"""Resuming runs: exact in one and two processes (weights, optimizers, EMA, RNG streams, ACT carries and the logged
metrics, bit for bit), on another number of processes (the same global batches, the curve going on), one metrics
line per step after a resume; crash-safe checkpoints, clean stops, and the bad-input cases of checkpoints. (The
pieces without runs: tests/unit/test_checkpoints.py.)"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest
import torch

from dataset.build_copy_dataset import write_copy_task
from rundir.layout import list_train_states
from rundir.states import WRITE_DELAY_ENV
from tests.helpers import REPO_ROOT, TINY_ARCH, compose_config, cpu_context, read_metrics, run_pretrain
from training.config import parse_config
from utils.errors import CheckpointError, NonFiniteLossError

# 64 puzzles / batch 16 = 4 steps per epoch; 4 epochs in 2 iterations = 16 steps, an eval at step 8.
RUN = [*TINY_ARCH, "arch.halt_exploration_prob=0.5", "global_batch_size=16", "epochs=4", "eval_interval=2",
       "lr=1e-3", "lr_warmup_steps=3", "ema=true", "evaluators=[]", "wandb_mode=disabled"]


@pytest.fixture(scope="module")
def data(copy_task) -> str:
    return copy_task


def train_in_process(data: str, run_dir, *extra: str, run: list[str] = RUN):
    from training.loop import train
    raw = compose_config([f"data_paths=[{data}]", *run, f"+checkpoint_path={run_dir}", *extra])
    return train(parse_config(raw), cpu_context())


def train_losses(run_dir) -> dict[int, dict]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    return {m["step"]: m for m in lines if "train/lm_loss" in m}


def assert_states_equal(a: dict, b: dict, where: str = "") -> None:
    """Bitwise equality of nested dicts/lists of tensors and numbers."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"{where}: keys differ"
        for k in a:
            assert_states_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for i, (x, y) in enumerate(zip(a, b)):
            assert_states_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a} != {b}"


def final_state(run_dir) -> dict:
    step, path = list_train_states(str(run_dir))[-1]
    return torch.load(os.path.join(path, "state.pt"), weights_only=True)


def rank_states(run_dir) -> list[dict]:
    _, path = list_train_states(str(run_dir))[-1]
    files = sorted(f for f in os.listdir(path) if f.startswith("rank"))
    return [torch.load(os.path.join(path, f), weights_only=True) for f in files]


def compare_runs(straight_dir, resumed_dir) -> None:
    a, b = final_state(straight_dir), final_state(resumed_dir)
    assert a["step"] == b["step"] == 16
    for key in ("model", "optimizers", "ema"):
        assert_states_equal(a[key], b[key], key)
    # Per-rank RNG streams and ACT carries continue exactly too.
    assert_states_equal(rank_states(straight_dir), rank_states(resumed_dir), "rank state")
    la, lb = train_losses(straight_dir), train_losses(resumed_dir)
    assert la.keys() == lb.keys() == set(range(1, 17))
    for step in la:
        assert la[step] == lb[step], f"logged metrics differ at step {step}"


def test_exact_resume_single_process(data, tmp_path):
    train_in_process(data, tmp_path / "straight")
    train_in_process(data, tmp_path / "resumed", "stop_at_step=6")  # mid-iteration
    assert [s for s, _ in list_train_states(str(tmp_path / "resumed"))] == [6]
    train_in_process(data, tmp_path / "resumed", "resume=auto", "stop_at_step=11")  # across the eval at step 8
    train_in_process(data, tmp_path / "resumed", "resume=auto")
    compare_runs(tmp_path / "straight", tmp_path / "resumed")


def cli_args(data: str, run_dir, *extra: str) -> list[str]:
    return [f"data_paths=[{data}]", *RUN, "device=cpu", f"+checkpoint_path={run_dir}", *extra]


@pytest.mark.slow
def test_exact_resume_two_processes(data, tmp_path):
    for name, stops in (("straight", [None]), ("resumed", [6, None])):
        for i, stop in enumerate(stops):
            extra = (["resume=auto"] if i else []) + ([f"stop_at_step={stop}"] if stop else [])
            result = run_pretrain(cli_args(data, tmp_path / name, *extra), nproc=2)
            assert result.returncode == 0, result.stderr[-3000:]
    assert os.path.isfile(tmp_path / "resumed" / "train_state_step_6" / "rank1.pt")
    compare_runs(tmp_path / "straight", tmp_path / "resumed")


def wait_for(predicate, process, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert process.poll() is None, f"process ended early: {process.communicate()[1][-3000:]}"
        assert time.time() < deadline, "timed out waiting"
        time.sleep(0.05)


def test_sigkill_while_saving_keeps_previous_checkpoint(data, tmp_path):
    first = run_pretrain(cli_args(data, tmp_path, "stop_at_step=4"))
    assert first.returncode == 0, first.stderr[-3000:]
    process = run_pretrain(cli_args(data, tmp_path, "resume=auto", "stop_at_step=7"), env={WRITE_DELAY_ENV: "60"},
                           wait=False)
    wait_for(lambda: os.path.exists(tmp_path / "train_state_step_7.tmp" / "state.pt"), process)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert [s for s, _ in list_train_states(str(tmp_path))] == [4]
    resumed = run_pretrain(cli_args(data, tmp_path, "resume=auto"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "train_state_step_4 at step 4" in resumed.stdout
    assert not os.path.exists(tmp_path / "train_state_step_7.tmp")
    assert list_train_states(str(tmp_path))[-1][0] == 16


def test_sigterm_finishes_step_saves_and_exits(data, tmp_path):
    process = run_pretrain(cli_args(data, tmp_path, "epochs=400", "eval_interval=400"), wait=False)
    wait_for(lambda: len(train_losses(tmp_path)) >= 3 if os.path.exists(tmp_path / "metrics.jsonl") else False,
             process)
    os.killpg(process.pid, signal.SIGTERM)  # trainer and its DataLoader worker
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-3000:]
    assert "Stopped on SIGTERM" in stdout
    saved_step = list_train_states(str(tmp_path))[-1][0]
    assert saved_step == max(train_losses(tmp_path))  # the step in flight was finished and saved
    assert os.path.isfile(tmp_path / f"step_{saved_step}")


def test_keep_last_and_interval(data, tmp_path):
    train_in_process(data, tmp_path, "checkpoint_interval=3", "checkpoint_keep_last=2")
    assert [s for s, _ in list_train_states(str(tmp_path))] == [15, 16]
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith("step_")) == ["step_15", "step_16"]


def test_corrupt_checkpoint_is_reported_and_kept(data, tmp_path):
    train_in_process(data, tmp_path, "stop_at_step=4")
    state_file = tmp_path / "train_state_step_4" / "state.pt"
    with open(state_file, "r+b") as f:
        f.truncate(os.path.getsize(state_file) // 2)
    before = state_file.read_bytes()
    result = run_pretrain(cli_args(data, tmp_path, "resume=auto"))
    assert result.returncode != 0
    assert f"Cannot read checkpoint {state_file}" in result.stderr and "Traceback" not in result.stderr
    assert state_file.read_bytes() == before
    assert [s for s, _ in list_train_states(str(tmp_path))] == [4]


def test_dataset_mismatch_is_reported(data, tmp_path):
    train_in_process(data, tmp_path / "run", "stop_at_step=2")
    other = write_copy_task(str(tmp_path / "other"), num_train_puzzles=48, num_test_puzzles=8, seq_len=8, vocab_size=6,
                            num_puzzle_identifiers=65)
    from training.loop import train
    raw = compose_config([f"data_paths=[{other}]", *RUN, f"+checkpoint_path={tmp_path / 'run'}", "resume=auto"])
    with pytest.raises(CheckpointError, match="dataset differs .*total_puzzles"):
        train(parse_config(raw), cpu_context())


def test_missing_resume_path_is_reported(data, tmp_path):
    result = run_pretrain(cli_args(data, tmp_path, f"resume={tmp_path / 'nowhere'}"))
    assert result.returncode != 0 and "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_non_finite_loss_stops_without_touching_checkpoint(data, tmp_path):
    train_in_process(data, tmp_path, "stop_at_step=2")
    before = (tmp_path / "train_state_step_2" / "state.pt").read_bytes()
    with pytest.raises(NonFiniteLossError, match=r"Non-finite loss at step \d+.*train_state_step_2"):
        train_in_process(data, tmp_path, "resume=auto", "lr=1e38", "lr_warmup_steps=0")
    assert (tmp_path / "train_state_step_2" / "state.pt").read_bytes() == before
    assert [s for s, _ in list_train_states(str(tmp_path))] == [2]


def test_load_checkpoint_rejects_truncated_file(data, tmp_path):
    bad = tmp_path / "weights"
    bad.write_bytes(b"not a checkpoint")
    result = run_pretrain(cli_args(data, tmp_path / "run", f"+load_checkpoint={bad}"))
    assert result.returncode != 0 and f"Cannot read checkpoint {bad}" in result.stderr


# ---------------------------------------------------------------------------------------------
# Another number of processes: 2 -> 1 and 1 -> 2 (gloo), and another batch order
# ---------------------------------------------------------------------------------------------
# 64 puzzles (one example each, puzzle identifiers 1..64) / batch 16: 4 steps per epoch, 16 steps in all.
# No halting exploration: its draws come from per-process streams, so it alone would make the curves differ.
WORLD_SIZE_RUN = [*TINY_ARCH, "arch.halt_exploration_prob=0", "global_batch_size=16", "epochs=4", "eval_interval=2",
                  "lr=1e-3", "lr_warmup_steps=3", "evaluators=[]", "wandb_mode=disabled", "device=cpu"]
STEPS_PER_EPOCH, TOTAL_STEPS, NUM_PUZZLES = 4, 16, 64


# Runs pretrain.py with train_batch wrapped to append, per rank, the puzzle identifiers of each batch it trains on.
RECORDER = """
import os, runpy, sys
import training.loop as loop
out, rank = os.environ["TRAINED_ON_DIR"], os.environ.get("RANK", "0")
train_batch = loop.train_batch

def recording(config, state, batch, global_batch_size, ctx):
    with open(os.path.join(out, f"rank{rank}.jsonl"), "a") as f:
        f.write(__import__("json").dumps({"step": state.step + 1, "ids": batch["puzzle_identifiers"].tolist()}) + "\\n")
    return train_batch(config, state, batch, global_batch_size, ctx)

loop.train_batch = recording
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_recorded(tmp_path, run_dir, nproc: int, *extra: str) -> subprocess.CompletedProcess:
    recorder = tmp_path / "recorder.py"
    recorder.write_text(RECORDER)
    trained_on = tmp_path / f"trained_on_{os.path.basename(run_dir)}"
    trained_on.mkdir(exist_ok=True)
    env = dict(os.environ, TRAINED_ON_DIR=str(trained_on), OMP_NUM_THREADS="1", PYTHONPATH=REPO_ROOT)
    launcher = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                    "--nproc-per-node", str(nproc)]
    command = launcher + [str(recorder), os.path.join(REPO_ROOT, "pretrain.py"), *extra]
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def global_batches_trained_on(tmp_path, run_name: str) -> dict[int, list[int]]:
    """step -> the puzzle identifiers of that step's global batch (the ranks' slices in rank order)."""
    batches: dict[int, dict[int, list[int]]] = {}
    folder = tmp_path / f"trained_on_{run_name}"
    for name in sorted(os.listdir(folder)):
        rank = int(name.removeprefix("rank").removesuffix(".jsonl"))
        for line in (folder / name).read_text().splitlines():
            record = json.loads(line)
            assert rank not in batches.setdefault(record["step"], {}), f"step {record['step']} trained twice"
            batches[record["step"]][rank] = record["ids"]
    return {step: sum((parts[r] for r in sorted(parts)), []) for step, parts in sorted(batches.items())}


def losses(run_dir) -> dict[int, float]:
    return {m["step"]: m["train/lm_loss"] for m in read_metrics(run_dir) if "train/lm_loss" in m}


@pytest.fixture(scope="module")
def straight_run(copy_task, tmp_path_factory):
    """The uninterrupted run in one process: the batches and losses the resumed runs must continue."""
    tmp_path = tmp_path_factory.mktemp("straight")
    run_recorded(tmp_path, tmp_path / "straight", 1, f"data_paths=[{copy_task}]", *WORLD_SIZE_RUN,
                 f"+checkpoint_path={tmp_path / 'straight'}")
    return global_batches_trained_on(tmp_path, "straight"), losses(tmp_path / "straight")


@pytest.mark.slow
@pytest.mark.parametrize("before, after", [(2, 1), (1, 2)])
def test_resume_on_another_number_of_processes(copy_task, straight_run, tmp_path, before, after):
    run_dir = tmp_path / "resumed"
    common = [f"data_paths=[{copy_task}]", *WORLD_SIZE_RUN, f"+checkpoint_path={run_dir}"]
    run_recorded(tmp_path, run_dir, before, *common, "stop_at_step=5")
    # The premise: sequences are in flight (halt_max_steps=2: step 5 is the first of two), so step 6 goes
    # on with their carries instead of taking batch 6's data; a reset carry would make the curve differ.
    saved = torch.load(run_dir / "train_state_step_5" / "rank0.pt", weights_only=True)
    assert not saved["carry"]["halted"].any()
    result = run_recorded(tmp_path, run_dir, after, *common, "resume=auto")
    assert f"saved by {before} processes with {after}" in result.stdout

    # The run continued to the end, each step logged once.
    resumed_losses = losses(run_dir)
    assert sorted(resumed_losses) == list(range(1, TOTAL_STEPS + 1))
    # Every example of each epoch trained on once: the same global batches as the uninterrupted run.
    batches = global_batches_trained_on(tmp_path, "resumed")
    assert sorted(batches) == list(range(1, TOTAL_STEPS + 1))
    for epoch in range(TOTAL_STEPS // STEPS_PER_EPOCH):
        seen = Counter(i for step in range(epoch * STEPS_PER_EPOCH + 1, (epoch + 1) * STEPS_PER_EPOCH + 1)
                       for i in batches[step])
        assert seen == Counter(range(1, NUM_PUZZLES + 1)), f"epoch {epoch}: examples skipped or repeated"
    straight_batches, straight_losses = straight_run
    assert batches == straight_batches

    # The curve continues where it was: the re-sliced carries hold the same sequences in flight, so the
    # losses are the uninterrupted run's up to the summation order of the ranks' gradients.
    ratio = np.array([resumed_losses[s] / straight_losses[s] for s in range(1, TOTAL_STEPS + 1)])
    assert np.all(np.abs(ratio - 1) < 1e-4), ratio


def test_resume_with_another_batch_order_is_refused(copy_task, tmp_path):
    """The saved loader position counts batches of the saved global_batch_size, seed and eval_interval."""
    from tests.helpers import compose_config, cpu_context
    from training.config import parse_config
    from training.loop import train
    common = [f"data_paths=[{copy_task}]", *WORLD_SIZE_RUN, f"+checkpoint_path={tmp_path}"]
    train(parse_config(compose_config([*common, "stop_at_step=2"])), cpu_context())
    with pytest.raises(CheckpointError, match=r"'global_batch_size': \(16, 8\).*\+load_checkpoint"):
        train(parse_config(compose_config([*common, "resume=auto", "global_batch_size=8"])), cpu_context())


# ---------------------------------------------------------------------------------------------
# One metrics line per step after a resume
# ---------------------------------------------------------------------------------------------
# The run of the metrics checks: 16 steps, evaluations at steps 8 and 16.
METRICS_RUN = [*TINY_ARCH, "global_batch_size=16", "epochs=4", "eval_interval=2", "lr=1e-3", "lr_warmup_steps=3",
               "evaluators=[]", "wandb_mode=disabled", "num_workers=0"]


def one_line_per_step(lines: list[dict]) -> None:
    train = [m["step"] for m in lines if "train/lm_loss" in m]
    evals = [m["step"] for m in lines if any(k.startswith("all/") for k in m)]
    params = [m["step"] for m in lines if "num_params" in m]
    assert (train, evals, params) == (list(range(1, 17)), [8, 16], [0]), (train, evals, params)


def test_metrics_after_resume_from_an_older_state(copy_task, tmp_path):
    run_dir = tmp_path / "run"
    train_in_process(copy_task, run_dir, "checkpoint_interval=4", "stop_at_step=10", run=METRICS_RUN)
    first_attempt = {m["step"]: m for m in read_metrics(str(run_dir)) if "train/lm_loss" in m}
    assert [s for s, _ in list_train_states(str(run_dir))] == [4, 8, 10]
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 11, "train/lm_loss": 0.')  # a line cut short by a kill
    train_in_process(copy_task, run_dir, f"resume={run_dir / 'train_state_step_4'}", run=METRICS_RUN)
    one_line_per_step(lines := read_metrics(str(run_dir)))
    again = {m["step"]: m for m in lines if "train/lm_loss" in m}
    assert all(again[step] == first_attempt[step] for step in range(1, 11))  # exact resume: same values


def test_metrics_after_resume_auto_found_no_state(copy_task, tmp_path):
    run_dir = tmp_path / "run"
    train_in_process(copy_task, run_dir, "stop_at_step=3", run=METRICS_RUN)
    for _, path in list_train_states(str(run_dir)):
        shutil.rmtree(path)  # as if killed before any save
    train_in_process(copy_task, run_dir, "resume=auto", run=METRICS_RUN)
    one_line_per_step(read_metrics(str(run_dir)))


# ---------------------------------------------------------------------------------------------
# Resume lineage: a resume from an older state abandons what came after it
# ---------------------------------------------------------------------------------------------
def test_resume_from_an_older_state_starts_a_new_lineage(copy_task, tmp_path, capsys):
    from training.trained import resolve_weights
    run_dir = tmp_path / "run"
    train_in_process(copy_task, run_dir, "checkpoint_interval=4", "stop_at_step=12", run=METRICS_RUN)
    assert [s for s, _ in list_train_states(str(run_dir))] == [4, 8, 12]
    capsys.readouterr()
    train_in_process(copy_task, run_dir, f"resume={run_dir / 'train_state_step_4'}", "stop_at_step=6",
                     run=METRICS_RUN)
    abandoned = run_dir / "abandoned_after_step_4"
    assert "moved what the abandoned attempt saved after step 4" in capsys.readouterr().out
    assert {"train_state_step_8", "train_state_step_12", "step_8", "step_12", "metrics.jsonl"} <= set(
        os.listdir(abandoned))
    assert [s for s, _ in list_train_states(str(run_dir))] == [4, 6]
    assert resolve_weights(str(run_dir)) == str(run_dir / "step_6")  # which=last follows the lineage
    train_in_process(copy_task, run_dir, "resume=auto", run=METRICS_RUN)  # continues from 6, not 12
    one_line_per_step(read_metrics(str(run_dir)))
    assert [s for s, _ in list_train_states(str(run_dir))][-1] == 16


def test_issue26_the_stop_line_is_not_glued_to_the_progress_bar(data, tmp_path):
    """On a terminal the bar's line is open; the stop message must start a line of its own (tqdm.write)."""
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1", PYTHONPATH=REPO_ROOT, PYTHONUNBUFFERED="1")
    result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "pretrain.py"),
                             *cli_args(data, tmp_path, "stop_at_step=3")], cwd=REPO_ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)  # one stream, as a terminal
    assert result.returncode == 0, result.stdout[-3000:]
    segments = [s.strip() for s in result.stdout.replace("\r", "\n").split("\n")]
    stop_lines = [s for s in segments if "Stopped at stop_at_step=3" in s]
    assert stop_lines and all(s.startswith("Stopped at stop_at_step=3") for s in stop_lines), stop_lines


def test_issue26_the_printed_continue_command_runs_verbatim_into_the_same_run(data, tmp_path):
    """A stopped auto-named run (the published '<Class> <slug>', a space in it) prints a command that, pasted as it
    is, continues the same run directory (so the same wandb run) to the end."""
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1", PYTHONPATH=REPO_ROOT)
    args = [f"data_paths=[{data}]", *RUN, "device=cpu", "stop_at_step=3"]  # no run name: a random one
    first = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "pretrain.py"), *args], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    command = [line.removeprefix("continue with: ") for line in first.stdout.splitlines()
               if line.startswith("continue with: ")]
    assert len(command) == 1 and "resume=auto" in command[0] and "stop_at_step" not in command[0], first.stdout
    runs = [os.path.join(project, run) for project in os.listdir(tmp_path / "checkpoints")
            for run in os.listdir(tmp_path / "checkpoints" / project)]
    assert len(runs) == 1 and " " in runs[0], runs
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")  # `python` is this one
    second = subprocess.run(command[0], shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Resuming from" in second.stdout and "at step 3" in second.stdout, second.stdout[-2000:]
    after = [os.path.join(project, run) for project in os.listdir(tmp_path / "checkpoints")
             for run in os.listdir(tmp_path / "checkpoints" / project)]
    assert after == runs  # the same directory, no new one
    steps = [m["step"] for m in read_metrics(str(tmp_path / "checkpoints" / runs[0])) if "train/lm_loss" in m]
    assert steps == sorted(set(steps)) and steps[-1] > 3  # one history, continued past the stop
