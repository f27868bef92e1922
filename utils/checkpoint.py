"""Weight state dicts as published: with or without the `torch.compile` prefix `_orig_mod.`."""
import torch
from torch import nn

COMPILED_PREFIX = "_orig_mod."


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
