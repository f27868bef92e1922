"""Processes that srun starts as the tasks of one SLURM job (the submitit_slurm launcher of a sweep with
tasks_per_node > 1) join the run as torchrun's processes would: torchrun's variables from SLURM's (utils/slurm.py),
checked without a cluster."""
import datetime
import os

import pytest
import torch.distributed as dist

from utils.distributed import init_distributed
from utils.slurm import first_host, torchrun_env_from_slurm

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.mark.parametrize("nodelist, first", [("gpu[03-05,09],cpu1", "gpu03"), ("node7", "node7"),
                                             ("a1,b2", "a1"), ("rack[2-3]-ib", "rack2-ib")])
def test_first_host_of_a_slurm_host_list(nodelist, first):
    assert first_host(nodelist) == first


SRUN_TASK = {"SLURM_STEP_NUM_TASKS": "8", "SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "123456",
             "SLURM_STEP_NODELIST": "gpu[03-04]", "SLURM_NTASKS": "8"}


def test_an_srun_task_gets_torchruns_variables():
    env = torchrun_env_from_slurm(SRUN_TASK)
    assert env == {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "gpu03",
                   "MASTER_PORT": str(20000 + 123456 % 20000)}
    assert torchrun_env_from_slurm(dict(SRUN_TASK, MASTER_ADDR="h", MASTER_PORT="1"))["MASTER_ADDR"] == "h"


@pytest.mark.parametrize("environ", [{},  # not under SLURM
                                     dict(SRUN_TASK, WORLD_SIZE="8"),  # torchrun under srun: torchrun's
                                     dict(SRUN_TASK, SLURM_STEP_NUM_TASKS="1"),  # one task
                                     {k: v for k, v in SRUN_TASK.items() if k != "SLURM_STEP_NUM_TASKS"}])  # sbatch
def test_other_processes_keep_their_variables(environ):
    assert torchrun_env_from_slurm(environ) == {}


def test_a_task_without_its_rank_says_what_is_missing():
    with pytest.raises(ValueError, match="SLURM_PROCID is not set"):
        torchrun_env_from_slurm({k: v for k, v in SRUN_TASK.items() if k != "SLURM_PROCID"})


def test_init_distributed_joins_an_srun_step_as_its_rank(monkeypatch):
    for name in TORCHRUN_VARIABLES:  # recorded absent, so that the test leaves none of them behind
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    for name, value in SRUN_TASK.items():
        monkeypatch.setenv(name, value)
    seen = {}
    monkeypatch.setattr(dist, "init_process_group", lambda **kwargs: seen.update(kwargs))
    ctx = init_distributed("cpu", timeout_s=15)
    assert (ctx.rank, ctx.world_size, ctx.local_rank) == (5, 8, 1)
    assert (seen["rank"], seen["world_size"], seen["init_method"]) == (5, 8, "env://")
    assert seen["timeout"] == datetime.timedelta(seconds=15)
    assert (os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"]) == ("gpu03", str(20000 + 123456 % 20000))
