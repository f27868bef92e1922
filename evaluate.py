"""Evaluate a checkpoint on the test split: `python evaluate.py checkpoint=PATH [key=value ...]`.

    python evaluate.py checkpoint=checkpoints/Arc1concept-aug-1000-ACT-torch/RUN/step_518071
    python evaluate.py checkpoint=step_100 config=runs/x/all_config.yaml data_paths="[data/sudoku-extreme-1k-aug-1000]"
    torchrun --nproc-per-node 4 evaluate.py checkpoint=... global_batch_size=1536
    python evaluate.py checkpoint=checkpoints/PROJECT/RUN which=best tta=8      # best step, TTA voting
    python evaluate.py checkpoint=hf://arcprize/trm_arc_prize_verification/arc_v1_public/step_518071

Reads the training configuration `all_config.yaml` beside the checkpoint (the trainer writes it;
published runs have one too), builds the model exactly as training did, loads the weights (ours,
or published ones whose keys start with `_orig_mod.`), runs the test split through the trainer's
`evaluate` with the configured evaluators, prints the metrics and writes to `output_dir`:
`metrics.json` (the flat metrics, as in a run's metrics.jsonl), the ARC evaluator's
`evaluator_ARC_step_N/submission.json`, and `step_N_all_preds.<rank>` with the outputs named in
`save_outputs`. The evaluation is `training.evaluation.evaluate`, the one training runs.
Keys are Hydra-style `key=value` and checked (unknown keys are errors); the list follows.
"""
import json
import os
from dataclasses import dataclass
from typing import Literal

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field

from dataset.common import PuzzleDatasetMetadata
from dataset.puzzle_dataset import merge_metadata
from evaluators.arc import SUBMISSION_FILE
from evaluators.base import EvaluatorConfig
from models.weights import build_model, load_weights
from rundir.hub import is_hub_path, parse_hub_path, resolve_hub_checkpoint
from rundir.layout import (
    BEST_WEIGHTS,
    CONFIG_FILE,
    EVAL_DIR_PREFIX,
    EVAL_METRICS_FILE,
    WEIGHTS_PATTERN,
    config_beside,
    default_eval_dir,
    list_train_states,
    run_dir_of,
    weight_steps,
    weights_path,
    weights_step,
)
from rundir.states import load_train_state, safe_load
from training.best import read_best
from training.config import PretrainConfig, parse_config
from training.data import create_dataloader, has_split, split_paths
from training.evaluation import create_evaluators, evaluate, flatten_metrics
from training.tta import TTA_METRIC, TTA_VALID_METRIC, tta_transforms
from utils.atomic import write_atomically
from utils.cli import DEVICE_HELP, parse_key_values, quoted, run_key_value_command
from utils.device import should_compile
from utils.distributed import DistContext, destroy_distributed, init_distributed
from utils.errors import CheckpointError, ConfigError
from utils.random_state import seed_everything

PATH_KEYS = ("checkpoint", "config", "output_dir", "device")  # taken as written (no YAML parsing of paths)


class EvaluateConfig(BaseModel):
    """Command-line keys of evaluate.py; the rest comes from the training config."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: str = Field(
        description=f"weights file (`{WEIGHTS_PATTERN}`, ours or published), a run directory (see `which`), or "
                    "hf://OWNER/REPO/...")
    config: str | None = Field(None, description=f"training config; null = {CONFIG_FILE} beside the checkpoint")
    data_paths: list[str] | None = Field(None,
        description="evaluate on other built datasets; null = the training config's")
    evaluators: list[EvaluatorConfig] | None = Field(None,
        description="evaluators to run, e.g. [] to skip ARC voting; null = the training config's")
    save_outputs: list[str] = Field([],
        description="raw outputs to save, e.g. [inputs, labels, puzzle_identifiers, preds, q_halt_logits]")
    output_dir: str | None = Field(None,
        description=f"where the outputs go; null = {EVAL_DIR_PREFIX}<checkpoint name> beside the checkpoint")
    device: str = Field("auto", description=DEVICE_HELP)
    global_batch_size: int | None = Field(None,
        description="examples per evaluation batch, over all processes; null = the training batch size")
    halt_early: bool = Field(False,
        description="stop each sequence when its Q head says halt (default: all halt_max_steps, as published)")
    tta: int = Field(0, ge=0,
        description="Sudoku/Maze: also answer under K transforms and vote (<set>/tta_exact_accuracy)")
    tta_sudoku_check: bool = Field(False,
        description="Sudoku, with tta: prefer valid completions (<set>/tta_valid_exact_accuracy)")
    which: Literal["last", "best"] = Field(
        "last", description=f"for a run directory: its newest {WEIGHTS_PATTERN}, or {BEST_WEIGHTS}")
    compile: bool | None = Field(None, description="torch.compile; null = on CUDA only (as in training)")
    overwrite: bool = Field(False, description="replace the outputs of an earlier evaluation in output_dir")
    num_workers: Literal[0, 1] = Field(1, description="data loader worker processes (0 = load in the main process)")


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> EvaluateConfig:
    """Hydra-style `key=value` arguments (values in YAML syntax: lists `[a,b]`, `true`, numbers)."""
    return parse_key_values(argv, EvaluateConfig, "evaluate.py", "checkpoint=PATH", verbatim=PATH_KEYS)


def resolve_checkpoint(path: str, which: str = "last", need_config: bool = True) -> str:
    """A local weights file: as given, downloaded from the hub (`hf://`, with its all_config.yaml when
    `need_config`), or a run directory's newest `step_N` (`which=last`) or `step_best` (`which=best`)."""
    if is_hub_path(path):
        return resolve_hub_checkpoint(path, need_config=need_config)
    if os.path.isdir(path):
        if which == "best":
            best = os.path.join(path, BEST_WEIGHTS)
            if not os.path.isfile(best):
                raise CheckpointError(f"{path} has no {BEST_WEIGHTS}: the run did not track a best checkpoint "
                                      "(train with checkpoint_best_metric=all/exact_accuracy, say); use which=last.")
            return best
        steps = weight_steps(path)
        if not steps:
            raise CheckpointError(f"{path} is a directory without {WEIGHTS_PATTERN} weight files; give "
                                  f"checkpoint=PATH/{WEIGHTS_PATTERN}.")
        return weights_path(path, steps[-1])
    if not os.path.isfile(path):
        raise CheckpointError(f"Checkpoint {path} does not exist: give a {WEIGHTS_PATTERN} weights file, a run "
                              "directory or an hf:// path.")
    return path


def checkpoint_step(path: str) -> int:
    """N of a `step_N` file (names the outputs, as in training), the best step for `step_best`; 0 otherwise."""
    name = os.path.basename(path)
    if name == BEST_WEIGHTS:
        best = read_best(run_dir_of(path))
        return best["step"] if best else 0
    step = weights_step(name)
    return step if step is not None else 0


def default_output_dir(args: EvaluateConfig, checkpoint: str) -> str:
    """Beside a local checkpoint; for a hub checkpoint (in the download cache) under ./evals/."""
    if is_hub_path(args.checkpoint):
        repo_id, filename, _ = parse_hub_path(args.checkpoint)
        return os.path.join("evals", repo_id.replace("/", "--"), filename.replace("/", "--"))
    return default_eval_dir(checkpoint)


@dataclass
class EvaluationPlan:
    """What to evaluate: the run's training config as saved, and this command's choices."""

    train_config: PretrainConfig  # all_config.yaml as the run wrote it (arch, seed, data, evaluators)
    config_path: str
    train_paths: list[str]  # the model is built as training built it, from the train split's metadata
    test_paths: list[str]
    evaluators: list[EvaluatorConfig]
    global_batch_size: int


def load_plan(args: EvaluateConfig, checkpoint: str) -> EvaluationPlan:
    """The run's training config (validated as training validated it) and this command's overrides."""
    path = args.config or config_beside(checkpoint)
    if not os.path.isfile(path):
        raise ConfigError(f"No training config at {path}. The trainer writes {CONFIG_FILE} into the run directory; "
                          f"point at it with config=PATH/{CONFIG_FILE}.")
    with open(path) as f:
        raw = yaml.safe_load(f)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} is not a training config (expected a YAML mapping).")
    raw.pop("generate_if_missing", None)  # evaluation never builds data
    try:
        config = parse_config(raw)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    train_paths = args.data_paths if args.data_paths is not None else config.data_paths
    test_paths = args.data_paths if args.data_paths is not None else split_paths(config, "test")
    missing = [p for p in test_paths if not os.path.isdir(p)]
    if missing:
        raise ConfigError(f"Dataset directories {missing} (from {path}) do not exist here; "
                          "point at the built dataset with data_paths=[DIR].")
    return EvaluationPlan(train_config=config, config_path=path, train_paths=train_paths, test_paths=test_paths,
                          evaluators=args.evaluators if args.evaluators is not None else config.evaluators,
                          global_batch_size=args.global_batch_size or config.global_batch_size)


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------
def build_and_load(plan: EvaluationPlan, checkpoint: str, test_metadata, ctx: DistContext,
                   compile_model: bool | None) -> torch.nn.Module:
    """The model as training built it (train-split metadata when present), with the checkpoint's weights."""
    metadata = merge_metadata(plan.train_paths, "train") if has_split(plan.train_paths, "train") else test_metadata
    head = build_model(plan.train_config.arch, metadata, plan.global_batch_size // ctx.world_size, ctx.device)
    state_dict = safe_load(checkpoint, mmap=True)  # mapped: published ARC checkpoints are ~2 GB
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"{checkpoint} is not a weights file (a state dict of tensors); give a "
                              f"{WEIGHTS_PATTERN} file.")
    try:
        load_weights(head, state_dict)
    except (ValueError, RuntimeError) as err:
        raise CheckpointError(f"{checkpoint} does not fit the model of this config and dataset: {err}") from None
    return torch.compile(head) if should_compile(ctx.device, compile_model) else head


def trained_metadata(checkpoint: str, plan: EvaluationPlan):
    """(metadata of the data the checkpoint was trained on, where that was found), or (None, None).

    The run's training states record it; else the training config's own dataset, if it is here.
    """
    states = list_train_states(run_dir_of(checkpoint))
    if states:
        saved = load_train_state(states[-1][1], mmap=True)["train_metadata"]
        return PuzzleDatasetMetadata(**saved), states[-1][1]
    original = plan.train_config.data_paths
    if has_split(original, "train"):
        return merge_metadata(original, "train"), ", ".join(original)
    return None, None


def check_dataset_fits(checkpoint: str, plan: EvaluationPlan, test_metadata) -> None:
    """The dataset evaluated must have the sequence length and vocabulary the checkpoint was trained on."""
    trained, source = trained_metadata(checkpoint, plan)
    if trained is None:
        return
    for field in ("seq_len", "vocab_size"):
        ours, theirs = getattr(test_metadata, field), getattr(trained, field)
        if ours != theirs:
            raise ConfigError(f"{plan.test_paths} has {field} {ours}, but {checkpoint} was trained on {field} "
                              f"{theirs} ({source}): evaluate it on a dataset built the same way.")


def check_output_dir(output_dir: str, overwrite: bool) -> None:
    path = os.path.join(output_dir, EVAL_METRICS_FILE)
    if os.path.exists(path) and not overwrite:
        raise ConfigError(f"{path} already exists (an earlier evaluation): pass overwrite=true to replace its "
                          "outputs, or output_dir=DIR for a new one.")


def run(args: EvaluateConfig, ctx: DistContext) -> dict | None:
    """Evaluate; on rank 0 print and write the metrics and return them (flat), None elsewhere."""
    checkpoint = resolve_checkpoint(args.checkpoint, args.which, need_config=args.config is None)
    plan = load_plan(args, checkpoint)
    seed_everything(plan.train_config.seed + ctx.rank)
    if not has_split(plan.test_paths, "test"):
        raise ConfigError(f"{plan.test_paths} has no test split to evaluate.")
    loader, test_metadata = create_dataloader(plan.test_paths, "test", ctx, seed=plan.train_config.seed,
                                              global_batch_size=plan.global_batch_size, num_workers=args.num_workers)
    check_dataset_fits(checkpoint, plan, test_metadata)
    output_dir = args.output_dir or default_output_dir(args, checkpoint)
    check_output_dir(output_dir, args.overwrite)
    model = build_and_load(plan, checkpoint, test_metadata, ctx, args.compile)
    evaluators = create_evaluators(plan.evaluators, plan.test_paths, test_metadata)
    tta = tta_transforms(test_metadata.vocab_size, test_metadata.seq_len, args.tta, plan.train_config.seed) \
        if args.tta else []
    step = checkpoint_step(checkpoint)
    if ctx.is_main:
        os.makedirs(output_dir, exist_ok=True)
        print(f"Evaluating {quoted(checkpoint)} ({quoted(plan.config_path)}) on {plan.test_paths}, "
              f"device {ctx.device} x{ctx.world_size}, halt_early={args.halt_early}, tta={args.tta}")

    results = evaluate(model, loader, test_metadata, evaluators, ctx, step, output_dir,
                       save_outputs=args.save_outputs, halt_early=args.halt_early, tta=tta,
                       tta_sudoku_check=args.tta_sudoku_check)
    if not ctx.is_main:
        return None
    flat = flatten_metrics(results)
    write_atomically(os.path.join(output_dir, EVAL_METRICS_FILE),
                     lambda f: json.dump({"step": step, **flat}, f, indent=1), mode="w")
    print_report(results, output_dir, step, evaluators)
    return flat


def print_report(results: dict, output_dir: str, step: int, evaluators: list) -> None:
    """Per set: exact (whole-answer) accuracy and token accuracy first, then the rest; evaluator metrics."""
    for set_name, metrics in results.items():
        if not isinstance(metrics, dict):
            continue
        tta = "".join(f"   {label} {metrics[key]:.4f}" for key, label in
                      ((TTA_METRIC, "TTA exact accuracy"), (TTA_VALID_METRIC, "TTA valid-first exact accuracy"))
                      if key in metrics)
        print(f"[{set_name}] exact accuracy {metrics.get('exact_accuracy', float('nan')):.4f}{tta}   "
              f"token accuracy {metrics.get('accuracy', float('nan')):.4f}   "
              f"mean steps {metrics.get('steps', float('nan')):.2f}")
        shown = ("exact_accuracy", "accuracy", "steps", TTA_METRIC, TTA_VALID_METRIC)
        others = {k: v for k, v in metrics.items() if k not in shown}
        print("    " + "   ".join(f"{k} {v:.4g}" for k, v in sorted(others.items())))
    for key, value in results.items():
        if not isinstance(value, dict):
            print(f"{key} {value:.4f}")
    print(f"Metrics written to {quoted(os.path.join(output_dir, EVAL_METRICS_FILE))}")
    for entry in evaluators:
        path = os.path.join(entry.output_dir(output_dir, step), SUBMISSION_FILE)
        if os.path.isfile(path):
            print(f"Submission written to {quoted(path)}")


def evaluate_command(argv: list[str]) -> None:
    args = parse_args(argv)
    try:
        ctx = init_distributed(args.device)
    except ValueError as err:  # an unusable device request
        raise ConfigError(str(err)) from None
    try:
        run(args, ctx)
    finally:
        destroy_distributed(ctx)


def main(argv: list[str] | None = None) -> None:
    run_key_value_command(argv, __doc__, EvaluateConfig, evaluate_command)


if __name__ == "__main__":
    main()
