"""A job's processes started by SLURM's srun instead of torchrun (e.g. Hydra's submitit_slurm launcher with
tasks_per_node > 1, docs/sweeps.md): the variables torchrun would have set, read from SLURM's.

    RANK = SLURM_PROCID, WORLD_SIZE = SLURM_STEP_NUM_TASKS, LOCAL_RANK = SLURM_LOCALID,
    MASTER_ADDR = the step's first node, MASTER_PORT = a port chosen from the job id

MASTER_ADDR and MASTER_PORT already set are kept. Only srun sets SLURM_STEP_NUM_TASKS, so a batch script that
runs `python pretrain.py` itself (one process, whatever --ntasks says) stays a single process.
"""
import re
from collections.abc import Mapping

_PORT_BASE, _PORT_SPAN = 20000, 20000  # ports 20000-39999: clear of the usual services and ephemeral ranges


def first_host(nodelist: str) -> str:
    """The first host of a SLURM host list: `gpu[03-05,09],cpu1` -> `gpu03`."""
    match = re.match(r"([^,\[]*)(?:\[([^\]]*)\])?([^,\[]*)", nodelist.strip())
    prefix, ranges, suffix = match.groups()
    if ranges is None:
        return prefix
    return prefix + re.split(r"[,-]", ranges)[0] + suffix


def torchrun_env_from_slurm(environ: Mapping[str, str]) -> dict[str, str]:
    """torchrun's variables for a process that srun started as one of several tasks; {} for anything else
    (torchrun's own variables present, outside srun, or a one-task step)."""
    if environ.get("WORLD_SIZE") or int(environ.get("SLURM_STEP_NUM_TASKS") or 1) <= 1:
        return {}
    missing = [name for name in ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_STEP_NODELIST", "SLURM_JOB_ID")
               if not environ.get(name)]
    if missing:
        raise ValueError(f"srun started {environ['SLURM_STEP_NUM_TASKS']} tasks but {', '.join(missing)} is not "
                         "set: launch with srun (or torchrun), which sets them")
    port = _PORT_BASE + int(environ["SLURM_JOB_ID"]) % _PORT_SPAN  # the tasks of one job agree on it
    return {"RANK": environ["SLURM_PROCID"], "WORLD_SIZE": environ["SLURM_STEP_NUM_TASKS"],
            "LOCAL_RANK": environ["SLURM_LOCALID"],
            "MASTER_ADDR": environ.get("MASTER_ADDR") or first_host(environ["SLURM_STEP_NODELIST"]),
            "MASTER_PORT": environ.get("MASTER_PORT") or str(port)}
