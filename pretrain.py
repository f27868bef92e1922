"""Train a recursive reasoning model: `python pretrain.py arch=trm data_paths="[data/...]" ...`.

Also under torchrun: `torchrun --nproc-per-node N pretrain.py ...`. The configuration is
`config/cfg_pretrain.yaml` plus Hydra overrides; see the README for the paper's commands.
`python pretrain.py [overrides] --help` lists every key with the value those overrides give it.
"""
import os
import re
import shlex
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from training.config import parse_config, training_help
from training.sweeps import first_job, parsed_overrides, sweep_arguments, sweep_job_names
from utils.cli import HELP_FLAGS, REPO_ROOT, exit_with_message
from utils.errors import ConfigError, UserFacingError

CONFIG_DIR = os.path.join(REPO_ROOT, "config")
DEFAULT_CONFIG = "cfg_pretrain"
MULTIRUN_FLAGS = ("-m", "--multirun")


def run(raw_config: dict, argv: list[str] | None = None) -> dict | None:
    config = parse_config(raw_config)  # every key checked before the training code (and any data) is loaded
    from training.loop import train_until_stopped
    from utils.distributed import collective_error, destroy_distributed, init_distributed

    ctx = init_distributed(config.device, timeout_s=config.dist_timeout_s)
    try:
        outcome = train_until_stopped(config, ctx)
        if not outcome.finished and ctx.is_main and argv is not None:
            print(f"continue with: {continue_command(argv, outcome.config, ctx.world_size)}")
        return outcome.last_eval
    except RuntimeError as err:  # a collective outside utils/distributed.py (e.g. the sparse optimizer's) stalled
        converted = collective_error(err, ctx)
        if converted is None:
            raise
        raise converted from None
    finally:
        destroy_distributed(ctx)


# Overrides a continue command replaces: it names the run directory itself, resumes, and runs to the end.
_REPLACED_ON_CONTINUE = ("run_name", "resume", "stop_at_step")


def continue_command(argv: list[str], config, world_size: int) -> str:
    """This command, to paste to continue a stopped run in the same directory (and the same wandb run): its
    overrides, without stop_at_step, with resume=auto and the run's name (a random one included)."""
    name, overrides = split_help_arguments(argv)
    kept = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in _REPLACED_ON_CONTINUE]
    kept.append(f"+run_name={config.run_name}")  # also beside a checkpoint_path: the wandb run keeps its name
    config_name = ["--config-name", name] if name != DEFAULT_CONFIG else []
    script = os.path.relpath(os.path.join(REPO_ROOT, "pretrain.py"))
    launcher = ["python"] if world_size == 1 else ["torchrun", f"--nproc-per-node={world_size}"]
    return shlex.join([*launcher, script, *config_name, *kept, "resume=auto"])


def sweep_job(raw: dict) -> tuple[dict, list[str]]:
    """One job of a sweep (`-m`): its config with the names training/sweeps.py gives it, and the command line of
    this job alone (Hydra's overrides of the job, where it writes, its group), for its continue command."""
    job = HydraConfig.get()
    named = sweep_job_names(raw, job.sweep.dir, job.job.override_dirname, job.job.num)
    argv = ["--config-name", job.job.config_name, *job.overrides.task]
    if raw.get("checkpoint_path") is None:
        argv.append(f"+checkpoint_path={named['checkpoint_path']}")
    if raw.get("wandb_group") is None:
        argv.append(f"wandb_group={named['wandb_group']}")
    return named, argv


def split_help_arguments(argv: list[str]) -> tuple[str, list[str]]:
    """(config name, overrides) of a `--help` command line: Hydra's `--config-name X` / `-cn X` and the rest."""
    name, overrides, args = DEFAULT_CONFIG, [], iter(argv)
    for arg in args:
        if arg in HELP_FLAGS:
            continue
        if arg in ("--config-name", "-cn"):
            name = next(args, name)
        elif arg.startswith("--config-name="):
            name = arg.split("=", 1)[1]
        else:
            overrides.append(arg)
    return name, overrides


def check_sweep(argv: list[str]) -> list[str]:
    """A sweep's command line (`-m`), checked before any job starts: names its jobs would share, a misspelt key
    (on the first job); what to add to it (training/sweeps.py)."""
    from hydra._internal.utils import get_args_parser  # Hydra's own parser of its command line

    args = get_args_parser().parse_known_args(argv)[0]
    added = sweep_arguments(args.overrides)
    job = first_job(parsed_overrides(args.overrides) or [])
    if job is not None:
        check_override_keys(["--config-name", args.config_name or DEFAULT_CONFIG, *job])
    return added


def compose_config(overrides: list[str], config_name: str = DEFAULT_CONFIG) -> dict:
    """The raw config `python pretrain.py --config-name NAME OVERRIDES` trains with (Hydra's compose API)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return OmegaConf.to_container(compose(config_name=config_name, overrides=overrides), resolve=True)


def print_help(argv: list[str]) -> None:
    """Our `--help`: the keys of the typed configs (descriptions from them, values from the composed YAML)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    name, overrides = split_help_arguments(argv)
    try:
        composed = compose_config(overrides, name)
    except (HydraException, OmegaConfBaseException) as err:
        message = str(err).split("\nConfig search path")[0]  # Hydra appends its search path: not the user's concern
        raise ConfigError(f"Cannot compose the configuration {name} with {overrides}: {message}") from None
    print(__doc__.strip() + "\n\n" + training_help(composed, name))


def flat_keys(tree: dict, prefix: str = "") -> list[str]:
    """Every key of a composed config as typed on the command line (`arch.L_cycles`)."""
    keys = []
    for key, value in tree.items():
        keys.append(prefix + str(key))
        if isinstance(value, dict):
            keys += flat_keys(value, f"{prefix}{key}.")
    return keys


def check_override_keys(argv: list[str]) -> None:
    """A misspelt key without `+` (`arch.L_cylces=2`): Hydra's advice is to add `+`, the wrong fix for a typo.
    Compose first (a few tens of ms) and name the key meant instead. Other failures are left to Hydra."""
    from difflib import get_close_matches

    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException
    name, overrides = split_help_arguments(argv)
    try:
        compose_config(overrides, name)
        return
    except (HydraException, OmegaConfBaseException) as err:
        bad = re.match(r"Could not override '([^']+)'", str(err))
    if bad is None:
        return
    key = bad.group(1)
    rest = [o for o in overrides if o.split("=", 1)[0] != key]
    try:
        known = flat_keys(compose_config(rest, name))
    except (HydraException, OmegaConfBaseException):
        known = flat_keys(compose_config([], name))
    meant = get_close_matches(key, known, n=1, cutoff=0.6)
    guess = f"did you mean {meant[0]}? " if meant else ""
    raise ConfigError(f"{key} is not a key of the configuration; {guess}`python pretrain.py --help` lists the keys "
                      f"(a key of your own is added with +{key}=...).")


@hydra.main(config_path="config", config_name=DEFAULT_CONFIG, version_base="1.3")
def main(hydra_config: DictConfig) -> None:
    try:
        raw, argv = OmegaConf.to_container(hydra_config, resolve=True), sys.argv[1:]
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raw, argv = sweep_job(raw)
        run(raw, argv)
    except (UserFacingError, FileNotFoundError) as err:
        # Mistakes in the command line, missing data, unusable checkpoints, divergence: say what to fix, once.
        exit_with_message(err)


if __name__ == "__main__":
    if any(arg in HELP_FLAGS for arg in sys.argv[1:]):  # Hydra's own help stays at --hydra-help
        try:
            print_help(sys.argv[1:])
        except UserFacingError as err:
            exit_with_message(err)
        sys.exit(0)
    try:
        if any(arg in MULTIRUN_FLAGS for arg in sys.argv[1:]):
            sys.argv += check_sweep(sys.argv[1:])
        elif not any(arg.startswith("hydra") for arg in sys.argv[1:]):
            check_override_keys(sys.argv[1:])
    except UserFacingError as err:
        exit_with_message(err)
    main()
