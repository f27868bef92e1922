"""The model, its optimizers and `TrainState`: everything that changes during training (docs/training.md)."""
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dataset.common import PuzzleDatasetMetadata
from models.ema import EMAHelper
from models.optimizers import build_adam_atan2
from models.sparse_embedding import SparseEmbeddingSignSGD
from models.weights import PUZZLE_EMB_KEY, build_model, load_weights
from training.config import PretrainConfig
from training.data import estimated_total_steps
from training.trained import read_weights, resolve_weights
from utils.device import should_compile
from utils.distributed import DistContext, broadcast_module_state
from utils.errors import CheckpointError

RESTORED_COUNTERS = ("step", "iter_id", "batches_in_iter")  # where training continues


@dataclass
class TrainState:
    """Everything that changes during training, in one object (saved and restored as a whole)."""

    model: nn.Module  # the loss head that runs (compiled where enabled)
    raw_model: nn.Module  # the same module uncompiled: state dicts and EMA
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
    best: dict | None = None  # checkpoint_best_metric: the best evaluation so far (training/best.py)
    first_bad_step: Any = None  # device int tensor: first step with a non-finite loss/gradient (0 = none)

    def state_dict(self) -> dict:
        """What a training state holds of this object: the counters, weights, optimizer states and EMA shadow.

        `total_steps` is recorded but not restored: it follows from the config and dataset of the run that resumes.
        """
        return {**{name: getattr(self, name) for name in RESTORED_COUNTERS},
                "total_steps": self.total_steps,
                "model": self.raw_model.state_dict(),
                "optimizers": [optimizer.state_dict() for optimizer in self.optimizers],
                "ema": self.ema.state_dict() if self.ema is not None else None}

    def load_state_dict(self, shared: dict) -> None:
        """Restore what `state_dict` saved (the caller checks that it fits: same EMA setting, same optimizers)."""
        load_weights(self.raw_model, shared["model"])
        for optimizer, optimizer_state in zip(self.optimizers, shared["optimizers"], strict=True):
            optimizer.load_state_dict(optimizer_state)
        if self.ema is not None:
            self.ema.load_state_dict(shared["ema"])
        for name in RESTORED_COUNTERS:
            setattr(self, name, shared[name])


def load_initial_weights(head: nn.Module, path: str, reset_puzzle_emb: bool = False) -> None:
    """`load_checkpoint`: weights only (published fine-tuning); a puzzle table with another number of rows
    (puzzles) is reset, every row to the mean of the loaded rows (with `reset_puzzle_emb` also a table of the
    same size: new tasks). `hf://...` paths come from the hub; a run directory gives its newest weights."""
    state_dict = read_weights(resolve_weights(path, need_config=False))
    puzzle_emb = head.puzzle_emb
    if PUZZLE_EMB_KEY in state_dict and puzzle_emb is not None:
        loaded, expected = state_dict[PUZZLE_EMB_KEY].shape, puzzle_emb.weights.shape
        if loaded[1:] != expected[1:]:
            raise CheckpointError(f"load_checkpoint {path} does not fit this model: {PUZZLE_EMB_KEY} is "
                                  f"{tuple(loaded)}, the model's is {tuple(expected)} (another hidden_size or "
                                  "puzzle_emb_ndim); use the arch config the checkpoint was trained with.")
        if loaded != expected or reset_puzzle_emb:
            print(f"Resetting puzzle embedding: checkpoint has {tuple(loaded)}, model expects {tuple(expected)}; "
                  "every row starts at the mean of the loaded rows.")
            mean_row = state_dict[PUZZLE_EMB_KEY].mean(dim=0, keepdim=True)
            state_dict[PUZZLE_EMB_KEY] = mean_row.expand(expected).contiguous()
    try:
        load_weights(head, state_dict)
    except (ValueError, RuntimeError) as err:
        raise CheckpointError(f"load_checkpoint {path} does not fit this model: {err}") from None


def build_optimizers(config: PretrainConfig, head: nn.Module, world_size: int):
    """Sign-SGD for the sparse puzzle table, Adam-atan2 for everything else (lrs set each step)."""
    has_puzzle_emb = config.arch.model_keys.get("puzzle_emb_ndim", 0) > 0 and head.puzzle_emb is not None
    optimizers, lrs = [], []
    if has_puzzle_emb:
        optimizers.append(SparseEmbeddingSignSGD(head.puzzle_emb.buffers(), world_size=world_size,
                                                 lr=0, weight_decay=config.puzzle_emb_weight_decay))
        lrs.append(config.puzzle_emb_lr)
    if not (config.freeze_weights and has_puzzle_emb):
        optimizers.append(build_adam_atan2(head.parameters(), lr=0, betas=(config.beta1, config.beta2),
                                           weight_decay=config.weight_decay))
        lrs.append(config.lr)
    return optimizers, lrs


def cosine_schedule_with_warmup_lr(step: int, base_lr: float, warmup_steps: int, total_steps: int,
                                   min_ratio: float = 0.0, num_cycles: float = 0.5) -> float:
    """Linear warm-up to base_lr, then a half cosine from base_lr down to min_ratio * base_lr."""
    if step < warmup_steps:
        return base_lr * step / max(1, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * progress))
    return base_lr * (min_ratio + max(0.0, (1 - min_ratio) * cosine))


def init_train_state(config: PretrainConfig, metadata: PuzzleDatasetMetadata, ctx: DistContext) -> TrainState:
    head = build_model(config.arch, metadata, config.global_batch_size // ctx.world_size, ctx.device)
    if config.load_checkpoint:
        load_initial_weights(head, config.load_checkpoint, reset_puzzle_emb=config.puzzle_emb_reset)
    broadcast_module_state(head, ctx)  # every rank starts from rank 0's weights
    optimizers, lrs = build_optimizers(config, head, ctx.world_size)
    model = torch.compile(head) if should_compile(ctx.device, config.compile) else head
    state = TrainState(model=model, raw_model=head, optimizers=optimizers, optimizer_lrs=lrs,
                       total_steps=estimated_total_steps(config, metadata))
    if config.ema:
        state.ema = EMAHelper(mu=config.ema_rate)
        state.ema.register(head)
    return state


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
