"""Resolve the published `module@Class` names used in configs (e.g. `losses@ACTLossHead`)."""
import importlib

from torch import nn


def load_model_class(identifier: str, prefix: str = "models.") -> type[nn.Module]:
    """`recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1` -> the class in
    `models/recursive_reasoning/trm.py`."""
    module_path, sep, class_name = identifier.partition("@")
    if not sep or not module_path or not class_name:
        raise ValueError(f"Model name {identifier!r} must look like 'module.path@ClassName'")
    try:
        module = importlib.import_module(prefix + module_path)
    except ModuleNotFoundError as err:
        raise ValueError(f"Model name {identifier!r}: no module {prefix + module_path!r} ({err})") from err
    if not hasattr(module, class_name):
        raise ValueError(f"Model name {identifier!r}: module {module.__name__!r} has no class {class_name!r}")
    return getattr(module, class_name)


def model_source_path(identifier: str, prefix: str = "models.") -> str:
    """Source file of a `module@Class` name (copied beside checkpoints, as published)."""
    module = importlib.import_module(prefix + identifier.partition("@")[0])
    return module.__file__
