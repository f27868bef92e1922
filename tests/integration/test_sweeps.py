"""Sweeps run end to end (`python pretrain.py -m`, docs/sweeps.md): jobs named from their swept values in one
directory per sweep, grouped, side by side under the joblib launcher, continued by their printed command; a name
they would all share refused before any job starts; Hydra writes no multirun/ of its own. (The pieces:
tests/unit/test_sweeps.py.)"""
import os
import subprocess
import sys

import pytest
import yaml

from rundir.layout import CONFIG_FILE
from tests.helpers import REPO_ROOT, TINY_ARCH, read_metrics, run_pretrain

# 64 puzzles / batch 16 = 4 steps per epoch, 2 epochs: 8 steps, stopped at 2.
RUN = [*TINY_ARCH, "global_batch_size=16", "epochs=2", "eval_interval=2", "evaluators=[]", "device=cpu",
       "num_workers=0"]


def printed_continue_commands(out: str) -> list[str]:
    return [line.removeprefix("continue with: ") for line in out.splitlines() if line.startswith("continue with: ")]


# The quick demo's preset at test size: its Sudoku dataset is generated on first use (64 puzzles).
GENERATED = ["generate_if_missing.num_train=64", "generate_if_missing.num_test=16",
             "eval_tta=0", "pictures=false", "eval_save_outputs=[]", "num_threads=1"]


@pytest.fixture(scope="module")
def joblib_sweep(tmp_path_factory):
    """Two jobs (lr=1e-3,1e-2) run side by side by the joblib launcher from a fresh working directory, each stopped
    at step 2, as the README's sweep runs: both need the same dataset, generated on first use, and load it with
    the default loader worker (num_workers=1); (working directory, output)."""
    cwd = tmp_path_factory.mktemp("cwd")
    data = cwd.parent / f"{cwd.name}-data" / "sudoku"
    run = [o for o in RUN if o != "num_workers=0"]
    result = run_pretrain(["--config-name", "quickstart", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                           f"data_paths=[{data}]", *GENERATED, *run, "lr=1e-3,1e-2", "stop_at_step=2"],
                          cwd=str(cwd), env={"PYTHONUNBUFFERED": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd, result.stdout + result.stderr


def test_jobs_side_by_side_generate_their_shared_dataset_once(joblib_sweep):
    """Both jobs found the dataset missing; one generated it while the other waited (they raced: the second
    build replaced the first under the running job), and the loader's worker starts inside joblib's workers."""
    _, out = joblib_sweep
    assert out.count("does not exist yet: generating") == 1, out[-3000:]
    assert "Got pickle error" not in out


def test_a_sweep_has_one_directory_with_a_run_directory_per_job_named_by_its_values(joblib_sweep):
    cwd, _ = joblib_sweep
    assert sorted(os.listdir(cwd)) == ["checkpoints"]  # no multirun/<date>/<time>/ or outputs/ of Hydra's
    (sweep,) = os.listdir(cwd / "checkpoints" / "sweeps")
    sweep_dir = cwd / "checkpoints" / "sweeps" / sweep
    assert sorted(os.listdir(sweep_dir)) == ["lr-0.001", "lr-0.01", "multirun.yaml"]
    for name in ("lr-0.001", "lr-0.01"):
        with open(sweep_dir / name / CONFIG_FILE) as f:
            config = yaml.safe_load(f)
        assert (config["run_name"], config["wandb_group"]) == (name, sweep)  # the sweep is the wandb group
        assert config["lr"] == float(name.removeprefix("lr-"))
        assert [m["step"] for m in read_metrics(str(sweep_dir / name)) if "train/lm_loss" in m] == [1, 2]


def test_a_stopped_sweep_job_continues_with_its_printed_command(joblib_sweep):
    cwd, out = joblib_sweep
    commands = printed_continue_commands(out)
    assert len(commands) == 2 and all("+checkpoint_path=checkpoints/sweeps/" in c for c in commands), out[-3000:]
    (command,) = [c for c in commands if "+run_name=lr-0.01 " in c]
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1", PYTHONPATH=REPO_ROOT,
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))  # `python` is this one
    resumed = subprocess.run(command, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from" in resumed.stdout and "at step 2" in resumed.stdout, resumed.stdout[-2000:]
    (sweep,) = os.listdir(cwd / "checkpoints" / "sweeps")
    run_dir = cwd / "checkpoints" / "sweeps" / sweep / "lr-0.01"
    assert [m["step"] for m in read_metrics(str(run_dir)) if "train/lm_loss" in m] == list(range(1, 9))
    with open(run_dir / CONFIG_FILE) as f:
        assert yaml.safe_load(f)["wandb_group"] == sweep


def test_the_basic_launcher_runs_the_jobs_one_after_another_in_one_process(copy_task, tmp_path):
    """Without hydra/launcher=..., Hydra runs the jobs in this process: each still gets its own name, directory
    and the sweep's group (nothing of the first job's run carries into the second's)."""
    result = run_pretrain(["-m", f"data_paths=[{copy_task}]", *RUN, "arch.L_cycles=1,2", "stop_at_step=1",
                           "hydra.sweep.dir=sweep"], cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(os.listdir(tmp_path / "sweep")) == ["arch.L_cycles-1", "arch.L_cycles-2", "multirun.yaml"]
    for name in ("arch.L_cycles-1", "arch.L_cycles-2"):
        with open(tmp_path / "sweep" / name / CONFIG_FILE) as f:
            config = yaml.safe_load(f)
        assert (config["run_name"], config["wandb_group"], config["arch"]["L_cycles"]) == (name, "sweep", int(name[-1]))
        assert [m["step"] for m in read_metrics(str(tmp_path / "sweep" / name)) if "train/lm_loss" in m] == [1]


def test_one_run_name_for_every_job_is_refused_before_any_job_starts(tmp_path):
    result = run_pretrain(["-m", "data_paths=[absent]", "lr=1e-3,1e-2", "+run_name=mine"], cwd=str(tmp_path))
    assert result.returncode == 1
    assert "+run_name=mine gives every job of this sweep the same run_name" in result.stderr
    assert "Traceback" not in result.stderr and os.listdir(tmp_path) == []  # no job ran, nothing written


def test_a_run_named_after_its_overrides_resolves(tmp_path):
    """'+run_name=${hydra:job.override_dirname}' was an InterpolationResolutionError (the name was part of it)."""
    result = run_pretrain(["lr=1e-3", "arch.L_cycles=2", "+run_name=${hydra:job.override_dirname}", "--cfg", "job",
                           "--resolve"], cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "run_name: arch.L_cycles-2+lr-1e-3" in result.stdout.splitlines()
