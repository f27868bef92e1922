"""What a run directory holds, by name: the one place that spells these names, builds and parses them.

    all_config.yaml            the resolved training configuration
    metrics.jsonl              one JSON line per logged step (train/*, <set>/*, evaluator metrics)
    curves.png                 the training curves (pictures=true)
    predictions.html           the last evaluation's predictions, drawn (pictures=true)
    step_N                     weights of the evaluated model (EMA weights with ema=True)
    step_best, best.json       the weights of the best evaluation and its step, metric and value
    train_state_step_N/        the full, resumable training state (rundir/states.py):
        state.pt                   what all ranks share: weights, EMA shadow, optimizers, counters, config
        rank<r>.pt                 what is per rank: RNG states and the ACT carry
    train_state_step_N.tmp/    a training state being written (renamed to train_state_step_N/ when complete)
    step_N_all_preds.R         outputs an evaluation saved on rank R (eval_save_outputs)
    evaluator_<NAME>_step_N/   what an evaluator wrote (e.g. the ARC submission.json)
    run.lock                   held by the run using the directory (rundir/lock.py)
    wandb_id                   the wandb run id, reused when the run resumes
    wandb/                     wandb's own files (offline runs)
    *.py                       the model's source files, copied when the run starts
    eval_<NAME>/               what evaluate.py wrote for a checkpoint of the run (its default output directory)
    abandoned_after_step_N[-k]/  what a resume from the older state N moved aside: the later attempt's states,
                               weights, outputs, best and metrics (docs/running.md, "Reliability")
        unfinished                 present while the move is under way (a kill mid-move: the next run finishes it)

Nothing else: `foreign_entries` names what a run did not write (a new run refuses such a directory).

evaluate.py writes into an output directory (by default `eval_<checkpoint name>` beside the checkpoint):
metrics.json, and evaluator directories and outputs files named as in a run directory.

A sweep (`pretrain.py -m`, docs/sweeps.md) has one directory, `checkpoints/sweeps/<date>_<time>/` (Hydra's
`hydra.sweep.dir`, set in config/cfg_pretrain.yaml): a run directory per job, named by training/sweeps.py, beside
`multirun.yaml` (Hydra's record of the sweep) and, with the SLURM launcher, `.submitit/` (its scripts and logs).
"""
import os
import re

CONFIG_FILE = "all_config.yaml"
METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
PREDICTIONS_PICTURE = "predictions.html"
BEST_WEIGHTS = "step_best"
BEST_FILE = "best.json"
LOCK_FILE = "run.lock"
WANDB_ID_FILE = "wandb_id"
SHARED_STATE_FILE = "state.pt"  # inside a training state directory
TMP_SUFFIX = ".tmp"  # a training state directory being written
EVAL_METRICS_FILE = "metrics.json"  # what evaluate.py writes into its output directory
EVAL_DIR_PREFIX = "eval_"  # evaluate.py's default output directory: eval_<checkpoint name>[+<choice>...]
EVAL_CHOICE_SEP = "+"  # before each evaluation choice that differs from the default (eval_step_8+tta8+halt_early)
WANDB_DIR = "wandb"
UNFINISHED_MOVE_FILE = "unfinished"  # inside an abandoned-attempt directory while things are moved into it

# Names with numbers in them: one template each, which both builds and parses them.
_WEIGHTS = "step_{step}"
_TRAIN_STATE = "train_state_step_{step}"
_RANK_STATE = "rank{rank}.pt"
_OUTPUTS = "step_{step}_all_preds.{rank}"
_EVALUATOR_DIR = "evaluator_{name}_step_{step}"
_ABANDONED = "abandoned_after_step_{step}"

# How messages and help name them.
WEIGHTS_PATTERN = _WEIGHTS.format(step="N")
TRAIN_STATE_PATTERN = _TRAIN_STATE.format(step="N")
OUTPUTS_PATTERN = _OUTPUTS.format(step="N", rank="R")
EVALUATOR_DIR_PATTERN = _EVALUATOR_DIR.format(name="<NAME>", step="N")


def _matcher(template: str) -> re.Pattern:
    """A regex that fully matches the names `template` builds, with its numbers as groups `step` and `rank`."""
    pattern = re.escape(template)
    for field in ("step", "rank"):
        pattern = pattern.replace(re.escape("{" + field + "}"), rf"(?P<{field}>\d+)")
    return re.compile(pattern)


_WEIGHTS_NAME = _matcher(_WEIGHTS)
_TRAIN_STATE_NAME = _matcher(_TRAIN_STATE)
_TRAIN_STATE_TMP_NAME = _matcher(_TRAIN_STATE + TMP_SUFFIX)
_OUTPUTS_NAME = _matcher(_OUTPUTS)
_EVALUATOR_DIR_NAME = re.compile(re.escape(_EVALUATOR_DIR).replace(re.escape("{name}"), ".+")
                                 .replace(re.escape("{step}"), r"\d+"))
_EVALUATOR_STEP = re.compile(_EVALUATOR_DIR_NAME.pattern.replace(r"\d+", r"(?P<step>\d+)"))
_ABANDONED_NAME = re.compile(_matcher(_ABANDONED).pattern + r"(-\d+)?")
_MODEL_SOURCE_NAME = re.compile(r"[A-Za-z_]\w*\.py")
# utils/atomic.temporary_path: `<final name>.tmp-<PID>-<8 hex digits>` while a file is written
_TEMPORARY_NAME = re.compile(r"(?P<final>.+)\.tmp-\d+-[0-9a-f]{8}")


# ---------------------------------------------------------------------------------------------
# Weight files, saved outputs, evaluator directories
# ---------------------------------------------------------------------------------------------
def weights_name(step: int) -> str:
    return _WEIGHTS.format(step=step)


def weights_path(run_dir: str, step: int) -> str:
    return os.path.join(run_dir, weights_name(step))


def weights_step(name: str) -> int | None:
    """N of a `step_N` weights file name (a base name), None for any other name."""
    match = _WEIGHTS_NAME.fullmatch(name)
    return int(match["step"]) if match else None


def weight_steps(run_dir: str) -> list[int]:
    """Steps N of the `step_N` weight files in `run_dir`, ascending."""
    return sorted(step for name in os.listdir(run_dir) if (step := weights_step(name)) is not None)


def outputs_name(step: int | str, rank: int | str = 0) -> str:
    """`step_N_all_preds.R` (a base name); a string step or rank names it in messages (`outputs_name("N", 0)`)."""
    return _OUTPUTS.format(step=step, rank=rank)


def outputs_path(run_dir: str, step: int, rank: int = 0) -> str:
    return os.path.join(run_dir, outputs_name(step, rank))


def outputs_steps(run_dir: str, rank: int = 0) -> list[int]:
    """Steps N of the `step_N_all_preds.<rank>` files in `run_dir`, ascending."""
    return sorted(int(m["step"]) for name in os.listdir(run_dir)
                  if (m := _OUTPUTS_NAME.fullmatch(name)) and m["rank"] == str(rank))


def evaluator_dir(run_dir: str, evaluator_name: str, step: int) -> str:
    return os.path.join(run_dir, _EVALUATOR_DIR.format(name=evaluator_name, step=step))


def lock_path(run_dir: str) -> str:
    return os.path.join(run_dir, LOCK_FILE)


# ---------------------------------------------------------------------------------------------
# Training state directories
# ---------------------------------------------------------------------------------------------
def train_state_dir(run_dir: str, step: int) -> str:
    return os.path.join(run_dir, _TRAIN_STATE.format(step=step))


def temporary_train_state_dir(state_dir: str) -> str:
    """Where `state_dir` is written until it is complete."""
    return state_dir + TMP_SUFFIX


def list_train_states(run_dir: str) -> list[tuple[int, str]]:
    """(N, path) of the complete training states `train_state_step_N` in `run_dir`, oldest first."""
    if not os.path.isdir(run_dir):
        return []
    return sorted((int(m["step"]), os.path.join(run_dir, name)) for name in os.listdir(run_dir)
                  if (m := _TRAIN_STATE_NAME.fullmatch(name)))


def temporary_train_states(run_dir: str) -> list[str]:
    """Paths of the `train_state_step_N.tmp` directories in `run_dir` (saves that never completed)."""
    if not os.path.isdir(run_dir):
        return []
    return sorted(os.path.join(run_dir, name) for name in os.listdir(run_dir) if _TRAIN_STATE_TMP_NAME.fullmatch(name))


def shared_state_path(state_dir: str) -> str:
    return os.path.join(state_dir, SHARED_STATE_FILE)


def rank_state_path(state_dir: str, rank: int) -> str:
    return os.path.join(state_dir, _RANK_STATE.format(rank=rank))


# ---------------------------------------------------------------------------------------------
# Beside a weights file
# ---------------------------------------------------------------------------------------------
def run_dir_of(weights_file: str) -> str:
    """The directory a weights file lies in (its run directory, for one training wrote)."""
    return os.path.dirname(os.path.abspath(weights_file))


def config_beside(weights_file: str) -> str:
    """The training config that goes with a weights file: the all_config.yaml beside it."""
    return os.path.join(run_dir_of(weights_file), CONFIG_FILE)


def default_eval_dir(weights_file: str, choices: list[str] = ()) -> str:
    """evaluate.py's output directory for a local weights file: `eval_<its name>` beside it, followed by
    `+<choice>` for each evaluation choice that differs from the default, so that ablations do not collide."""
    name = EVAL_CHOICE_SEP.join([EVAL_DIR_PREFIX + os.path.basename(weights_file), *choices])
    return os.path.join(run_dir_of(weights_file), name)


# ---------------------------------------------------------------------------------------------
# Abandoned attempts, and what a run did not write
# ---------------------------------------------------------------------------------------------
def abandoned_dir(run_dir: str, step: int) -> str:
    """A new `abandoned_after_step_N` (`-2`, `-3`, ... when one of that name exists)."""
    base = os.path.join(run_dir, _ABANDONED.format(step=step))
    path, k = base, 1
    while os.path.lexists(path):
        k += 1
        path = f"{base}-{k}"
    return path


def unfinished_moves(run_dir: str) -> list[tuple[int, str]]:
    """(N, path) of the abandoned-attempt directories whose move aside a kill cut short (they hold the marker)."""
    if not os.path.isdir(run_dir):
        return []
    return sorted((int(m["step"]), os.path.join(run_dir, name)) for name in os.listdir(run_dir)
                  if (m := _ABANDONED_NAME.fullmatch(name))
                  and os.path.exists(os.path.join(run_dir, name, UNFINISHED_MOVE_FILE)))


def entries_after(run_dir: str, step: int) -> list[str]:
    """Names of what `run_dir` holds of steps after `step`: training states (complete or not), weights, saved
    outputs, evaluator directories and evaluate.py's default output directories of those weights, sorted."""
    found = []
    for name in os.listdir(run_dir):
        weights = name.removeprefix(EVAL_DIR_PREFIX).split(EVAL_CHOICE_SEP)[0]
        match = (_TRAIN_STATE_NAME.fullmatch(name) or _TRAIN_STATE_TMP_NAME.fullmatch(name)
                 or _WEIGHTS_NAME.fullmatch(name) or _OUTPUTS_NAME.fullmatch(name) or _EVALUATOR_STEP.fullmatch(name)
                 or (name != weights and _WEIGHTS_NAME.fullmatch(weights)))
        if match and int(match["step"]) > step:
            found.append(name)
    return sorted(found)


_RUN_FILES = {CONFIG_FILE, METRICS_FILE, CURVES_FILE, PREDICTIONS_PICTURE, BEST_WEIGHTS, BEST_FILE, LOCK_FILE,
              WANDB_ID_FILE}


def _final_name(name: str) -> str:
    """The name a temporary (`NAME.tmp-PID-XXXXXXXX`, utils/atomic.py) is renamed to; other names as they are."""
    temporary = _TEMPORARY_NAME.fullmatch(name)
    return temporary["final"] if temporary else name


def _own_file(name: str) -> bool:
    temporary = _TEMPORARY_NAME.fullmatch(name)
    if temporary:
        name = temporary["final"]
    return (name in _RUN_FILES or _WEIGHTS_NAME.fullmatch(name) is not None
            or _OUTPUTS_NAME.fullmatch(name) is not None or _MODEL_SOURCE_NAME.fullmatch(name) is not None)


def _own_state_file(name: str) -> bool:
    temporary = _TEMPORARY_NAME.fullmatch(name)
    name = temporary["final"] if temporary else name
    return name == SHARED_STATE_FILE or _matcher(_RANK_STATE).fullmatch(name) is not None


def foreign_state_files(state_dir: str) -> list[str]:
    """Entries of a training state directory that are not state files (relative to its run directory)."""
    base = os.path.basename(state_dir)
    with os.scandir(state_dir) as entries:
        return sorted(f"{base}/{e.name}" for e in entries
                      if e.is_symlink() or not e.is_file() or not _own_state_file(e.name))


def foreign_entries(run_dir: str) -> list[str]:
    """What in `run_dir` a run (or evaluate.py) does not write, sorted; directories end in "/".

    A symbolic link is never ours; inside a training state only its state files are; evaluator, evaluation,
    wandb and abandoned-attempt directories are ours with all they hold."""
    foreign = []
    with os.scandir(run_dir) as scan:
        entries = sorted(scan, key=lambda e: e.name)
    for entry in entries:
        name = entry.name
        if entry.is_symlink():
            foreign.append(name)
        elif entry.is_file():
            if not _own_file(name):
                foreign.append(name)
        elif not entry.is_dir():
            foreign.append(name)
        elif _TRAIN_STATE_NAME.fullmatch(name) or _TRAIN_STATE_TMP_NAME.fullmatch(name):
            foreign += foreign_state_files(entry.path)
        elif not (_EVALUATOR_DIR_NAME.fullmatch(name) or _ABANDONED_NAME.fullmatch(_final_name(name))
                  or name == WANDB_DIR or name.startswith(EVAL_DIR_PREFIX) or name == LOCK_FILE + ".takeover"):
            foreign.append(name + "/")
    return foreign
