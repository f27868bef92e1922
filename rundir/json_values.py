"""Metrics as JSON values, for every metrics file a run or an evaluation writes (metrics.jsonl, metrics.json).

JSON has no NaN or infinity: Python's json writes them bare (`NaN`), which other readers refuse, so a non-finite
value is written as null and the caller names the keys it affected."""
import math
from typing import Any

import numpy as np
import torch


def to_json_value(key: str, value: Any) -> Any:
    """Turn numpy/torch scalars into Python numbers so json (and wandb) can store them."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"Metric {key!r} is a tensor of shape {tuple(value.shape)}; only scalars can be logged")
        return value.item()
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise ValueError(f"Metric {key!r} is an array of shape {value.shape}; only scalars can be logged")
        return value.item()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    raise TypeError(f"Metric {key!r} has unsupported type {type(value).__name__}")


def json_metrics(metrics: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(the metrics as JSON values with NaN and inf as null, the keys that were not finite)."""
    values = {key: to_json_value(key, value) for key, value in metrics.items()}
    non_finite = [key for key, value in values.items() if isinstance(value, float) and not math.isfinite(value)]
    return {key: None if key in non_finite else value for key, value in values.items()}, non_finite
