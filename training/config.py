"""Typed training configuration, validated once at start-up, and the help of `pretrain.py`.

Hydra composes `config/cfg_pretrain.yaml` with the command-line overrides; `PretrainConfig`
then rejects unknown or mistyped keys and impossible combinations, and the model class's own
config (e.g. `TRMConfig`) checks the `arch` keys (`models.arch.check_arch_keys`), before any data is
read or weights are built. Nothing here imports torch.
"""
import math
import os
import random
import textwrap
from typing import Literal

import coolname
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evaluators.base import EvaluatorConfig
from models.arch import DERIVED_MODEL_KEYS, LOSS_KEY_HELP, ArchConfig, LossConfig, check_arch_keys, check_output_names
from models.recursive_reasoning.config import CONFIG_CLASSES
from rundir.layout import BEST_FILE, BEST_WEIGHTS, OUTPUTS_PATTERN, WEIGHTS_PATTERN
from utils.cli import DEVICE_HELP, NUM_THREADS_HELP, format_validation_error, keys_help, unknown_key_hint
from utils.errors import ConfigError

UNKNOWN_TRAINING_KEY_HINT = unknown_key_hint("pretrain.py")


class GeneratedDataConfig(BaseModel):
    """Offline data built on first use when `data_paths[0]` is missing (the quick demo needs no hub)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["sudoku", "maze", "arc"] = Field(description="which generator builds the dataset (arc: the "
                                                               "ConceptARC tasks shipped in kaggle/concept)")
    num_train: int | None = Field(None, description="sudoku, maze: training puzzles to generate")
    num_test: int | None = Field(None, description="sudoku, maze: test puzzles to generate")
    num_aug: int = Field(0, description="sudoku: shuffled copies of each train puzzle; arc: augmented copies of "
                                        "each task (`--num-aug`)")
    tasks: list[str] | None = Field(None, description="arc: only these task ids (`--tasks`; null = all)")
    max_tasks: int | None = Field(None, description="arc: only the first N tasks (`--max-tasks`; null = all)")
    aug: bool = Field(False, description="maze: add the 8 dihedral transforms of each train maze (`--aug`)")
    seed: int = Field(0, description="the generator's seed")
    blanks: int | None = Field(None, description="sudoku: exact number of blanks per puzzle (null = 45-55)")
    min_path_length: int | None = Field(None, description="maze: keep mazes whose shortest path is at least this "
                                                          "long (null = the generator's default)")

    @model_validator(mode="after")
    def _augmentation_of_the_kind(self) -> "GeneratedDataConfig":
        """Each kind has its own augmentation key, named as its builder's option."""
        if self.kind == "arc":
            return self._arc_keys()
        if self.tasks is not None or self.max_tasks is not None:
            raise ValueError("generate_if_missing.tasks and max_tasks select ARC tasks: leave them out for "
                             f"kind={self.kind} (its size is num_train and num_test)")
        for key in ("num_train", "num_test"):
            if getattr(self, key) is None:
                raise ValueError(f"generate_if_missing.{key} is missing: kind={self.kind} needs num_train and "
                                 "num_test (how many puzzles to generate)")
            if getattr(self, key) < 1:
                raise ValueError(f"generate_if_missing.{key} must be >= 1 (a dataset needs both splits), "
                                 f"got {getattr(self, key)}")
        if self.num_aug < 0:
            raise ValueError(f"generate_if_missing.num_aug must be >= 0, got {self.num_aug}")
        if self.kind == "maze" and self.num_aug:
            raise ValueError("generate_if_missing.num_aug counts Sudoku's shuffled copies; Maze has one augmentation, "
                             "its 8 dihedral transforms: use generate_if_missing.aug=true instead")
        if self.kind == "sudoku" and self.aug:
            raise ValueError("generate_if_missing.aug adds Maze's 8 dihedral transforms; for Sudoku give the number "
                             "of shuffled copies per puzzle as generate_if_missing.num_aug")
        return self

    def _arc_keys(self) -> "GeneratedDataConfig":
        """ARC builds from tasks that exist: no puzzle counts; at most one way to select tasks."""
        for key in ("num_train", "num_test", "min_path_length", "blanks"):
            if getattr(self, key) is not None:
                raise ValueError(f"generate_if_missing.{key} does not apply to kind=arc (it builds existing tasks): "
                                 "select them with tasks=[ID, ...] or max_tasks=N")
        if self.aug:
            raise ValueError("generate_if_missing.aug is Maze's; ARC's augmented copies per task are num_aug")
        if self.tasks is not None and self.max_tasks is not None:
            raise ValueError("generate_if_missing.tasks and max_tasks both select ARC tasks: give one of them")
        if self.max_tasks is not None and self.max_tasks < 1:
            raise ValueError(f"generate_if_missing.max_tasks must be >= 1, got {self.max_tasks}")
        if self.tasks is not None and not self.tasks:
            raise ValueError("generate_if_missing.tasks is empty: name some task ids, or null for all")
        if self.num_aug < 0:
            raise ValueError(f"generate_if_missing.num_aug must be >= 0, got {self.num_aug}")
        return self


class PretrainConfig(BaseModel):
    """The training keys. Field descriptions are the help `python pretrain.py --help` prints."""

    model_config = ConfigDict(extra="forbid")

    arch: ArchConfig = Field(description="the model and its keys: arch=NAME picks config/arch/NAME.yaml, "
                                         "arch.KEY=VALUE sets one")
    data_paths: list[str] = Field(description="built dataset directories to train on (their train splits)")
    data_paths_test: list[str] = Field([], description="datasets to evaluate on; [] = data_paths")
    evaluators: list[EvaluatorConfig] = Field([], description="evaluators run on each evaluation's outputs, "
                                                               "e.g. [{name: arc@ARC}] (ARC voting and pass@k)")

    global_batch_size: int = Field(description="examples per optimizer step, over all processes")
    epochs: int = Field(description="passes over the training set (the lr schedule's length)")
    lr: float = Field(description="peak learning rate of the network")
    lr_min_ratio: float = Field(description="final lr of the cosine schedule, as a fraction of lr (1 = constant)")
    lr_warmup_steps: int = Field(description="steps of linear warm-up from 0 to lr")
    weight_decay: float = Field(description="weight decay of the network (AdamATan2)")
    beta1: float = Field(description="AdamATan2 beta1")
    beta2: float = Field(description="AdamATan2 beta2")
    puzzle_emb_lr: float = Field(description="learning rate of the puzzle embedding (sign SGD)")
    puzzle_emb_weight_decay: float = Field(description="weight decay of the puzzle embedding")

    project_name: str | None = Field(None, description="wandb project and checkpoints/ subdirectory; "
                                                       "null = <Dataset>-ACT-torch")
    run_name: str | None = Field(None, description="run name; null = '<model class> <random words>' (contains "
                                                   "a space: quote it in commands)")
    load_checkpoint: str | None = Field(None, description=f"start from these weights ({WEIGHTS_PATTERN} file or "
                                                          "hf:// path)")
    puzzle_emb_reset: bool = Field(False, description="ours: with load_checkpoint, start every puzzle row at the "
                                                      "loaded rows' mean")
    checkpoint_path: str | None = Field(None, description="run directory; null = checkpoints/<project>/<run>")

    seed: int = Field(0, description="seed of the weights, the data order and the ACT exploration")
    checkpoint_every_eval: bool = Field(False, description=f"save the weights ({WEIGHTS_PATTERN}) at every evaluation")
    eval_interval: int | None = Field(None, description="epochs between evaluations (must divide epochs); "
                                                        "null = once, at the end")
    min_eval_interval: int | None = Field(0, description="first loader iteration (of eval_interval epochs) that "
                                                         "evaluates")
    eval_save_outputs: list[str] = Field([], description=f"outputs each evaluation saves as {OUTPUTS_PATTERN}, "
                                                         "e.g. [inputs, labels, preds, q_halt_logits]")
    max_eval_examples: int | None = Field(None, ge=1, description="ours: evaluate only the first N test examples "
                                                                  "of each test set, rounded up to whole groups "
                                                                  "(quick checks); null = all, as published")

    ema: bool = Field(False, description="evaluate and save an exponential moving average of the weights")
    ema_rate: float = Field(0.999, description="EMA decay per step")
    freeze_weights: bool = Field(False, description="train only the puzzle embedding")

    # Ours: where and how to run.
    device: str = Field("auto", description=DEVICE_HELP)
    compile: bool | None = Field(None, description="torch.compile; null = on CUDA only (DISABLE_COMPILE=1 "
                                                   "turns it off too)")
    wandb_mode: Literal["online", "offline", "disabled"] | None = Field(
        None, description="null = online when wandb credentials exist, else offline (never a login prompt)")
    wandb_group: str | None = Field(None, description="wandb group of the run; null = the sweep's name under -m "
                                                      "(docs/sweeps.md), else none")
    wandb_tags: list[str] = Field([], description="wandb tags of the run, e.g. [baseline,sudoku]")
    wandb_log_weights: bool = Field(False, description=f"at the end of a run: send the final {WEIGHTS_PATTERN} "
                                                       "weights to wandb as a model artifact named after the run "
                                                       f"(aliases latest, {WEIGHTS_PATTERN}); not when wandb is "
                                                       "disabled")
    num_threads: int | None = Field(None, ge=1, description=NUM_THREADS_HELP)
    num_workers: Literal[0, 1] = Field(1, description="data loader worker processes (0 = load in the main process)")
    log_interval: int = Field(1, ge=1, description="read (log, check) training metrics every N steps: no host "
                                                   "sync between")
    dist_timeout_s: float = Field(600, ge=1, description="seconds a collective waits for the other processes "
                                                         "before the job fails")

    # Ours: surviving preemption (see README "Resuming").
    resume: str | None = Field(None, description="auto = the newest complete training state in checkpoint_path; "
                                                 "or a path to one")
    checkpoint_interval: int | None = Field(None, description="also save the full training state every N steps")
    checkpoint_keep_last: int | None = Field(None, description="keep only the N newest checkpoints "
                                                               "(null = keep all, as published)")
    stop_at_step: int | None = Field(None, description="save and stop once this step is reached (time-limited jobs)")

    # Ours: after training (README "Test-time augmentation", "The best checkpoint").
    eval_tta: int = Field(0, ge=0, description="Sudoku/Maze: also answer each test puzzle under K transforms "
                                               "and vote")
    eval_tta_sudoku_check: bool = Field(False, description="Sudoku: prefer voted answers that are valid "
                                                           "completions of the clues")
    checkpoint_best_metric: str | None = Field(None, description="e.g. all/exact_accuracy or ARC/pass@2: keep "
                                                                 f"{BEST_WEIGHTS} + {BEST_FILE}")
    checkpoint_best_mode: Literal["max", "min"] = Field("max", description="whether a higher or a lower "
                                                                           "checkpoint_best_metric is better")

    # Ours: conveniences for small and offline runs (the quick demo).
    generate_if_missing: GeneratedDataConfig | None = Field(
        None, description="{kind: sudoku|maze, num_train, num_test, ...} or {kind: arc, max_tasks, num_aug}: build "
                          "data_paths[0] offline if missing")
    pictures: bool = Field(False, description="after training: predictions picture and training curves in the "
                                              "run directory")

    @field_validator("data_paths")
    @classmethod
    def _some_data(cls, paths: list[str]) -> list[str]:
        if not paths:
            raise ValueError("data_paths is empty; give at least one built dataset directory, "
                             "e.g. data_paths=[data/sudoku]")
        return paths

    @field_validator("eval_save_outputs")
    @classmethod
    def _known_outputs(cls, names: list[str]) -> list[str]:
        return check_output_names(names, "eval_save_outputs")

    @model_validator(mode="after")
    def _finite(self) -> "PretrainConfig":
        """Every float key is a finite number: nan or inf would only surface as a non-finite loss, after the
        run directory exists."""
        for key, value in self:
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{key} must be a finite number, got {value}")
        return self

    @model_validator(mode="after")
    def _names_stay_in_checkpoints(self) -> "PretrainConfig":
        """project_name and run_name are one directory level each under checkpoints/ (use checkpoint_path for
        a directory elsewhere)."""
        for key in ("project_name", "run_name"):
            name = getattr(self, key)
            if name is not None and ("/" in name or os.sep in name or name in ("", ".", "..")):
                raise ValueError(f"{key}={name!r} must be one directory name (no '/', not '.' or '..'): it "
                                 "names a folder under checkpoints/; give +checkpoint_path=DIR for another place")
        return self

    @model_validator(mode="after")
    def _check(self) -> "PretrainConfig":
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.global_batch_size < 1 or self.epochs < 1:
            raise ValueError("global_batch_size and epochs must be >= 1")
        if self.eval_tta_sudoku_check and not self.eval_tta:
            raise ValueError("eval_tta_sudoku_check checks the votes of test-time augmentation: set eval_tta=K too")
        if self.eval_interval is not None and (self.eval_interval < 1 or self.epochs % self.eval_interval):
            raise ValueError(f"eval_interval ({self.eval_interval}) must be >= 1 and divide epochs ({self.epochs})")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError(f"beta1 and beta2 must be in [0, 1), got {self.beta1}, {self.beta2}")
        if not 0 <= self.ema_rate <= 1:
            raise ValueError(f"ema_rate must be in [0, 1], got {self.ema_rate}")
        if self.lr_warmup_steps < 0:
            raise ValueError("lr_warmup_steps must be >= 0")
        for key in ("lr", "puzzle_emb_lr", "weight_decay", "puzzle_emb_weight_decay"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        if not 0 <= self.lr_min_ratio <= 1:
            raise ValueError(f"lr_min_ratio must be in [0, 1] (the final lr as a fraction of lr), "
                             f"got {self.lr_min_ratio}")
        for key in ("checkpoint_interval", "checkpoint_keep_last", "stop_at_step"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1 (or null), got {getattr(self, key)}")
        if self.freeze_weights and self.arch.model_keys.get("puzzle_emb_ndim", 0) == 0:
            raise ValueError("freeze_weights=True trains only the puzzle embedding, but arch.puzzle_emb_ndim is 0 "
                             "(no puzzle embedding): there would be nothing to train")
        if self.resume == "auto" and not (self.checkpoint_path or self.run_name):
            raise ValueError("resume=auto needs a fixed run directory: give +checkpoint_path=DIR or +run_name=NAME "
                             "(a derived run name is random, so a restarted job would not find its checkpoints)")
        return self

    @property
    def epochs_per_iter(self) -> int:
        """Epochs between evaluations (one loader iteration)."""
        return self.eval_interval if self.eval_interval is not None else self.epochs

    @property
    def total_iters(self) -> int:
        return self.epochs // self.epochs_per_iter


def parse_config(raw: dict) -> PretrainConfig:
    """The validated training config; unknown, unsupported or mistyped keys (arch keys too) stop here,
    before any dataset is read or generated."""
    try:
        config = PretrainConfig(**raw)
    except ValidationError as err:
        raise ConfigError("Invalid training configuration:\n"
                          + format_validation_error(err, unknown_hint=UNKNOWN_TRAINING_KEY_HINT)) from None
    check_arch_keys(config.arch)
    return config


# The run-name slug's own generator: Python's global `random` is seeded by every run (seed_everything), so a
# slug drawn from it repeats, e.g. for the second job of every sweep in one process.
_SLUG_RANDOM = random.SystemRandom()


def random_slug() -> str:
    """Two random words for a run name (`<Class> <slug>`), different on every call whatever was seeded."""
    coolname.replace_random(_SLUG_RANDOM)  # coolname's own default draws from the global stream
    return coolname.generate_slug(2)


def derive_names(config: PretrainConfig, slug: str) -> PretrainConfig:
    """Published naming: project `<Dataset>-ACT-torch`, run `<Class> <slug>`, checkpoints/<project>/<run>."""
    project = (config.project_name
               or f"{os.path.basename(os.path.normpath(config.data_paths[0])).capitalize()}-ACT-torch")
    run = config.run_name or f"{config.arch.name.split('@')[-1]} {slug}"
    path = config.checkpoint_path or os.path.join("checkpoints", project, run)
    return config.model_copy(update=dict(project_name=project, run_name=run, checkpoint_path=path))


# ---------------------------------------------------------------------------------------------
# `python pretrain.py --help`: every key, its description and the value this command would use
# ---------------------------------------------------------------------------------------------
def absent(model: type[BaseModel], values: dict) -> list[str]:
    """Fields the composed YAML does not set: Hydra adds them with `+key=value`."""
    return [name for name in model.model_fields if name not in values]


def training_help(composed: dict, config_name: str) -> str:
    """The help of pretrain.py for one composed configuration (the defaults shown are its values)."""
    arch = composed.get("arch") or {}
    loss = arch.get("loss") or {}
    generated = composed.get("generate_if_missing") or {}
    sections = [
        textwrap.fill(f"Training keys of config/{config_name}.yaml with this command's overrides (key=value; "
                      "`+key=value` adds a key the YAML does not set; `++key=value` sets it either way). The values "
                      "shown are the ones this command would train with.", width=100),
        keys_help(PretrainConfig, composed, skip={"arch"}, added=absent(PretrainConfig, composed)),
        "\ngenerate_if_missing keys (generate_if_missing.KEY=VALUE):",
        keys_help(GeneratedDataConfig, generated, prefix="generate_if_missing."),
        "\nModel keys (arch=NAME picks config/arch/NAME.yaml; arch.KEY=VALUE sets one):",
        keys_help(ArchConfig, arch, prefix="arch.", skip={"loss"}),
    ]
    config_cls = CONFIG_CLASSES.get(arch.get("name"))
    if config_cls is None:
        sections.append("  (a model of your own: its config class lists its keys)")
    else:
        sections.append(keys_help(config_cls, arch, prefix="arch.", skip=DERIVED_MODEL_KEYS,
                                  added=absent(config_cls, arch)))
    sections.append(keys_help(LossConfig, loss, prefix="arch.loss."))
    for key, value in loss.items():
        if key != "name":
            text = LOSS_KEY_HELP.get(key, "a keyword argument of the loss head")
            sections.append(f"  arch.loss.{key}={value}\n      {text}")
    sections.append("\nHydra's own options: python pretrain.py --hydra-help")
    return "\n".join(sections)
