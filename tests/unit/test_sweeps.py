"""Sweeps without running one: the names of a sweep's jobs, the refusal of a name they would all share, the
launchers' job settings, the wandb group. (Sweeps run end to end: tests/integration/test_sweeps.py; the processes
of a SLURM job: tests/unit/test_slurm.py.)"""

import pytest
from omegaconf import OmegaConf

from pretrain import check_sweep, continue_command
from rundir.metrics import RunLogger
from tests.helpers import compose_config, compose_hydra, sweep_jobs
from tests.wandb_offline import finished_run_records, offline_wandb
from training.config import parse_config
from training.sweeps import MAX_NAME_LENGTH, NAMING_KEYS, safe_name, sweep_arguments, sweep_job_names
from utils.errors import ConfigError


@pytest.mark.parametrize("shared", ["+run_name=mine", "+checkpoint_path=runs/mine"])
def test_one_name_for_every_job_of_a_sweep_is_refused_saying_how_to_name_them(shared):
    with pytest.raises(ConfigError) as refused:
        sweep_arguments(["lr=1e-4,1e-3", shared])
    message = str(refused.value)
    assert shared in message and "one run directory" in message
    assert "${hydra:job.num}" in message and "Leave it out" in message


@pytest.mark.parametrize("names", [["+run_name=mine"],  # one job: nothing to share
                                   ["lr=1e-4,1e-3", "+run_name=lr${hydra:job.num}"],
                                   ["lr=1e-4,1e-3", "+run_name=${hydra:job.override_dirname}"],
                                   ["lr=1e-4,1e-3", "+run_name=a,b"]])
def test_names_that_differ_per_job_are_accepted(names):
    sweep_arguments(names)


def test_a_job_is_named_by_its_swept_values_only():
    line = ["data_paths=[data/sudoku]", "arch.L_cycles=4", "arch.L_cycles=2,3", "lr=1e-4,1e-3", "ema=True",
            "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    added = sweep_arguments(line)
    assert added == ["hydra.job.config.override_dirname.exclude_keys=[run_name,checkpoint_path,data_paths,ema]"]
    names = [compose_hydra(job).job.override_dirname for job in sweep_jobs(line)]
    assert names == ["arch.L_cycles-2+lr-0.0001", "arch.L_cycles-2+lr-0.001", "arch.L_cycles-3+lr-0.0001",
                     "arch.L_cycles-3+lr-0.001"]


def test_a_misspelt_key_in_a_sweep_gets_did_you_mean():
    with pytest.raises(ConfigError, match="arch.L_cylces is not a key of the configuration; did you mean "
                                          "arch.L_cycles"):
        check_sweep(["-m", "--config-name", "quickstart", "lr=1e-3,1e-2", "arch.L_cylces=2,4"])
    assert check_sweep(["-m", "--config-name", "quickstart", "arch=trm,hrm", "lr=interval(0.1,1)"])  # Hydra's


def test_an_exclude_list_given_on_the_command_line_is_kept():
    assert sweep_arguments(["lr=1,2", "hydra.job.config.override_dirname.exclude_keys=[seed]"]) == []


def test_override_dirname_leaves_out_the_naming_keys_so_a_name_made_of_it_resolves():
    """'+run_name=${hydra:job.override_dirname}' was an InterpolationResolutionError: the name was part of itself."""
    assert list(compose_hydra([]).job.config.override_dirname.exclude_keys) == list(NAMING_KEYS)
    job = compose_hydra(["lr=1e-4", "+run_name=${hydra:job.override_dirname}"]).job
    assert job.override_dirname == "lr-1e-4"


def test_safe_names():
    assert safe_name("data_paths-[data/a,data/b]+lr-1e-4") == "data_paths-data-a-data-b+lr-1e-4"
    assert safe_name("arch-'hrm x'") == "arch-hrmx"
    assert safe_name("..") == ""
    long_a, long_b = safe_name("x-" + "1" * 300), safe_name("x-" + "1" * 299 + "2")
    assert len(long_a) == len(long_b) == MAX_NAME_LENGTH and long_a != long_b


def test_a_sweep_job_gets_a_name_a_directory_in_the_sweep_and_the_sweep_as_group():
    raw = compose_config(["data_paths=[unused]"])
    named = sweep_job_names(raw, "checkpoints/sweeps/2026-01-31_12-00-00", "arch.L_cycles-3+lr-0.0001", 1)
    config = parse_config(named)
    assert config.run_name == "arch.L_cycles-3+lr-0.0001"
    assert config.checkpoint_path == "checkpoints/sweeps/2026-01-31_12-00-00/arch.L_cycles-3+lr-0.0001"
    assert config.wandb_group == "2026-01-31_12-00-00"
    assert sweep_job_names(raw, "s", "", 3)["run_name"] == "job3"  # -m with nothing swept
    given = dict(raw, run_name="mine", checkpoint_path="elsewhere", wandb_group="team")
    assert sweep_job_names(given, "s", "lr-1", 0) == given


def test_the_continue_command_of_a_sweep_job_names_its_directory_and_group():
    raw = compose_config(["data_paths=[unused]"])
    config = parse_config(sweep_job_names(raw, "checkpoints/sweeps/S", "lr-0.001", 0))
    argv = ["--config-name", "cfg_pretrain", "lr=0.001", "stop_at_step=3",
            "+checkpoint_path=checkpoints/sweeps/S/lr-0.001", "wandb_group=S"]
    command = continue_command(argv, config, world_size=1)
    assert command.endswith("pretrain.py lr=0.001 +checkpoint_path=checkpoints/sweeps/S/lr-0.001 wandb_group=S "
                            "+run_name=lr-0.001 resume=auto")


def test_the_slurm_launcher_runs_each_job_as_tasks_of_one_allocation():
    """hydra/launcher=submitit_slurm as the README's example sets it: 4 tasks (the processes torchrun would start)
    and 4 GPUs per job, submitit's files in the sweep's directory."""
    launcher = compose_hydra(["hydra/launcher=submitit_slurm", "hydra.launcher.nodes=1",
                              "hydra.launcher.tasks_per_node=4", "hydra.launcher.gpus_per_node=4",
                              "hydra.launcher.timeout_min=4320"]).launcher
    settings = OmegaConf.to_container(launcher, resolve=True)
    assert settings["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert (settings["nodes"], settings["tasks_per_node"], settings["gpus_per_node"], settings["timeout_min"]) == \
        (1, 4, 4, 4320)
    folder = settings["submitit_folder"]
    assert folder.startswith("checkpoints/sweeps/") and folder.endswith("/.submitit/%j")


def test_the_joblib_launcher_is_there():
    launcher = OmegaConf.to_container(compose_hydra(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]).launcher)
    assert launcher["_target_"].endswith("JoblibLauncher") and launcher["n_jobs"] == 2


def test_the_run_logger_gives_the_wandb_run_its_group_and_tags(tmp_path, monkeypatch):
    """Read back from what offline wandb recorded."""
    offline_wandb(monkeypatch, tmp_path)
    run_dir = str(tmp_path / "run")
    RunLogger(run_dir, "p", "lr-0.001", {}, None, group="2026-01-31_12-00-00", tags=["sweep", "sudoku"]).finish()
    (run,) = [r.run for r in finished_run_records(run_dir) if r.WhichOneof("record_type") == "run"]
    assert (run.display_name, run.run_group, list(run.tags)) == ("lr-0.001", "2026-01-31_12-00-00", ["sweep", "sudoku"])
