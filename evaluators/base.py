"""What an evaluator is: its `evaluators:` entry in the training config, and what the evaluation loop calls.

An evaluator named `module@Class` in the config (e.g. `arc@ARC`) is the class `Class` of `evaluators/module.py`,
constructed once per test data path as `Class(data_path=..., eval_metadata=..., **extra keys of its entry)`
(`training.evaluation.create_evaluators`). Each evaluation then calls `begin_eval()`, `update_batch` for every
batch of that path's sets, and `result(...)` on every rank (`training.evaluation.evaluate`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # annotations only: the training config imports this module, and it stays free of torch
    import torch


class EvaluatorConfig(BaseModel):
    # Extra keys are the evaluator's keyword arguments.
    model_config = ConfigDict(extra="allow")
    name: str = Field(description="module@class under evaluators/, e.g. arc@ARC")


class Evaluator(Protocol):
    """What the evaluation loop relies on (see the module docstring for the constructor)."""

    required_outputs: set[str]  # batch fields and model outputs `update_batch` reads (the loop asks the model for them)
    # Optional (so not declared here): an evaluator that scores whole tasks and has an attribute
    # `scores_unseen_tasks` gets False when max_eval_examples evaluates only some tasks
    # (training.evaluation.create_evaluators): it should score those, not count the rest as failures.

    def begin_eval(self) -> None:
        """An evaluation starts (the evaluator may keep or drop what earlier evaluations recorded)."""

    def update_batch(self, batch: dict[str, torch.Tensor], preds: dict[str, torch.Tensor]) -> None:
        """Record one test batch and the model's outputs for it (at least `required_outputs` between them)."""

    def result(self, save_path: str | None, rank: int, world_size: int, group: Any = None) -> dict[str, float] | None:
        """Pool every rank's records; the metrics on rank 0 (None elsewhere), files written to `save_path` if given."""
