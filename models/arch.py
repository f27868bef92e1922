"""The `arch` keys of a training config: which model and loss head, and their keys, checked before any weights exist.

The published family's keys are checked against its config classes (`models/recursive_reasoning/config.py`)
without importing torch, so a mistyped key is named at once; `models/weights.py` builds the model from them.
"""
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from models.recursive_reasoning.config import CONFIG_CLASSES
from utils.errors import ConfigError

# Model config fields the trainer fills in from the dataset and the process count.
DERIVED_MODEL_KEYS = ("batch_size", "seq_len", "vocab_size", "num_puzzle_identifiers", "causal")
# The published loss head's keyword arguments and its loss types (models/losses.py LOSS_FUNCTIONS; a unit test
# keeps the two equal), known here without importing torch.
ACT_LOSS_HEAD = "losses@ACTLossHead"
LOSS_TYPES = ("stablemax_cross_entropy", "softmax_cross_entropy")
LOSS_KEY_HELP = {"loss_type": "stablemax_cross_entropy (published) | softmax_cross_entropy"}
# What an evaluation can save (`save_outputs`, `eval_save_outputs`): the batch fields (dataset/puzzle_dataset.py
# _collate), the loss head's and the models' outputs, and training/evaluation.py's HALT_STEPS with halt_early.
SAVABLE_OUTPUTS = ("inputs", "labels", "puzzle_identifiers", "logits", "preds", "q_halt_logits", "q_continue_logits",
                   "target_q_continue", "actual_steps", "halt_steps")
UNKNOWN_ARCH_KEY_HINT = "misspelt? `python pretrain.py arch=... --help` lists the architecture's keys"
# Model keys that were removed: key -> (the value that meant the model as it is now, why it went and what to do).
# Saved configs (all_config.yaml beside a checkpoint) and overrides may still carry one: at that value it is
# dropped (`ArchConfig`), so they load as before; any other value is refused (`check_arch_keys`).
REMOVED_MODEL_KEYS: dict[str, tuple[object, str]] = {
    "lma_chunk_pos": (False, "the option was removed (it measured no effect: the latent sequence already has "
                             "RoPE positions; docs/lma.md \"Options\"); remove the key or set it false (ignored); a "
                             "model trained with it loads only with the code of a commit before the removal"),
}


class LossConfig(BaseModel):
    # Extra keys are the loss head's keyword arguments (e.g. loss_type).
    model_config = ConfigDict(extra="allow")
    name: str = Field(description="the loss head: module@class under models/, e.g. losses@ACTLossHead")


class ArchConfig(BaseModel):
    # Extra keys are the model's config (checked by the model's own config class).
    model_config = ConfigDict(extra="allow")
    name: str = Field(description="the model: module@class under models/ (config/arch/*.yaml name the published ones)")
    loss: LossConfig = Field(description="the loss head and its keys (loss.name, loss.loss_type)")

    @model_validator(mode="before")
    @classmethod
    def _drop_removed_keys(cls, values):
        """A removed key at the value that meant today's model goes, so a config saved before its removal loads."""
        if isinstance(values, dict):
            return {key: value for key, value in values.items() if not _means_the_model_now(key, value)}
        return values

    @property
    def model_keys(self) -> dict:
        return dict(self.__pydantic_extra__ or {})


def _means_the_model_now(key: str, value) -> bool:
    """Whether `key` is a removed key given the value that meant the model as it is now (False, not 0)."""
    if key not in REMOVED_MODEL_KEYS:
        return False
    now = REMOVED_MODEL_KEYS[key][0]
    return type(value) is type(now) and value == now


def check_output_names(names: list[str], key: str) -> list[str]:
    """`names` if each is an output an evaluation can save, else a ValueError naming `key` and the choices."""
    unknown = [name for name in names if name not in SAVABLE_OUTPUTS]
    if unknown:
        raise ValueError(f"{key}: unknown output(s) {', '.join(unknown)}; choose from {', '.join(SAVABLE_OUTPUTS)}")
    return names


def _loss_key_problems(loss: LossConfig) -> list[str]:
    """The published loss head's keys; a loss head of the user's own checks its own when built."""
    if loss.name != ACT_LOSS_HEAD:
        return []
    keys = dict(loss.__pydantic_extra__ or {})
    problems = [f"  arch.loss.{key}: unknown key of {ACT_LOSS_HEAD} (its one key is loss_type)"
                for key in keys if key not in LOSS_KEY_HELP]
    if "loss_type" not in keys:
        problems.append(f"  arch.loss.loss_type: missing; choose one of {', '.join(LOSS_TYPES)}")
    elif keys["loss_type"] not in LOSS_TYPES:
        problems.append(f"  arch.loss.loss_type: unknown loss type {keys['loss_type']!r}; choose one of "
                        f"{', '.join(LOSS_TYPES)}")
    return problems


def check_arch_keys(arch: ArchConfig) -> None:
    """Each `arch.` key against the model's own config class: known, not another member's, of the right type.

    The checks that need the dataset (sequence length, LMA chunking) run when the model is built.
    """
    config_cls = CONFIG_CLASSES.get(arch.name)
    if config_cls is None:  # a model of the user's own: its module (and torch) must be imported to know its keys
        from models.registry import load_model_class
        try:
            config_cls = load_model_class(arch.name).config_cls
        except (ValueError, AttributeError) as err:
            raise ConfigError(f"Invalid training configuration:\n  arch.name: {err}") from None
    problems = _loss_key_problems(arch.loss)
    for key, value in arch.model_keys.items():
        if key in DERIVED_MODEL_KEYS:
            problems.append(f"  arch.{key}: set by the trainer from the dataset; remove it")
        elif key in REMOVED_MODEL_KEYS:  # at the value of the model now it was dropped already (ArchConfig)
            problems.append(f"  arch.{key}: {REMOVED_MODEL_KEYS[key][1]} (got {value!r})")
        elif key in config_cls.unsupported_keys:
            problems.append(f"  arch.{key}: not a key of this architecture: {config_cls.unsupported_keys[key]}")
        elif key not in config_cls.model_fields:
            problems.append(f"  arch.{key}: unknown key ({UNKNOWN_ARCH_KEY_HINT})")
        else:
            try:
                TypeAdapter(config_cls.model_fields[key].annotation).validate_python(value)
            except ValidationError as err:
                problems.append(f"  arch.{key}: {err.errors()[0]['msg']} (got {value!r})")
    if problems:
        raise ConfigError(f"Invalid arch configuration ({arch.name}):\n" + "\n".join(problems))


def arch_differences(saved: dict, now: dict, prefix: str = "arch") -> list[str]:
    """`arch.KEY: checkpoint A, now B` for each key (loss keys too) that differs between two dumped arch configs."""
    differences = []
    for key in [*saved, *(k for k in now if k not in saved)]:
        old, new = saved.get(key, "unset"), now.get(key, "unset")
        if isinstance(old, dict) and isinstance(new, dict):
            differences += arch_differences(old, new, f"{prefix}.{key}")
        elif old != new:
            differences.append(f"{prefix}.{key}: checkpoint {old}, now {new}")
    return differences
