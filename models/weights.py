"""The loss head built from the `arch` keys, and its weights: state-dict key names, wrappers, strict loading.

Published checkpoints are state dicts of a `torch.compile`d loss head (keys start with `_orig_mod.`);
ours are saved from the bare module. Both load here, into a module built by `build_model`.
"""
import torch
from pydantic import ValidationError
from torch import nn

from dataset.common import PuzzleDatasetMetadata
from models.arch import UNKNOWN_ARCH_KEY_HINT, ArchConfig
from models.recursive_reasoning.config import RecursiveReasoningConfig
from models.registry import load_model_class
from utils.cli import format_validation_error
from utils.cpu import AUTO, Choice, resolve_forward_dtype
from utils.errors import ConfigError

COMPILED_ATTR = "_orig_mod"  # where torch.compile keeps the module it wraps
COMPILED_PREFIX = f"{COMPILED_ATTR}."  # what it adds to the keys of its state dict
PUZZLE_EMB_KEY = "model.inner.puzzle_emb.weights"  # (num_puzzle_identifiers, puzzle_emb_ndim)
EMBED_TOKENS_KEY = "model.inner.embed_tokens.embedding_weight"  # (vocab_size, hidden_size): tells the task


def forward_dtype_choice(arch: ArchConfig, device: torch.device) -> Choice:
    """The forward dtype the model built from `arch` runs in on `device`, and why (`auto` is chosen here)."""
    requested = arch.model_keys.get("forward_dtype")
    if requested is None:  # not set: the model config's default
        return Choice(RecursiveReasoningConfig.model_fields["forward_dtype"].default, "default")
    return resolve_forward_dtype(requested, device)


def build_model(arch: ArchConfig, metadata: PuzzleDatasetMetadata, local_batch_size: int,
                device: torch.device) -> nn.Module:
    """The loss head around the model, on `device`, with arch keys validated by the model's config."""
    model_cls = load_model_class(arch.name)
    loss_cls = load_model_class(arch.loss.name)
    keys = arch.model_keys
    if keys.get("forward_dtype") == AUTO:
        keys["forward_dtype"] = forward_dtype_choice(arch, device).value
    model_config = dict(**keys, batch_size=local_batch_size, vocab_size=metadata.vocab_size,
                        seq_len=metadata.seq_len, num_puzzle_identifiers=metadata.num_puzzle_identifiers, causal=False)
    try:
        with torch.device(device):
            return loss_cls(model_cls(model_config), **(arch.loss.__pydantic_extra__ or {}))
    except ValidationError as err:
        raise ConfigError(f"Invalid arch configuration ({arch.name}):\n"
                          + format_validation_error(err, prefix="arch.", unknown_hint=UNKNOWN_ARCH_KEY_HINT)) from None


def uncompiled(module: nn.Module) -> nn.Module:
    """The bare module under torch.compile (`._orig_mod`) and DataParallel/DDP (`.module`) wrappers.

    Its parameter names and state-dict keys carry no wrapper prefix, so what is saved from it loads into
    the model however that is wrapped in the next run.
    """
    while True:
        if isinstance(module, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            module = module.module
        elif isinstance(getattr(module, COMPILED_ATTR, None), nn.Module):
            module = getattr(module, COMPILED_ATTR)
        else:
            return module


def strip_compiled_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Published checkpoints are state dicts of a `torch.compile`d module: keys start with `_orig_mod.`."""
    return {k.removeprefix(COMPILED_PREFIX): v for k, v in state_dict.items()}


def load_weights(module: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Strictly load `state_dict` (with or without `_orig_mod.`) into an uncompiled `module`."""
    state_dict = strip_compiled_prefix(state_dict)
    result = module.load_state_dict(state_dict, strict=False)
    problems = []
    if result.missing_keys:
        problems.append(f"missing keys: {result.missing_keys}")
    if result.unexpected_keys:
        problems.append(f"unexpected keys: {result.unexpected_keys}")
    if problems:
        raise ValueError("Checkpoint does not match the model (" + "; ".join(problems) + "). "
                         "Check that the arch config equals the one the checkpoint was trained with.")


def weights_vocab_size(weights: dict) -> int | None:
    """The token vocabulary of a (prefix-stripped) state dict, which tells its task; None without a token embedding."""
    return weights[EMBED_TOKENS_KEY].shape[0] if EMBED_TOKENS_KEY in weights else None
