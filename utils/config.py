"""Typed training configuration, validated once at start-up.

Hydra composes `config/cfg_pretrain.yaml` with the command-line overrides; `PretrainConfig`
then rejects unknown or mistyped keys and impossible combinations, and the model class's own
config (e.g. `TRMConfig`) checks the `arch` keys, before any data is read or weights are built.
"""
import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from utils.errors import ConfigError

__all__ = ["ConfigError", "PretrainConfig", "parse_config", "derive_names", "format_validation_error"]


class LossConfig(BaseModel):
    # Extra keys are the loss head's keyword arguments (e.g. loss_type).
    model_config = ConfigDict(extra="allow")
    name: str


class ArchConfig(BaseModel):
    # Extra keys are the model's config (checked by the model's own config class).
    model_config = ConfigDict(extra="allow")
    name: str
    loss: LossConfig

    @property
    def model_keys(self) -> dict:
        return dict(self.__pydantic_extra__ or {})


class EvaluatorConfig(BaseModel):
    # Extra keys are the evaluator's keyword arguments.
    model_config = ConfigDict(extra="allow")
    name: str


class GeneratedDataConfig(BaseModel):
    """Offline data built on first use when `data_paths[0]` is missing (the quick demo needs no hub)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["sudoku", "maze"]
    num_train: int
    num_test: int
    num_aug: int = 0  # sudoku: shuffled copies of each train puzzle (`--num-aug`)
    aug: bool = False  # maze: add the 8 dihedral transforms of each train maze (`--aug`)
    seed: int = 0
    blanks: int | None = None  # sudoku: exact number of blanks per puzzle
    min_path_length: int | None = None  # maze: keep mazes whose shortest path is at least this long

    @model_validator(mode="after")
    def _augmentation_of_the_kind(self) -> "GeneratedDataConfig":
        """Each kind has its own augmentation key, named as its builder's option."""
        if self.num_aug < 0:
            raise ValueError(f"generate_if_missing.num_aug must be >= 0, got {self.num_aug}")
        if self.kind == "maze" and self.num_aug:
            raise ValueError("generate_if_missing.num_aug counts Sudoku's shuffled copies; Maze has one augmentation, "
                             "its 8 dihedral transforms: use generate_if_missing.aug=true instead")
        if self.kind == "sudoku" and self.aug:
            raise ValueError("generate_if_missing.aug adds Maze's 8 dihedral transforms; for Sudoku give the number "
                             "of shuffled copies per puzzle as generate_if_missing.num_aug")
        return self


class PretrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    arch: ArchConfig
    data_paths: list[str]
    data_paths_test: list[str] = []
    evaluators: list[EvaluatorConfig] = []

    global_batch_size: int
    epochs: int
    lr: float
    lr_min_ratio: float
    lr_warmup_steps: int
    weight_decay: float
    beta1: float
    beta2: float
    puzzle_emb_lr: float
    puzzle_emb_weight_decay: float

    project_name: str | None = None
    run_name: str | None = None
    load_checkpoint: str | None = None
    puzzle_emb_reset: bool = False  # ours: with load_checkpoint, start every puzzle row at the loaded rows' mean
    checkpoint_path: str | None = None

    seed: int = 0
    checkpoint_every_eval: bool = False
    eval_interval: int | None = None
    min_eval_interval: int | None = 0
    eval_save_outputs: list[str] = []

    ema: bool = False
    ema_rate: float = 0.999
    freeze_weights: bool = False

    # Ours: where and how to run.
    device: str = "auto"
    compile: bool | None = None
    wandb_mode: Literal["online", "offline", "disabled"] | None = None
    num_workers: Literal[0, 1] = 1
    log_interval: int = Field(1, ge=1)  # read (log, check) training metrics every N steps: no host sync between
    dist_timeout_s: float = Field(600, ge=1)  # seconds a collective waits for the other processes before the job fails

    # Ours: surviving preemption (see README "Resuming").
    resume: str | None = None  # "auto" = newest complete training state in checkpoint_path; or a path to one
    checkpoint_interval: int | None = None  # also save the full training state every N steps
    checkpoint_keep_last: int | None = None  # keep only the N newest checkpoints (null = keep all, as published)
    stop_at_step: int | None = None  # save and stop once this step is reached (time-limited jobs)

    # Ours: after training (README "Test-time augmentation", "The best checkpoint").
    eval_tta: int = Field(0, ge=0)  # Sudoku/Maze: also answer each test puzzle under K transforms and vote
    eval_tta_sudoku_check: bool = False  # Sudoku: prefer voted answers that are valid completions of the clues
    checkpoint_best_metric: str | None = None  # e.g. all/exact_accuracy or ARC/pass@2: keep step_best + best.json
    checkpoint_best_mode: Literal["max", "min"] = "max"

    # Ours: conveniences for small and offline runs (the quick demo).
    generate_if_missing: GeneratedDataConfig | None = None
    pictures: bool = False  # after training: predictions picture and training curves in the run directory

    @field_validator("data_paths")
    @classmethod
    def _some_data(cls, paths: list[str]) -> list[str]:
        if not paths:
            raise ValueError("data_paths is empty; give at least one built dataset directory, "
                             "e.g. data_paths=[data/sudoku]")
        return paths

    @model_validator(mode="after")
    def _check(self) -> "PretrainConfig":
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


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    """One line per problem: `key.path: message`, naming the offending key as the user typed it."""
    lines = []
    for problem in err.errors():
        where = ".".join(str(part) for part in problem["loc"])
        key = f"{prefix}{where}" if where else prefix.rstrip(".") or "config"
        if problem["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key (misspelt? see config/cfg_pretrain.yaml and config/arch/*.yaml)")
        elif not where:  # a check across several keys: the message names them
            lines.append(f"  {problem['msg'].removeprefix('Value error, ')}")
        else:
            lines.append(f"  {key}: {problem['msg']} (got {problem.get('input')!r})")
    return "\n".join(lines)


def parse_config(raw: dict) -> PretrainConfig:
    """The validated training config; unknown, unsupported or mistyped keys (arch keys too) stop here,
    before any dataset is read or generated."""
    try:
        config = PretrainConfig(**raw)
    except ValidationError as err:
        raise ConfigError("Invalid training configuration:\n" + format_validation_error(err)) from None
    check_arch_keys(config.arch)
    return config


# Model config fields the trainer fills in from the dataset and the process count.
DERIVED_MODEL_KEYS = ("batch_size", "seq_len", "vocab_size", "num_puzzle_identifiers", "causal")


def check_arch_keys(arch: ArchConfig) -> None:
    """Each `arch.` key against the model's own config class: known, not another member's, of the right type.

    The checks that need the dataset (sequence length, LMA chunking) run when the model is built.
    """
    from models.recursive_reasoning.config import CONFIG_CLASSES

    config_cls = CONFIG_CLASSES.get(arch.name)
    if config_cls is None:  # a model of the user's own: its module (and torch) must be imported to know its keys
        from models.registry import load_model_class
        try:
            config_cls = load_model_class(arch.name).config_cls
        except (ValueError, AttributeError) as err:
            raise ConfigError(f"Invalid training configuration:\n  arch.name: {err}") from None
    problems = []
    for key, value in arch.model_keys.items():
        if key in DERIVED_MODEL_KEYS:
            problems.append(f"  arch.{key}: set by the trainer from the dataset; remove it")
        elif key in config_cls.unsupported_keys:
            problems.append(f"  arch.{key}: not a key of this architecture: {config_cls.unsupported_keys[key]}")
        elif key not in config_cls.model_fields:
            problems.append(f"  arch.{key}: unknown key (misspelt? see config/arch/*.yaml)")
        else:
            try:
                TypeAdapter(config_cls.model_fields[key].annotation).validate_python(value)
            except ValidationError as err:
                problems.append(f"  arch.{key}: {err.errors()[0]['msg']} (got {value!r})")
    if problems:
        raise ConfigError(f"Invalid arch configuration ({arch.name}):\n" + "\n".join(problems))


def derive_names(config: PretrainConfig, slug: str) -> PretrainConfig:
    """Published naming: project `<Dataset>-ACT-torch`, run `<Class> <slug>`, checkpoints/<project>/<run>."""
    project = (config.project_name
               or f"{os.path.basename(os.path.normpath(config.data_paths[0])).capitalize()}-ACT-torch")
    run = config.run_name or f"{config.arch.name.split('@')[-1]} {slug}"
    path = config.checkpoint_path or os.path.join("checkpoints", project, run)
    return config.model_copy(update=dict(project_name=project, run_name=run, checkpoint_path=path))
