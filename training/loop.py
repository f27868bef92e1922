"""The training loop: data -> model -> optimizers -> train / evaluate / checkpoint (docs/training.md).

`pretrain.py` parses the config and calls `train_until_stopped(config, ctx)`; the pieces it composes live beside
this file (state, data, evaluation, checkpointing, signals, report).
"""
import math
from dataclasses import dataclass

import torch
from tqdm import tqdm

from dataset.puzzle_dataset import shutdown_loader
from models.lma_layout import describe_layout, layout_metrics
from models.losses import COUNT, LOSS_METRICS
from models.weights import forward_dtype_choice
from rundir.layout import METRICS_FILE
from rundir.lineage import abandon_later_attempt
from rundir.lock import hold_run_lock
from rundir.metrics import RunLogger
from rundir.ownership import check_run_dir
from rundir.states import remove_stale_temporaries
from training.best import best_on_resume, update_best
from training.carry import carry_from_state
from training.checkpointing import find_resume_dir, restore_training_state, save_checkpoint, save_code_and_config
from training.config import PretrainConfig, derive_names, random_slug
from training.data import (
    DatasetWatch,
    check_batch_fits,
    create_dataloader,
    ensure_dataset,
    has_split,
    split_paths,
    to_device,
)
from training.evaluation import create_evaluators, evaluate, flatten_metrics
from training.publish import publish_run
from training.report import headline, report_run
from training.signals import StopRequest, batches_until_signal
from training.state import TrainState, cosine_schedule_with_warmup_lr, evaluation_model, init_train_state, update_ema
from training.tta import tta_transforms
from utils.cli import quoted
from utils.cpu import Choice, apply_threads, choose_threads
from utils.device import should_compile, wide_float_dtype
from utils.distributed import DistContext, all_reduce_grads, all_reduce_sum, any_rank, broadcast_object
from utils.errors import ConfigError, DatasetError, NonFiniteLossError
from utils.finite import all_finite, check_finite
from utils.random_state import new_stream_seed, restore_rng_state, seed_everything


# ---------------------------------------------------------------------------------------------
# One training step
# ---------------------------------------------------------------------------------------------
def reduce_metrics(metrics: dict[str, torch.Tensor], ctx: DistContext) -> tuple[list[str], torch.Tensor]:
    """Metric sums over ranks, on the device (every rank gets the totals: all decide together on a bad loss)."""
    keys = sorted(metrics)
    values = torch.stack([metrics[k].detach().to(wide_float_dtype(metrics[k].device)) for k in keys])
    return keys, all_reduce_sum(values, ctx)


def reads_metrics(config: PretrainConfig, state: TrainState) -> bool:
    """Steps whose metrics come to the host (logged, checked): every `log_interval`-th and the last."""
    return state.step % config.log_interval == 0 or state.step == state.total_steps


def check_finite_losses(reduced: dict[str, float], state: TrainState) -> None:
    """Stop before a NaN/inf loss reaches the weights (and so any checkpoint)."""
    bad = {k: v for k, v in reduced.items() if k in LOSS_METRICS and not math.isfinite(v)}
    if bad:
        last = state.last_checkpoint or "none saved yet"
        raise NonFiniteLossError(f"Non-finite loss at step {state.step} ({bad}). Training stopped before the update; "
                                 f"the last good checkpoint is untouched: {last}. Try a lower lr, a longer warm-up "
                                 "or arch.forward_dtype=float32.")


def check_no_earlier_non_finite(first_bad_step: int, config: PretrainConfig, state: TrainState) -> None:
    """A non-finite loss or gradient on a step whose metrics stayed on the device (log_interval > 1)."""
    if first_bad_step:
        last = state.last_checkpoint or "none saved yet"
        raise NonFiniteLossError(f"Non-finite loss or gradient first at step {first_bad_step}, found at step "
                                 f"{state.step}: metrics are read every log_interval={config.log_interval} steps, so "
                                 "the steps between updated the weights. No checkpoint holds them; the last one "
                                 f"(finite weights) is {last}. Resume from it with log_interval=1 to stop at the "
                                 "first bad step, or try a lower lr or arch.forward_dtype=float32.")


def gradients(model) -> dict[str, torch.Tensor]:
    """Every gradient the optimizers will apply, by name (the puzzle-embedding rows of the batch included)."""
    grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    puzzle_emb = model.puzzle_emb  # a buffer table with its own optimizer: not among the parameters
    if puzzle_emb is not None and puzzle_emb.local_weights.grad is not None:
        grads["model.inner.puzzle_emb.local_weights"] = puzzle_emb.local_weights.grad
    return grads


def train_metrics(reduced: dict[str, float], global_batch_size: int, lr: float) -> dict[str, float]:
    """`train/<name>`: losses per sequence of the global batch, the other metrics per counted sequence."""
    count = max(reduced[COUNT], 1)
    logged = {f"train/{k}": v / (global_batch_size if k in LOSS_METRICS else count) for k, v in reduced.items()}
    logged["train/lr"] = lr
    return logged


def train_batch(config: PretrainConfig, state: TrainState, batch: dict, global_batch_size: int,
                ctx: DistContext) -> dict[str, float] | None:
    """One ACT step on the carried state, backward, all optimizers; the logged metrics on rank 0."""
    state.step += 1
    if state.step > state.total_steps:  # the loader's last iteration may hold a few extra batches
        return None  # (not trained on; the EMA still moves, see update_ema)
    batch = to_device(batch, ctx.device)
    if state.carry is None:
        state.carry = state.model.initial_carry(batch)
        if state.saved_carry is not None:
            state.carry, state.saved_carry = carry_from_state(state.carry, state.saved_carry), None

    state.carry, loss, metrics, _, _ = state.model(carry=state.carry, batch=batch, return_keys=[])
    keys, values = reduce_metrics(metrics, ctx)
    (loss / global_batch_size).backward()
    all_reduce_grads(state.raw_model.parameters(), ctx)
    grads = gradients(state.raw_model)
    # Kept on the device: the first step with a non-finite loss or gradient (0: none yet).
    finite = all_finite([values[[k in LOSS_METRICS for k in keys]], *grads.values()])
    state.first_bad_step = torch.where(finite | (state.first_bad_step > 0), state.first_bad_step, state.step) \
        if state.first_bad_step is not None else torch.where(finite, 0, state.step)
    if not reads_metrics(config, state):
        reduced = None  # no device-to-host transfer on this step
    else:
        host = torch.cat([values, state.first_bad_step.to(values.dtype).view(1)]).tolist()  # the one sync
        reduced, first_bad_step = dict(zip(keys, host[:-1])), int(host[-1])
        if first_bad_step and first_bad_step < state.step:
            check_no_earlier_non_finite(first_bad_step, config, state)
        check_finite_losses(reduced, state)
        if first_bad_step:  # this step's gradients: name them (one more sync, on the way out only)
            check_finite(state, "gradient", grads)

    lr = 0.0
    for optimizer, base_lr in zip(state.optimizers, state.optimizer_lrs):
        lr = cosine_schedule_with_warmup_lr(state.step, base_lr, config.lr_warmup_steps, state.total_steps,
                                            config.lr_min_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
        optimizer.zero_grad()
    return train_metrics(reduced, global_batch_size, lr) if ctx.is_main and reduced is not None else None


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------
def prepare_config(config: PretrainConfig, ctx: DistContext) -> PretrainConfig:
    """Derive names on rank 0 (the random slug) and share the result with every rank."""
    if config.global_batch_size % ctx.world_size:
        raise ConfigError(f"global_batch_size ({config.global_batch_size}) must be divisible by the number of "
                          f"processes ({ctx.world_size}): each takes an equal share of every batch.")
    if ctx.is_main:
        config = derive_names(config, random_slug())
    return broadcast_object(config, ctx)


class EvalSetup:
    """The test loader and evaluators of a run (none when the dataset has no test split)."""

    def __init__(self, config: PretrainConfig, ctx: DistContext):
        self.loader = self.metadata = None
        self.evaluators, self.tta = [], []
        paths = split_paths(config, "test")
        if has_split(paths, "test"):
            self.loader, self.metadata = create_dataloader(paths, "test", ctx, seed=config.seed,
                                                           global_batch_size=config.global_batch_size,
                                                           num_workers=config.num_workers,
                                                           max_examples=config.max_eval_examples)
            self.evaluators = create_evaluators(config.evaluators, paths, self.metadata,
                                                capped=config.max_eval_examples is not None)
            self.tta = tta_transforms(self.metadata.vocab_size, self.metadata.seq_len, config.eval_tta,
                                      config.seed) if config.eval_tta else []
        elif ctx.is_main:
            print("No test split found: training without evaluation.")


def compute_path(config: PretrainConfig, threads: Choice, ctx: DistContext) -> str:
    """How this run computes, for its first line: threads, forward dtype and whether the model is compiled."""
    compiled = "compiled" if should_compile(ctx.device, config.compile) else "eager"
    return f"{threads.describe()}, {forward_dtype_choice(config.arch, ctx.device).describe()}, {compiled}"


def start_logging(config: PretrainConfig, state: TrainState, resume_dir: str | None, ctx: DistContext,
                  threads: Choice):
    """Rank 0: the run directory (code, config, metrics.jsonl, wandb); None on other ranks."""
    if not ctx.is_main:
        return None
    remove_stale_temporaries(config.checkpoint_path)
    if resume_dir:  # an older state starts a new lineage: what came after it is moved aside
        abandon_later_attempt(config.checkpoint_path, state.step)
    save_code_and_config(config)
    # Resumed: the log keeps the steps up to the resumed one (later lines were an earlier attempt's).
    # resume=auto that found no state starts again from step 0: all earlier lines are superseded.
    resume_step = state.step if resume_dir else (-1 if config.resume else None)
    logger = RunLogger(config.checkpoint_path, config.project_name, config.run_name, config.model_dump(),
                       config.wandb_mode, resume_step=resume_step, group=config.wandb_group, tags=config.wandb_tags)
    model = state.raw_model.model.config
    lma = getattr(model, "lma_enable", False)
    if resume_dir:
        print(f"Resuming from {quoted(resume_dir)} at step {state.step}")
    else:
        first = {"num_params": sum(p.numel() for p in state.raw_model.parameters())}
        logger.log({**first, **(layout_metrics(model.lma_layout) if lma else {})}, step=0)
    print(f"Run {config.run_name!r}: {state.total_steps} steps on {ctx.device} x{ctx.world_size} "
          f"({compute_path(config, threads, ctx)}); "
          f"checkpoints and {METRICS_FILE} in {quoted(config.checkpoint_path)}")
    if lma:  # the automatic latent sizes are only known here (all_config: null)
        print(f"  LMA: {describe_layout(model.lma_layout, model.lma_mode, automatic=model.lma_latent_len is None)}")
    if " " in config.run_name:  # the published '<model class> <random slug>'
        print("  (the run name has a space, so paths are printed quoted; +run_name=NAME names a run yourself, "
              "and resume=auto needs a name it can find again)")
    return logger


def restore_random_streams(config: PretrainConfig, state: TrainState, rank_state: dict, ctx: DistContext) -> None:
    """This rank's saved RNG streams; a rank the saved job did not have starts one fixed by (seed, rank, step)."""
    if rank_state["rng"] is not None:
        restore_rng_state(rank_state["rng"], ctx.device)
    else:
        seed_everything(new_stream_seed(config.seed, ctx.rank, state.step))
    if rank_state["saved_world_size"] != ctx.world_size and ctx.is_main:
        print(f"Resuming a state saved by {rank_state['saved_world_size']} processes with {ctx.world_size}: the "
              "same global batches follow and the ACT carries are re-sliced; not bitwise (README \"Resuming\").")


@dataclass
class TrainOutcome:
    """How a run ended: the last evaluation's metrics (rank 0), and whether it ran to the end or stopped early
    (a signal or `stop_at_step`, after saving its state: the same command with resume=auto continues)."""

    last_eval: dict | None
    finished: bool
    config: PretrainConfig  # with the names the run derived (run_name, checkpoint_path)


def train(config: PretrainConfig, ctx: DistContext) -> dict | None:
    """Train as configured (resuming if asked); returns the last evaluation's metrics on rank 0."""
    return train_until_stopped(config, ctx).last_eval


def train_until_stopped(config: PretrainConfig, ctx: DistContext) -> TrainOutcome:
    """`train`, saying also whether the run finished or was stopped early (for callers that go on after it)."""
    config = prepare_config(config, ctx)
    with hold_run_lock(config.checkpoint_path, ctx):  # one run per run directory, for the whole run
        check_run_dir(config.checkpoint_path, config.resume, ctx)  # before anything is written (the lock aside)
        return train_locked(config, ctx)


def train_locked(config: PretrainConfig, ctx: DistContext) -> TrainOutcome:
    """`train` once rank 0 holds the run directory's lock."""
    threads = choose_threads(config.num_threads)
    apply_threads(threads)  # before any tensor work: the thread pool is sized once
    seed_everything(config.seed + ctx.rank)
    ensure_dataset(config, ctx)
    watch = DatasetWatch(config.data_paths + (config.data_paths_test or []))  # before the loaders read anything

    train_loader, train_metadata = create_dataloader(config.data_paths, "train", ctx, seed=config.seed,
                                                     global_batch_size=config.global_batch_size,
                                                     epochs_per_iter=config.epochs_per_iter,
                                                     num_workers=config.num_workers)
    check_batch_fits(config, train_metadata)
    eval_setup = EvalSetup(config, ctx)
    state = init_train_state(config, train_metadata, ctx)
    resume_dir = find_resume_dir(config, announce=ctx.is_main)
    rank_state = restore_training_state(config, state, train_metadata, resume_dir, ctx) if resume_dir else None
    # The loader replays the same batch order from the saved position (its own seeded generators).
    train_loader.dataset.load_state_dict({"iters": state.iter_id * len(train_metadata.sets),
                                          "skip_batches": state.batches_in_iter})
    logger = start_logging(config, state, resume_dir, ctx, threads)
    if resume_dir and ctx.is_main and config.checkpoint_best_metric:
        state.best = best_on_resume(config.checkpoint_path, state.step)
    if rank_state is not None:  # last: building the model consumed random numbers
        restore_random_streams(config, state, rank_state, ctx)

    stop = StopRequest()
    progress = tqdm(total=state.total_steps, initial=min(state.step, state.total_steps), desc="train", unit="step",
                    disable=not ctx.is_main)
    pictures = {}
    try:
        last_eval, finished = run_iterations(config, state, train_loader, train_metadata, eval_setup, logger, stop,
                                             progress, watch, ctx)
        if finished and progress.n != progress.total:
            # The total was the schedule's estimate (published formula); the loader yielded another number.
            progress.total = progress.n
            progress.refresh()
        if finished and logger is not None:  # while the wandb run is open: the pictures and weights go to it
            pictures = publish_run(config, state, logger)
    finally:
        stop.restore()
        progress.close()
        for loader in (train_loader, eval_setup.loader):
            if loader is not None:
                shutdown_loader(loader)
        if logger is not None:
            logger.finish()
    if finished and ctx.is_main:
        report_run(config, state, last_eval, pictures)
    return TrainOutcome(last_eval, finished, config)


def dataset_changed_error(changed: str | None, saved: str, state: TrainState) -> DatasetError:
    what = changed or "a file of the dataset (seen by another process)"
    return DatasetError(f"{what} changed while training (the dataset was rebuilt or edited under the run): stopped "
                        f"at step {state.step} and saved the state {quoted(saved)}, trained on the data as it was at "
                        "the start. Put that dataset back and continue with resume=auto, or train on the new one in "
                        "a new run (+load_checkpoint=... starts from these weights).")


def run_iterations(config: PretrainConfig, state: TrainState, train_loader, train_metadata, eval_setup: EvalSetup,
                   logger, stop: StopRequest, progress, watch: DatasetWatch,
                   ctx: DistContext) -> tuple[dict | None, bool]:
    """The remaining iterations (eval_interval epochs each, then an evaluation); (last eval, ran to the end)."""
    last_eval = None
    for iter_id in range(state.iter_id, config.total_iters):
        state.model.train()
        for _, batch, global_batch_size in batches_until_signal(train_loader, stop, ctx):
            metrics = train_batch(config, state, batch, global_batch_size, ctx)
            update_ema(state)
            state.batches_in_iter += 1
            if metrics is not None:
                logger.log(metrics, step=state.step)
                rate = progress.format_dict.get("rate") or 0.0  # steps/s, smoothed by tqdm
                progress.set_postfix(loss=f"{metrics['train/lm_loss']:.3g}", lr=f"{metrics['train/lr']:.2e}",
                                     samples_per_s=f"{rate * config.global_batch_size:.0f}", refresh=False)
            progress.update(min(state.step, state.total_steps) - progress.n)

            at_stop_step = config.stop_at_step is not None and state.step >= config.stop_at_step
            changed = watch.changed()  # the loaders still hold the data of the start: save, then stop
            stopping = any_rank(stop.requested or changed is not None, ctx) or at_stop_step
            if stopping or (config.checkpoint_interval and state.step % config.checkpoint_interval == 0):
                path = save_checkpoint(config, state, train_metadata, ctx)
            if stopping:
                if any_rank(changed is not None, ctx, "all_reduce of the dataset check"):
                    raise dataset_changed_error(changed, path, state)
                if ctx.is_main:
                    reason = f"on {stop.signal_name}" if stop.requested else f"at stop_at_step={config.stop_at_step}"
                    # tqdm.write: on a line of its own, not glued to the progress bar's open line
                    tqdm.write(f"Stopped {reason}: saved {quoted(path)}")
                return last_eval, False
        if stop.loader_interrupted:  # the signal ended the loader's worker before the next batch
            path = save_checkpoint(config, state, train_metadata, ctx)
            if ctx.is_main:
                tqdm.write(f"Stopped on {stop.signal_name}: saved {quoted(path)}")
            return last_eval, False
        state.iter_id, state.batches_in_iter = iter_id + 1, 0
        changed = watch.changed(now=True)  # the evaluation would open the new files
        if any_rank(changed is not None, ctx, "all_reduce of the dataset check"):
            raise dataset_changed_error(changed, save_checkpoint(config, state, train_metadata, ctx), state)

        if iter_id >= (config.min_eval_interval or 0):
            eval_model = evaluation_model(state)
            if eval_setup.loader is not None:
                last_eval = evaluate(eval_model, eval_setup.loader, eval_setup.metadata, eval_setup.evaluators, ctx,
                                     state.step, config.checkpoint_path, save_outputs=config.eval_save_outputs,
                                     tta=eval_setup.tta, tta_sudoku_check=config.eval_tta_sudoku_check)
                if ctx.is_main and last_eval:
                    flat = flatten_metrics(last_eval)
                    logger.log(flat, step=state.step)
                    tqdm.write(f"eval at step {state.step}: {headline(last_eval)}")
                    if config.checkpoint_best_metric:
                        state.best = update_best(config, flat, state.step, eval_model, state.best)
            if config.checkpoint_every_eval or iter_id == config.total_iters - 1:
                save_checkpoint(config, state, train_metadata, ctx, eval_model=eval_model)
            del eval_model
    return last_eval, True
