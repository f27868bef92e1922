"""The training loop: data -> model -> optimizers -> train/evaluate/checkpoint (SPEC §5).

`pretrain.py` parses the config and calls `train(config)`. The pieces are plain functions so
that `evaluate.py`, tests and notebooks can reuse them.
"""
import math
import os
import random
import shutil
import signal
import threading
from dataclasses import dataclass
from typing import Any, Callable

import coolname
import numpy as np
import torch
import yaml
from pydantic import ValidationError
from torch import nn
from tqdm import tqdm

from dataset.common import PuzzleDatasetMetadata, load_metadata
from dataset.puzzle_dataset import PuzzleDataset, PuzzleDatasetConfig, exposed_set_name, make_dataloader
from models.ema import EMAHelper
from models.losses import act_metrics
from models.optimizers import build_adam_atan2
from models.registry import load_model_class, model_source_path
from models.sparse_embedding import SparseEmbeddingSignSGD
from utils.checkpoint import (TMP_SUFFIX, capture_rng_state, carry_from_state, carry_to_state, commit_train_state,
                              list_train_states, load_train_state, load_weights, prune_checkpoints,
                              remove_stale_temporaries, restore_rng_state, safe_load, strip_compiled_prefix,
                              train_state_dir, write_atomically, write_rank_state)
from utils.config import PretrainConfig, derive_names, format_validation_error
from utils.device import should_compile, wide_float_dtype
from utils.distributed import (DistContext, all_reduce_grads, all_reduce_sum, any_rank, barrier, broadcast_module_state,
                               broadcast_object, reduce_to_main)
from utils.errors import CheckpointError, ConfigError, NonFiniteLossError
from utils.logging import RunLogger, resolve_wandb_mode


@dataclass
class TrainState:
    """Everything that changes during training, in one object (saved and restored as a whole)."""

    model: nn.Module  # the loss head that runs (compiled where enabled)
    raw_model: nn.Module  # the same module uncompiled: state dicts, EMA and evaluation copies
    optimizers: list[torch.optim.Optimizer]
    optimizer_lrs: list[float]
    total_steps: int
    step: int = 0
    iter_id: int = 0  # loader iteration (eval_interval epochs) in progress
    batches_in_iter: int = 0  # batches of that iteration already trained on
    carry: Any = None
    saved_carry: Any = None  # carry restored from a checkpoint, applied to the first batch's fresh carry
    ema: EMAHelper | None = None
    last_checkpoint: str | None = None


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
def create_dataloader(config: PretrainConfig, split: str, ctx: DistContext, **kwargs):
    paths = config.data_paths_test if split == "test" and config.data_paths_test else config.data_paths
    dataset = PuzzleDataset(PuzzleDatasetConfig(seed=config.seed, dataset_paths=paths, rank=ctx.rank,
                                                num_replicas=ctx.world_size, **kwargs), split=split)
    return make_dataloader(dataset, ctx.device.type, num_workers=config.num_workers), dataset.metadata


def has_split(config: PretrainConfig, split: str) -> bool:
    paths = config.data_paths_test if split == "test" and config.data_paths_test else config.data_paths
    return all(os.path.isfile(os.path.join(p, split, "dataset.json")) for p in paths)


# ---------------------------------------------------------------------------------------------
# Model and optimizers
# ---------------------------------------------------------------------------------------------
def model_config_dict(config: PretrainConfig, metadata: PuzzleDatasetMetadata, world_size: int) -> dict:
    return dict(**config.arch.model_keys, batch_size=config.global_batch_size // world_size,
                vocab_size=metadata.vocab_size, seq_len=metadata.seq_len,
                num_puzzle_identifiers=metadata.num_puzzle_identifiers, causal=False)


def build_model(config: PretrainConfig, metadata: PuzzleDatasetMetadata, ctx: DistContext) -> nn.Module:
    """The loss head around the model, on ctx.device, with arch keys validated by the model's config."""
    model_cls = load_model_class(config.arch.name)
    loss_cls = load_model_class(config.arch.loss.name)
    try:
        with torch.device(ctx.device):
            model = model_cls(model_config_dict(config, metadata, ctx.world_size))
            head = loss_cls(model, **(config.arch.loss.__pydantic_extra__ or {}))
    except ValidationError as err:
        raise ConfigError(f"Invalid arch configuration ({config.arch.name}):\n"
                          + format_validation_error(err, prefix="arch.")) from None
    return head


def load_initial_weights(head: nn.Module, path: str) -> None:
    """`load_checkpoint`: weights only (published fine-tuning); a puzzle table of another size is reset."""
    state_dict = strip_compiled_prefix(safe_load(path))
    key = "model.inner.puzzle_emb.weights"
    inner = getattr(head.model, "inner", None)
    if key in state_dict and inner is not None and hasattr(inner, "puzzle_emb"):
        expected = inner.puzzle_emb.weights.shape
        if state_dict[key].shape != expected:
            print(f"Resetting puzzle embedding: checkpoint has {tuple(state_dict[key].shape)}, model expects "
                  f"{tuple(expected)}; every row starts at the mean of the loaded rows.")
            state_dict[key] = state_dict[key].mean(dim=0, keepdim=True).expand(expected).contiguous()
    load_weights(head, state_dict)


def build_optimizers(config: PretrainConfig, head: nn.Module, ctx: DistContext):
    """Sign-SGD for the sparse puzzle table, Adam-atan2 for everything else (lrs set each step)."""
    betas = (config.beta1, config.beta2)
    has_puzzle_emb = config.arch.model_keys.get("puzzle_emb_ndim", 0) > 0 and hasattr(head.model, "puzzle_emb")
    optimizers, lrs = [], []
    if has_puzzle_emb:
        optimizers.append(SparseEmbeddingSignSGD(head.model.puzzle_emb.buffers(), world_size=ctx.world_size,
                                                 lr=0, weight_decay=config.puzzle_emb_weight_decay))
        lrs.append(config.puzzle_emb_lr)
    if not (config.freeze_weights and has_puzzle_emb):
        optimizers.append(build_adam_atan2(head.parameters(), lr=0, betas=betas, weight_decay=config.weight_decay))
        lrs.append(config.lr)
    return optimizers, lrs


def cosine_schedule_with_warmup_lr(step: int, base_lr: float, warmup_steps: int, total_steps: int,
                                   min_ratio: float = 0.0, num_cycles: float = 0.5) -> float:
    """Linear warm-up to base_lr, then a half cosine from base_lr down to min_ratio * base_lr."""
    if step < warmup_steps:
        return base_lr * step / max(1, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * (min_ratio + max(0.0, (1 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * progress))))


def init_train_state(config: PretrainConfig, metadata: PuzzleDatasetMetadata, ctx: DistContext) -> TrainState:
    total_steps = int(config.epochs * metadata.total_groups * metadata.mean_puzzle_examples / config.global_batch_size)
    head = build_model(config, metadata, ctx)
    if config.load_checkpoint:
        load_initial_weights(head, config.load_checkpoint)
    broadcast_module_state(head, ctx)  # every rank starts from rank 0's weights
    optimizers, lrs = build_optimizers(config, head, ctx)
    model = torch.compile(head) if should_compile(ctx.device, config.compile) else head
    return TrainState(model=model, raw_model=head, optimizers=optimizers, optimizer_lrs=lrs, total_steps=total_steps)


# ---------------------------------------------------------------------------------------------
# One training step
# ---------------------------------------------------------------------------------------------
def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def reduce_metrics(metrics: dict[str, torch.Tensor], ctx: DistContext) -> dict[str, float]:
    """Sum metric tensors over ranks; every rank gets the totals (all decide together on a bad loss)."""
    keys = sorted(metrics)
    values = all_reduce_sum(torch.stack([metrics[k].detach().to(wide_float_dtype(metrics[k].device)) for k in keys]), ctx)
    return dict(zip(keys, values.cpu().tolist()))


def check_finite_losses(reduced: dict[str, float], state: TrainState) -> None:
    """Stop before a NaN/inf loss reaches the weights (and so any checkpoint)."""
    bad = {k: v for k, v in reduced.items() if k.endswith("loss") and not math.isfinite(v)}
    if bad:
        last = state.last_checkpoint or "none saved yet"
        raise NonFiniteLossError(f"Non-finite loss at step {state.step} ({bad}). Training stopped before the update; "
                                 f"the last good checkpoint is untouched: {last}. Try a lower lr, a longer warm-up "
                                 "or arch.forward_dtype=float32.")


def train_batch(config: PretrainConfig, state: TrainState, batch: dict, global_batch_size: int,
                ctx: DistContext) -> dict[str, float] | None:
    state.step += 1
    if state.step > state.total_steps:  # the loader's last iteration may hold a few extra batches
        return None  # (not trained on; the EMA still moves, see update_ema)
    batch = to_device(batch, ctx.device)
    if state.carry is None:
        state.carry = state.model.initial_carry(batch)
        if state.saved_carry is not None:
            state.carry, state.saved_carry = carry_from_state(state.carry, state.saved_carry), None

    state.carry, loss, metrics, _, _ = state.model(carry=state.carry, batch=batch, return_keys=[])
    reduced = reduce_metrics(metrics, ctx)
    check_finite_losses(reduced, state)
    (loss / global_batch_size).backward()
    all_reduce_grads(state.raw_model.parameters(), ctx)

    lr = 0.0
    for optimizer, base_lr in zip(state.optimizers, state.optimizer_lrs):
        lr = cosine_schedule_with_warmup_lr(state.step, base_lr, config.lr_warmup_steps, state.total_steps, config.lr_min_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
        optimizer.zero_grad()

    if not ctx.is_main:
        return None
    count = max(reduced["count"], 1)
    logged = {f"train/{k}": v / (global_batch_size if k.endswith("loss") else count) for k, v in reduced.items()}
    logged["train/lr"] = lr
    return logged


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------
@dataclass
class PathEvaluator:
    """One configured evaluator for one test data path (as published: every evaluator, once per path).

    It sees only the batches of its path's sets. The first path's evaluator reports under the
    evaluator's own names (`ARC/pass@2`, `evaluator_ARC_step_N/`); path i > 0 adds i to the name
    (`ARC1/pass@2`, `evaluator_ARC1_step_N/`), as its sets are `all1`, ... (the published loop would
    let the last path's metrics overwrite the others').
    """

    evaluator: Any
    path_index: int
    sets: frozenset[str]

    @property
    def name(self) -> str:
        base = type(self.evaluator).__name__
        return base if self.path_index == 0 else f"{base}{self.path_index}"

    def output_dir(self, save_dir: str, step: int) -> str:
        return os.path.join(save_dir, f"evaluator_{self.name}_step_{step}")

    def rename(self, metrics: dict[str, float]) -> dict[str, float]:
        if self.path_index == 0:
            return metrics
        return {f"{key.split('/', 1)[0]}{self.path_index}/{key.split('/', 1)[1]}" if "/" in key
                else f"{key}{self.path_index}": value for key, value in metrics.items()}


def create_evaluators(config: PretrainConfig, eval_metadata: PuzzleDatasetMetadata) -> list[PathEvaluator]:
    """Every configured evaluator for every test data path; failing to construct one is an error, not a warning."""
    paths = config.data_paths_test or config.data_paths
    evaluators = []
    for spec in config.evaluators:
        try:
            cls = load_model_class(spec.name, prefix="evaluators.")
        except ValueError as err:
            raise ConfigError(f"evaluator {spec.name!r} is not available ({err}). "
                              "Remove it, e.g. evaluators=[] for Sudoku and Maze.") from None
        for index, path in enumerate(paths):
            sets = frozenset(exposed_set_name(name, index) for name in load_metadata(path, "test").sets)
            evaluator = cls(data_path=path, eval_metadata=eval_metadata, **(spec.__pydantic_extra__ or {}))
            evaluators.append(PathEvaluator(evaluator, index, sets))
    return evaluators


def update_ema(state: TrainState) -> None:
    """After every loader batch, as published: also after the few batches past total_steps that the
    last iteration may hold (the step estimate can be below what the loader yields), which train
    nothing but still move the shadow towards the final weights."""
    if state.ema is not None:
        state.ema.update(state.raw_model)


def evaluation_model(state: TrainState) -> nn.Module:
    """The weights evaluation and checkpoints use: the EMA shadow when EMA is on.

    As published, the EMA copy is a deep copy of the model that trains, so when training is compiled
    the EMA weights (float32, like the trained ones) run through the compiled model too.
    """
    if state.ema is None:
        return state.model
    return state.ema.ema_copy(state.model)


@torch.inference_mode()
def evaluate(config: PretrainConfig, model: nn.Module, loader, metadata: PuzzleDatasetMetadata, evaluators: list,
             ctx: DistContext, step: int, save_dir: str | None, halt_early: bool = False) -> dict | None:
    """Run every test example through the ACT loop; per-set metrics (divided by count) on rank 0.

    By default every sequence runs halt_max_steps steps, as published. With `halt_early` a sequence
    stops at the first step its Q head says halt (see `run_act_halting_early`); `<set>/steps` is
    then the mean number of steps used.
    """
    model.eval()
    return_keys = set(config.eval_save_outputs)
    for entry in evaluators:
        entry.evaluator.begin_eval()
        return_keys.update(entry.evaluator.required_outputs)

    set_ids = {name: i for i, name in enumerate(metadata.sets)}
    sums: dict[int, dict[str, torch.Tensor]] = {}
    saved: dict[str, list[torch.Tensor]] = {}
    progress = tqdm(desc="eval", unit="batch", disable=not ctx.is_main, leave=False)
    for set_name, batch, _ in loader:
        batch = to_device(batch, ctx.device)
        if halt_early:
            metrics, outputs = run_act_halting_early(model, batch, return_keys)
        else:
            metrics, outputs = run_act_all_steps(model, batch, return_keys)
        for collection in (batch, outputs):
            for key, value in collection.items():
                if key in config.eval_save_outputs:
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
        os.makedirs(save_dir, exist_ok=True)
        torch.save({k: torch.cat(v) for k, v in saved.items()}, os.path.join(save_dir, f"step_{step}_all_preds.{ctx.rank}"))

    results = _reduce_eval_metrics(sums, metadata.sets, ctx)
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
    return getattr(head, "_orig_mod", head).model


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
    return metrics, {k: v for k, v in frozen.items() if k in return_keys}


def _reduce_eval_metrics(sums: dict[int, dict[str, torch.Tensor]], set_names: list[str], ctx: DistContext) -> dict:
    """Sum per-set metrics over ranks (every rank contributes a fixed-shape table) and divide by count."""
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
        count = row.pop("count")
        if count > 0:
            results[name] = {k: v / count for k, v in row.items()}
    return results


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------
def save_code_and_config(config: PretrainConfig) -> None:
    os.makedirs(config.checkpoint_path, exist_ok=True)
    sources = [model_source_path(name) for name in (config.arch.name, config.arch.loss.name)]
    shared = os.path.join(os.path.dirname(sources[0]), "common.py")  # parts every variant is built from
    if os.path.exists(shared):
        sources.append(shared)
    if config.arch.model_keys.get("lma_enable"):
        sources.append(model_source_path("lma@"))  # the LMA front-end is part of such a model
    for source in sources:
        shutil.copy(source, os.path.join(config.checkpoint_path, os.path.basename(source)))
    write_atomically(os.path.join(config.checkpoint_path, "all_config.yaml"),
                     lambda f: yaml.safe_dump(config.model_dump(), f, sort_keys=False), mode="w")


def save_weights(config: PretrainConfig, model: nn.Module, step: int) -> str:
    """The evaluated weights' state dict, as published (`step_N`, loadable by `load_checkpoint`)."""
    model = getattr(model, "_orig_mod", model)
    path = os.path.join(config.checkpoint_path, f"step_{step}")
    os.makedirs(config.checkpoint_path, exist_ok=True)
    write_atomically(path, lambda f: torch.save(model.state_dict(), f))
    return path


def shared_training_state(config: PretrainConfig, state: TrainState, metadata: PuzzleDatasetMetadata,
                          ctx: DistContext) -> dict:
    """What every rank has in common: enough, with the rank files, to continue bit for bit."""
    return {
        "format": 1,
        "step": state.step,
        "iter_id": state.iter_id,
        "batches_in_iter": state.batches_in_iter,
        "total_steps": state.total_steps,
        "world_size": ctx.world_size,
        "model": state.raw_model.state_dict(),
        "optimizers": [optimizer.state_dict() for optimizer in state.optimizers],
        "ema": state.ema.state_dict() if state.ema is not None else None,
        "config": config.model_dump(),
        "train_metadata": metadata.model_dump(),
    }


def save_checkpoint(config: PretrainConfig, state: TrainState, metadata: PuzzleDatasetMetadata, ctx: DistContext,
                    eval_model: nn.Module | None = None) -> str:
    """Weights file `step_N` (evaluated weights) plus the full training state, both written atomically."""
    final_dir = train_state_dir(config.checkpoint_path, state.step)
    tmp_dir = final_dir + TMP_SUFFIX
    write_rank_state(tmp_dir, ctx.rank, {"rng": capture_rng_state(ctx.device),
                                         "carry": carry_to_state(state.carry) if state.carry is not None else None})
    barrier(ctx)  # every rank file is on disk before rank 0 declares the state complete
    if ctx.is_main:
        save_weights(config, eval_model if eval_model is not None else evaluation_model(state), state.step)
        commit_train_state(tmp_dir, final_dir, shared_training_state(config, state, metadata, ctx))
        if config.checkpoint_keep_last:
            prune_checkpoints(config.checkpoint_path, config.checkpoint_keep_last)
    barrier(ctx)
    state.last_checkpoint = final_dir
    return final_dir


def find_resume_dir(config: PretrainConfig) -> str | None:
    if config.resume is None:
        return None
    if config.resume != "auto":
        return config.resume
    states = list_train_states(config.checkpoint_path)
    return states[-1][1] if states else None


def restore_training_state(config: PretrainConfig, state: TrainState, metadata: PuzzleDatasetMetadata,
                           state_dir: str, ctx: DistContext) -> dict:
    """Load weights, optimizer and EMA states and counters; returns this rank's RNG/carry state."""
    shared, rank_state = load_train_state(state_dir, ctx.rank)
    if shared.get("world_size") != ctx.world_size:
        raise CheckpointError(f"{state_dir} was saved by {shared.get('world_size')} processes, this run has "
                              f"{ctx.world_size}: resume with the same number of processes.")
    current = metadata.model_dump()
    differing = {k: (shared["train_metadata"].get(k), v) for k, v in current.items() if shared["train_metadata"].get(k) != v}
    if differing:
        raise CheckpointError(f"The dataset differs from the one {state_dir} was trained on "
                              f"(field: (checkpoint, now)): {differing}. Point data_paths at the original dataset.")
    try:
        load_weights(state.raw_model, shared["model"])
        for optimizer, optimizer_state in zip(state.optimizers, shared["optimizers"], strict=True):
            optimizer.load_state_dict(optimizer_state)
            for group in optimizer.param_groups:
                if "world_size" in group:
                    group["world_size"] = ctx.world_size
    except (ValueError, RuntimeError, KeyError) as err:
        raise CheckpointError(f"{state_dir} does not match this model/optimizer configuration: {err}") from None
    if (shared["ema"] is None) != (state.ema is None):
        raise CheckpointError(f"{state_dir} was saved with ema={shared['ema'] is not None}; resume with the same setting.")
    if state.ema is not None:
        state.ema.load_state_dict(shared["ema"])
    state.step, state.iter_id, state.batches_in_iter = shared["step"], shared["iter_id"], shared["batches_in_iter"]
    state.saved_carry = rank_state["carry"]
    state.last_checkpoint = state_dir
    return rank_state


class StopRequest:
    """SIGTERM/SIGINT set a flag; the loop finishes the current step, saves and exits cleanly."""

    def __init__(self):
        self.signal_name: str | None = None
        self.loader_interrupted = False
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, _frame) -> None:
        self.signal_name = signal.Signals(signum).name

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def batches_until_signal(loader, stop: StopRequest, ctx: DistContext):
    """The loader's batches. A scheduler signals the whole job, so the DataLoader worker may die while a
    batch is in transfer; in one process, that ends the iteration as a stop (the last step is complete)."""
    batches = iter(loader)
    while True:
        try:
            yield next(batches)
        except StopIteration:
            return
        except RuntimeError:
            if not (stop.requested and not ctx.is_distributed):
                raise
            stop.loader_interrupted = True
            return


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    """torch as published (seed + rank); python and numpy too, so that a whole run is reproducible."""
    torch.random.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def prepare_config(config: PretrainConfig, ctx: DistContext) -> PretrainConfig:
    """Derive names on rank 0 (the random slug) and share the result with every rank."""
    if ctx.is_main:
        config = derive_names(config, coolname.generate_slug(2))
    return broadcast_object(config, ctx)


def train(config: PretrainConfig, ctx: DistContext) -> dict | None:
    """Train as configured (resuming if asked); returns the last evaluation's metrics on rank 0."""
    config = prepare_config(config, ctx)
    seed_everything(config.seed + ctx.rank)
    ensure_dataset(config, ctx)

    train_loader, train_metadata = create_dataloader(config, "train", ctx, test_set_mode=False,
                                                     epochs_per_iter=config.epochs_per_iter,
                                                     global_batch_size=config.global_batch_size)
    eval_loader = eval_metadata = None
    if has_split(config, "test"):
        eval_loader, eval_metadata = create_dataloader(config, "test", ctx, test_set_mode=True, epochs_per_iter=1,
                                                       global_batch_size=config.global_batch_size)
    elif ctx.is_main:
        print("No test split found: training without evaluation.")
    evaluators = create_evaluators(config, eval_metadata) if eval_metadata is not None else []

    state = init_train_state(config, train_metadata, ctx)
    if config.ema:
        state.ema = EMAHelper(mu=config.ema_rate)
        state.ema.register(state.raw_model)

    resume_dir = find_resume_dir(config)
    rank_state = restore_training_state(config, state, train_metadata, resume_dir, ctx) if resume_dir else None
    # The loader replays the same batch order from the saved position (its own seeded generators).
    train_loader.dataset.load_state_dict({"iters": state.iter_id * len(train_metadata.sets),
                                          "skip_batches": state.batches_in_iter})

    logger = None
    if ctx.is_main:
        remove_stale_temporaries(config.checkpoint_path)
        save_code_and_config(config)
        logger = RunLogger(config.checkpoint_path, config.project_name, config.run_name, config.model_dump(),
                           resolve_wandb_mode(config.wandb_mode))
        if resume_dir:
            print(f"Resuming from {resume_dir} at step {state.step}")
        else:
            logger.log({"num_params": sum(p.numel() for p in state.raw_model.parameters())}, step=0)
        print(f"Run {config.run_name!r}: {state.total_steps} steps on {ctx.device} x{ctx.world_size}; "
              f"checkpoints and metrics.jsonl in {config.checkpoint_path}")
    if rank_state is not None:
        restore_rng_state(rank_state["rng"], ctx.device)  # last: building the model consumed random numbers

    last_eval = None
    stop = StopRequest()
    progress = tqdm(total=state.total_steps, initial=min(state.step, state.total_steps), desc="train", unit="step",
                    disable=not ctx.is_main)
    try:
        for iter_id in range(state.iter_id, config.total_iters):
            state.model.train()
            for _, batch, global_batch_size in batches_until_signal(train_loader, stop, ctx):
                metrics = train_batch(config, state, batch, global_batch_size, ctx)
                update_ema(state)
                state.batches_in_iter += 1
                if metrics is not None:
                    logger.log(metrics, step=state.step)
                    progress.set_postfix(loss=f"{metrics['train/lm_loss']:.3g}", refresh=False)
                progress.update(min(state.step, state.total_steps) - progress.n)

                stopping = any_rank(stop.requested, ctx) or (config.stop_at_step is not None
                                                             and state.step >= config.stop_at_step)
                if stopping or (config.checkpoint_interval and state.step % config.checkpoint_interval == 0):
                    path = save_checkpoint(config, state, train_metadata, ctx)
                if stopping:
                    if ctx.is_main:
                        reason = f"on {stop.signal_name}" if stop.requested else f"at stop_at_step={config.stop_at_step}"
                        print(f"Stopped {reason}: saved {path}; continue with resume=auto")
                    return last_eval
            if stop.loader_interrupted:  # the signal ended the loader's worker before the next batch
                path = save_checkpoint(config, state, train_metadata, ctx)
                print(f"Stopped on {stop.signal_name}: saved {path}; continue with resume=auto")
                return last_eval
            state.iter_id, state.batches_in_iter = iter_id + 1, 0

            if iter_id >= (config.min_eval_interval or 0):
                eval_model = evaluation_model(state)
                if eval_loader is not None:
                    last_eval = evaluate(config, eval_model, eval_loader, eval_metadata, evaluators, ctx,
                                         state.step, config.checkpoint_path)
                    if ctx.is_main and last_eval:
                        logger.log(flatten_metrics(last_eval), step=state.step)
                if config.checkpoint_every_eval or iter_id == config.total_iters - 1:
                    save_checkpoint(config, state, train_metadata, ctx, eval_model=eval_model)
                del eval_model
    finally:
        stop.restore()
        progress.close()
        if logger is not None:
            logger.finish()
    if ctx.is_main:
        report_run(config, state, last_eval)
    return last_eval


def ensure_dataset(config: PretrainConfig, ctx: DistContext) -> None:
    """`generate_if_missing`: build data_paths[0] with the offline generators on first use."""
    spec, path = config.generate_if_missing, config.data_paths[0]
    if spec is None or os.path.exists(path):
        return
    if ctx.is_main:
        from dataset.generated import build_generated_dataset
        print(f"{path} does not exist yet: generating a {spec.kind} dataset there (once).")
        build_generated_dataset(path, **spec.model_dump())
    barrier(ctx)


def report_run(config: PretrainConfig, state: TrainState, last_eval: dict | None) -> None:
    """Where everything is, and (last line) the test exact accuracy."""
    run_dir = config.checkpoint_path
    print(f"checkpoint: {state.last_checkpoint or 'none saved'}")
    print(f"metrics: {os.path.join(run_dir, 'metrics.jsonl')}")
    if config.pictures:
        for line in draw_pictures(config, state.step):
            print(line)
    sets = {name: m for name, m in (last_eval or {}).items() if isinstance(m, dict) and "exact_accuracy" in m}
    if sets:
        for name, m in sets.items():
            if len(sets) > 1:
                print(f"{name} exact_accuracy: {m['exact_accuracy']:.4f}")
        print(f"test exact_accuracy: {sum(m['exact_accuracy'] for m in sets.values()) / len(sets):.4f}")


def draw_pictures(config: PretrainConfig, step: int) -> list[str]:
    """Training curves, and the last evaluation's predictions when they were saved (eval_save_outputs)."""
    from utils.curves import plot_curves
    from utils.pictures import render_predictions

    run_dir = config.checkpoint_path
    lines = [f"curves: {plot_curves(os.path.join(run_dir, 'metrics.jsonl'), os.path.join(run_dir, 'curves.png'))}"]
    outputs_path = os.path.join(run_dir, f"step_{step}_all_preds.0")
    if os.path.exists(outputs_path):
        outputs = torch.load(outputs_path, weights_only=True)
        data_dir = (config.data_paths_test or config.data_paths)[0]
        picture = render_predictions(data_dir, outputs, os.path.join(run_dir, "predictions.html"))
        lines.append(f"pictures: {picture}")
    return lines


def flatten_metrics(metrics: dict) -> dict:
    """{"all": {"accuracy": x}, "ARC/pass@1": y} -> {"all/accuracy": x, "ARC/pass@1": y}."""
    flat = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update({f"{key}/{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat

