"""Sweeps, `python pretrain.py -m key=a,b ...` (docs/sweeps.md): what each job is named, where it writes, its group.

Hydra runs one job per combination of the swept values. A job's run directory is `<hydra.sweep.dir>/<name>`
(one directory per sweep, `checkpoints/sweeps/<date>_<time>` by default), its name by default the job's
`hydra.job.override_dirname` made safe: the keys given several values, e.g. `arch.L_cycles-2+lr-1e-4`
(config/cfg_pretrain.yaml sets the separators); its wandb group is the sweep directory's name. Nothing here
imports torch.
"""
import hashlib
import os
import re

from utils.errors import ConfigError

# Keys that say where a job writes: one value for all jobs of a sweep sends them into one directory.
NAMING_KEYS = ("run_name", "checkpoint_path")
EXCLUDE_KEYS_OVERRIDE = "hydra.job.config.override_dirname.exclude_keys"
MAX_NAME_LENGTH = 100  # a directory name stays well under file systems' 255 bytes, and readable
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]")  # what Hydra's grammar, shells and file systems all take unquoted
_DROPPED = re.compile(r"[\[\]{}()'\"\s]")  # list brackets and quotes say nothing in a name


def parsed_overrides(overrides: list[str]) -> list | None:
    """Hydra's parse of command-line overrides; None when Hydra itself will reject them (it says why)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        return OverridesParser.create().parse_overrides(overrides)
    except HydraException:
        return None


def check_distinct_names(overrides: list) -> None:
    """Refuse, before any job starts, a sweep whose jobs would all get the same run_name or checkpoint_path."""
    task = [o for o in overrides if not o.is_hydra_override()]
    if not any(o.is_sweep_override() for o in task):
        return  # one job
    for override in task:
        if override.key_or_group in NAMING_KEYS and not override.is_sweep_override() \
                and "${" not in override.input_line:
            raise ConfigError(
                f"{override.input_line} gives every job of this sweep the same {override.key_or_group}, so they "
                "would all write into one run directory. Leave it out (each job is then named from its swept "
                "values, e.g. lr-1e-4, in checkpoints/sweeps/<date>_<time>/), or make it differ per job, e.g. "
                f"'+{override.key_or_group}=NAME-${{hydra:job.num}}' or "
                f"'+{override.key_or_group}=${{hydra:job.override_dirname}}' (docs/sweeps.md).")


def sweep_arguments(overrides: list[str]) -> list[str]:
    """What `pretrain.py -m` adds to Hydra's command line after checking it: the keys given one value are
    left out of each job's `hydra.job.override_dirname`, so that it names the job by its swept values only.
    (Unless the command sets that list itself.) Raises ConfigError for names shared by all jobs."""
    parsed = parsed_overrides(overrides)
    if parsed is None:
        return []
    check_distinct_names(parsed)
    if any(o.key_or_group == EXCLUDE_KEYS_OVERRIDE for o in parsed):
        return []
    task = [o for o in parsed if not o.is_hydra_override()]
    swept = {o.key_or_group for o in task if o.is_sweep_override()}  # also when given one value earlier on the line
    fixed = dict.fromkeys(o.key_or_group for o in task if o.key_or_group not in swept)
    return [f"{EXCLUDE_KEYS_OVERRIDE}=[{','.join([*NAMING_KEYS, *(k for k in fixed if k not in NAMING_KEYS)])}]"]


def first_job(overrides: list) -> list[str] | None:
    """The overrides of a sweep's first job: each swept key at its first value (what a misspelt key is checked
    on). None when a sweep cannot be listed without Hydra's config loader (glob, interval): Hydra checks it."""
    from hydra.errors import HydraException

    job = []
    for override in (o for o in overrides if not o.is_hydra_override()):
        if not override.is_sweep_override():
            job.append(override.input_line)
            continue
        try:
            job.append(f"{override.get_key_element()}={next(override.sweep_string_iterator())}")
        except HydraException:
            return None
    return job


def safe_name(text: str) -> str:
    """`text` as one directory name that shells and Hydra's override grammar take unquoted (brackets and quotes
    dropped, other unsafe characters as '-'); a long one is cut and ends in a hash of the whole."""
    name = _UNSAFE.sub("-", _DROPPED.sub("", text)).lstrip(".")
    if len(name) > MAX_NAME_LENGTH:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = f"{name[:MAX_NAME_LENGTH - 9]}-{digest}"
    return name


def sweep_job_names(raw: dict, sweep_dir: str, override_dirname: str, job_num: int) -> dict:
    """The raw config of one sweep job with what the user left unset filled in: run_name (from its swept values;
    `job<N>` when nothing was swept), checkpoint_path (`<sweep_dir>/<run_name>`) and wandb_group (the sweep's
    directory name)."""
    named = dict(raw)
    if named.get("run_name") is None:
        named["run_name"] = safe_name(override_dirname) or f"job{job_num}"
    if named.get("checkpoint_path") is None:
        named["checkpoint_path"] = os.path.join(sweep_dir, named["run_name"])
    if named.get("wandb_group") is None:
        named["wandb_group"] = sweep_name(sweep_dir)
    return named


def sweep_name(sweep_dir: str) -> str:
    """A sweep's name: its directory's (`checkpoints/sweeps/2026-01-31_12-00-00` -> `2026-01-31_12-00-00`)."""
    return os.path.basename(os.path.normpath(sweep_dir))
