"""Evaluation: the ACT loop over a test split, per-set metrics, evaluators (docs/training.md, "Evaluation").

Used by the training loop after each eval interval and by `evaluate.py` on a saved checkpoint, with the
same narrow arguments, so a fresh evaluation of the final checkpoint equals the one logged in training
(evaluator metrics too, except where an evaluator pools earlier evaluations: ARC's aggregated voting).
"""
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from dataset.common import PuzzleDatasetMetadata, load_metadata
from dataset.puzzle_dataset import exposed_set_name
from dataset.tasks.permutation import TokenPermutation
from evaluators.base import Evaluator, EvaluatorConfig
from models.losses import COUNT, act_metrics
from models.registry import load_model_class
from models.weights import uncompiled
from rundir.layout import evaluator_dir, outputs_path
from training.data import to_device
from training.tta import tta_metric_sums, valid_completions_check
from utils.atomic import make_dirs, write_atomically
from utils.device import wide_float_dtype
from utils.distributed import DistContext, broadcast_object, reduce_to_main
from utils.errors import ConfigError


# ---------------------------------------------------------------------------------------------
# Evaluators: every configured one, once per test data path
# ---------------------------------------------------------------------------------------------
@dataclass
class PathEvaluator:
    """One configured evaluator for one test data path (as published: every evaluator, once per path).

    It sees only the batches of its path's sets. The first path's evaluator reports under the
    evaluator's own names (`ARC/pass@2`, `evaluator_ARC_step_N/`); path i > 0 adds i to the name
    (`ARC1/pass@2`, `evaluator_ARC1_step_N/`), as its sets are `all1`, ... (the published loop would
    let the last path's metrics overwrite the others').
    """

    evaluator: Evaluator
    path_index: int
    sets: frozenset[str]

    @property
    def name(self) -> str:
        base = type(self.evaluator).__name__
        return base if self.path_index == 0 else f"{base}{self.path_index}"

    def output_dir(self, save_dir: str, step: int) -> str:
        return evaluator_dir(save_dir, self.name, step)

    def rename(self, metrics: dict[str, float]) -> dict[str, float]:
        if self.path_index == 0:
            return metrics
        renamed = {}
        for key, value in metrics.items():
            head, sep, rest = key.partition("/")
            renamed[f"{head}{self.path_index}{sep}{rest}"] = value
        return renamed


def create_evaluators(specs: list[EvaluatorConfig], test_paths: list[str],
                      eval_metadata: PuzzleDatasetMetadata, capped: bool = False) -> list[PathEvaluator]:
    """Every evaluator of `specs` for every test data path; failing to construct one is an error, not a warning.

    `capped` (max_eval_examples): only part of the test split is evaluated, so an evaluator that scores whole tasks
    (`scores_unseen_tasks`, ARC) scores only those it saw, not the others as failures."""
    evaluators = []
    for spec in specs:
        try:
            cls = load_model_class(spec.name, prefix="evaluators.")
        except ValueError as err:
            raise ConfigError(f"evaluator {spec.name!r} is not available ({err}). "
                              "Remove it, e.g. evaluators=[] for Sudoku and Maze.") from None
        for index, path in enumerate(test_paths):
            sets = frozenset(exposed_set_name(name, index) for name in load_metadata(path, "test").sets)
            evaluator = cls(data_path=path, eval_metadata=eval_metadata, **(spec.__pydantic_extra__ or {}))
            if capped and hasattr(evaluator, "scores_unseen_tasks"):
                evaluator.scores_unseen_tasks = False
            evaluators.append(PathEvaluator(evaluator, index, sets))
    return evaluators


# ---------------------------------------------------------------------------------------------
# The evaluation loop
# ---------------------------------------------------------------------------------------------
@torch.inference_mode()
def evaluate(model: nn.Module, loader: Iterable, metadata: PuzzleDatasetMetadata, evaluators: list[PathEvaluator],
             ctx: DistContext, step: int, save_dir: str | None, save_outputs: Iterable[str] = (),
             halt_early: bool = False, tta: Sequence[TokenPermutation] = (), tta_sudoku_check: bool = False
             ) -> dict | None:
    """Run every test example through the ACT loop; per-set metrics (divided by count) on rank 0.

    By default every sequence runs halt_max_steps steps, as published. With `halt_early` a sequence
    stops at the first step its Q head says halt (see `run_act_halting_early`); `<set>/steps` is
    then the mean number of steps used. Outputs named in `save_outputs` (batch fields or model
    outputs) are written to `save_dir/step_N_all_preds.<rank>`. With `tta` transforms every batch is
    answered once more per transform and `<set>/tta_exact_accuracy` scores the vote (training/tta.py);
    the published metrics are those of the untransformed answers, unchanged.
    """
    model.eval()
    save_outputs = set(save_outputs)
    return_keys = set(save_outputs)
    for entry in evaluators:
        entry.evaluator.begin_eval()
        return_keys.update(entry.evaluator.required_outputs)
    if tta:
        return_keys.update(("preds", "q_halt_logits"))
    eligible_check = valid_completions_check(metadata.vocab_size, metadata.seq_len) \
        if tta and tta_sudoku_check else None
    run_act = run_act_halting_early if halt_early else run_act_all_steps

    set_ids = {name: i for i, name in enumerate(metadata.sets)}
    sums: dict[int, dict[str, torch.Tensor]] = {}
    saved: dict[str, list[torch.Tensor]] = {}
    dataset = getattr(loader, "dataset", None)
    total = dataset.num_test_batches() if hasattr(dataset, "num_test_batches") else None
    cap = dataset.cap_summary() if hasattr(dataset, "cap_summary") else None
    if cap and ctx.is_main:
        tqdm.write(cap)  # the metrics below are over these examples only
    progress = tqdm(desc="eval", unit="batch", total=total, disable=not ctx.is_main, leave=False)
    for set_name, batch, _ in loader:
        batch = to_device(batch, ctx.device)
        metrics, outputs = run_act(model, batch, return_keys)
        if tta:
            metrics.update(tta_metric_sums(lambda b: run_act(model, b, return_keys)[1], batch, outputs, tta,
                                           eligible_check))
        for collection in (batch, outputs):
            for key, value in collection.items():
                if key in save_outputs:
                    saved.setdefault(key, []).append(value.cpu())
        for entry in evaluators:
            if set_name in entry.sets:
                entry.evaluator.update_batch(batch, outputs)
        totals = sums.setdefault(set_ids[set_name], {})
        for key, value in metrics.items():
            totals[key] = totals.get(key, 0) + value.to(wide_float_dtype(value.device))  # no float64 on MPS
        progress.update()
    progress.close()

    if saved and save_dir:
        make_dirs(save_dir)
        tensors = {k: torch.cat(v) for k, v in saved.items()}
        write_atomically(outputs_path(save_dir, step, ctx.rank), lambda f: torch.save(tensors, f))

    results = reduce_eval_metrics(sums, metadata.sets, ctx)
    for entry in evaluators:
        path = entry.output_dir(save_dir, step) if save_dir else None
        evaluator_metrics = entry.evaluator.result(path, rank=ctx.rank, world_size=ctx.world_size, group=ctx.cpu_group)
        if ctx.is_main and evaluator_metrics is not None:
            results.update(entry.rename(evaluator_metrics))
    return results if ctx.is_main else None


def run_act_all_steps(model: nn.Module, batch: dict, return_keys: set[str]) -> tuple[dict, dict]:
    """Published evaluation: call the model until every sequence halted (halt_max_steps in eval mode)."""
    carry = model.initial_carry(batch)
    while True:
        carry, _, metrics, outputs, all_finish = model(carry=carry, batch=batch, return_keys=return_keys)
        if all_finish:
            return metrics, outputs


def act_model(head: nn.Module) -> nn.Module:
    """The ACT model inside a loss head, compiled or not."""
    return uncompiled(head).model


HALT_STEPS = "halt_steps"  # run_act_halting_early's output: the ACT step each sequence stopped at


def run_act_halting_early(model: nn.Module, batch: dict, return_keys: set[str],
                          wants_to_halt: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
                          ) -> tuple[dict, dict]:
    """Inference-time halting: each sequence keeps the outputs of the first step its Q head says halt.

    "Says halt" is the rule the model trains with (`ACTModel.wants_to_halt`: q_halt > 0 for TRM with
    no_ACT_continue, else q_halt > q_continue), unless `wants_to_halt(q_halt, q_continue)` is given.
    The model itself runs every sequence in lock-step (batches stay aligned, model code untouched);
    outputs of sequences that already halted are frozen and the loop ends once all have halted or
    halt_max_steps is reached. Metrics are computed from the frozen outputs with the loss head's
    definitions (`models.losses.act_metrics`), so without early halts they equal the published ones.
    With `HALT_STEPS` among `return_keys` the outputs also hold the step each sequence stopped at.
    """
    wants_to_halt = wants_to_halt or act_model(model).wants_to_halt
    keys = set(return_keys) | {"logits", "preds", "q_halt_logits", "q_continue_logits"}
    carry = model.initial_carry(batch)
    frozen: dict[str, torch.Tensor] = {}
    steps_used = torch.zeros_like(carry.steps)
    done = torch.zeros_like(carry.halted)
    while not done.all():
        carry, _, _, outputs, _ = model(carry=carry, batch=batch, return_keys=keys)
        says_halt = wants_to_halt(outputs["q_halt_logits"], outputs["q_continue_logits"])
        stop_now = ~done & (says_halt | carry.halted)  # carry.halted: halt_max_steps reached
        for key, value in outputs.items():
            mask = stop_now.view((-1,) + (1,) * (value.ndim - 1))
            frozen[key] = torch.where(mask, value, frozen[key]) if key in frozen else value.clone()
        steps_used = torch.where(stop_now, carry.steps, steps_used)
        done |= stop_now
    metrics, _, _ = act_metrics(frozen["preds"], frozen["logits"], frozen["q_halt_logits"], batch["labels"], steps_used,
                                torch.ones_like(done), model.loss_fn)
    frozen[HALT_STEPS] = steps_used
    return metrics, {k: v for k, v in frozen.items() if k in return_keys}


def run_act_with_steps(model: nn.Module, batch: dict, halt_early: bool) -> dict[str, torch.Tensor]:
    """preds, q_halt_logits and the steps behind each answer of one ACT run, as evaluation runs it (predict.py)."""
    keys = {"preds", "q_halt_logits", "actual_steps"}
    max_steps = act_model(model).config.halt_max_steps
    if halt_early:
        _, outputs = run_act_halting_early(model, batch, keys | {HALT_STEPS})
        steps = outputs[HALT_STEPS]
    else:
        _, outputs = run_act_all_steps(model, batch, keys)
        # Configs that halt in evaluation report the steps of their last answer; the others run them all.
        steps = outputs.get("actual_steps", torch.full_like(outputs["q_halt_logits"], max_steps))
    return {"preds": outputs["preds"], "q_halt_logits": outputs["q_halt_logits"], "steps": steps.long()}


def reduce_eval_metrics(sums: dict[int, dict[str, torch.Tensor]], set_names: list[str], ctx: DistContext) -> dict:
    """Sum per-set metrics over ranks (every rank contributes a fixed-shape table) and divide by the count."""
    keys = sorted({k for totals in sums.values() for k in totals})
    keys = broadcast_object(keys, ctx)  # a rank that saw no batch still needs the key order
    if not keys:
        return {}
    table = torch.zeros(len(set_names), len(keys), dtype=wide_float_dtype(ctx.device), device=ctx.device)
    for set_id, totals in sums.items():
        for j, key in enumerate(keys):
            if key in totals:
                table[set_id, j] = totals[key]
    table = reduce_to_main(table, ctx)
    if not ctx.is_main:
        return {}
    results = {}
    for set_id, name in enumerate(set_names):
        row = dict(zip(keys, table[set_id].cpu().tolist()))
        count = row.pop(COUNT)
        if count > 0:
            results[name] = {k: v / count for k, v in row.items()}
    return results


def flatten_metrics(metrics: dict) -> dict:
    """{"all": {"accuracy": x}, "ARC/pass@1": y} -> {"all/accuracy": x, "ARC/pass@1": y}."""
    flat = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update({f"{key}/{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat
