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

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dataset.common import PuzzleDatasetMetadata
from evaluators.arc import SUBMISSION_FILE
from evaluators.base import EvaluatorConfig
from models.arch import check_output_names
from models.weights import forward_dtype_choice
from rundir.hub import is_hub_path, parse_hub_path
from rundir.json_values import json_metrics
from rundir.layout import (
    BEST_WEIGHTS,
    CONFIG_FILE,
    EVAL_CHOICE_SEP,
    EVAL_DIR_PREFIX,
    EVAL_METRICS_FILE,
    WEIGHTS_PATTERN,
    default_eval_dir,
)
from rundir.lock import hold_run_lock
from training.data import create_dataloader, has_split, split_paths
from training.evaluation import create_evaluators, evaluate, flatten_metrics
from training.trained import Checkpoint, load_trained, open_checkpoint, recorded_metadata
from training.tta import TTA_METRIC, TTA_VALID_METRIC, tta_transforms
from utils.atomic import make_dirs, write_atomically
from utils.cli import DEVICE_HELP, NUM_THREADS_HELP, parse_key_values, quoted, run_key_value_command
from utils.cpu import Choice, apply_threads, choose_threads
from utils.distributed import DistContext, destroy_distributed, init_distributed
from utils.errors import ConfigError
from utils.finite import non_finite_names
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
        description=f"where the outputs go; null = {EVAL_DIR_PREFIX}<checkpoint name> beside the checkpoint, with "
                    f"{EVAL_CHOICE_SEP}<choice> for each choice that differs from the default (e.g. "
                    f"{EVAL_CHOICE_SEP}tta8{EVAL_CHOICE_SEP}halt_early)")
    device: str = Field("auto", description=DEVICE_HELP)
    global_batch_size: int | None = Field(None, ge=1,
        description="examples per evaluation batch, over all processes; null = the training batch size")
    halt_early: bool = Field(False,
        description="stop each sequence when its Q head says halt (default: all halt_max_steps, as published)")
    tta: int = Field(0, ge=0,
        description="Sudoku/Maze: also answer under K transforms and vote (<set>/tta_exact_accuracy)")
    tta_sudoku_check: bool = Field(False,
        description="Sudoku, with tta: prefer valid completions (<set>/tta_valid_exact_accuracy)")
    max_eval_examples: int | None = Field(None, ge=1,
        description="evaluate only the first N test examples of each test set, rounded up to whole groups (quick "
                    "checks); null = all, as published")
    which: Literal["last", "best"] = Field(
        "last", description=f"for a run directory: its newest {WEIGHTS_PATTERN}, or {BEST_WEIGHTS}")
    compile: bool | None = Field(None, description="torch.compile; null = on CUDA only (as in training)")
    overwrite: bool = Field(False, description="replace the outputs of an earlier evaluation in output_dir")
    num_threads: int | None = Field(None, ge=1, description=NUM_THREADS_HELP)
    num_workers: Literal[0, 1] = Field(1, description="data loader worker processes (0 = load in the main process)")

    @field_validator("save_outputs")
    @classmethod
    def _known_outputs(cls, names: list[str]) -> list[str]:
        return check_output_names(names, "save_outputs")


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> EvaluateConfig:
    """Hydra-style `key=value` arguments (values in YAML syntax: lists `[a,b]`, `true`, numbers)."""
    return parse_key_values(argv, EvaluateConfig, "evaluate.py", "checkpoint=PATH", verbatim=PATH_KEYS)


def evaluation_choices(args: EvaluateConfig) -> list[str]:
    """The choices of this evaluation that change its results, for the default output directory's name."""
    choices = [f"tta{args.tta}"] if args.tta else []
    if args.tta and args.tta_sudoku_check:
        choices.append("tta_sudoku_check")
    if args.halt_early:
        choices.append("halt_early")
    if args.max_eval_examples is not None:
        choices.append(f"max_eval_examples{args.max_eval_examples}")
    if args.data_paths is not None:
        choices.append("data-" + "-".join(os.path.basename(os.path.normpath(p)) for p in args.data_paths))
    if args.evaluators is not None:
        choices.append("evaluators-" + ("-".join(e.name.split("@")[-1] for e in args.evaluators) or "none"))
    return choices


def default_output_dir(args: EvaluateConfig, checkpoint: Checkpoint) -> str:
    """Beside a local checkpoint; for a hub checkpoint (in the download cache) under ./evals/. Either way the
    name ends with the choices that differ from the default (`+tta8+halt_early`), so ablations do not collide."""
    choices = evaluation_choices(args)
    if is_hub_path(args.checkpoint):
        repo_id, filename, _ = parse_hub_path(args.checkpoint)
        name = EVAL_CHOICE_SEP.join([filename.replace("/", "--"), *choices])
        return os.path.join("evals", repo_id.replace("/", "--"), name)
    return default_eval_dir(checkpoint.weights, choices)


@dataclass
class EvaluationPlan:
    """What to evaluate: the checkpoint (with the run's training config) and this command's choices."""

    checkpoint: Checkpoint
    train_paths: list[str]  # the model is built as training built it, from the train split's metadata
    test_paths: list[str]
    evaluators: list[EvaluatorConfig]
    global_batch_size: int


def plan_evaluation(args: EvaluateConfig) -> EvaluationPlan:
    """The checkpoint and its training config (validated as training validated it), with this command's overrides."""
    checkpoint = open_checkpoint(args.checkpoint, args.which, args.config)
    config = checkpoint.config
    train_paths = args.data_paths if args.data_paths is not None else config.data_paths
    test_paths = args.data_paths if args.data_paths is not None else split_paths(config, "test")
    missing = [p for p in test_paths if not os.path.isdir(p)]
    if missing:
        raise ConfigError(f"Dataset directories {missing} (from {checkpoint.config_path}) do not exist here; "
                          "point at the built dataset with data_paths=[DIR].")
    return EvaluationPlan(checkpoint=checkpoint, train_paths=train_paths, test_paths=test_paths,
                          evaluators=args.evaluators if args.evaluators is not None else config.evaluators,
                          global_batch_size=args.global_batch_size or config.global_batch_size)


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------
def check_dataset_fits(plan: EvaluationPlan, test_metadata: PuzzleDatasetMetadata) -> None:
    """The dataset evaluated must have the sequence length and vocabulary the checkpoint was trained on."""
    trained, source = recorded_metadata(plan.checkpoint)
    if trained is None:
        return
    for field in ("seq_len", "vocab_size"):
        ours, theirs = getattr(test_metadata, field), getattr(trained, field)
        if ours != theirs:
            raise ConfigError(f"{plan.test_paths} has {field} {ours}, but {plan.checkpoint.weights} was trained on "
                              f"{field} {theirs} ({source}): evaluate it on a dataset built the same way.")


def check_output_dir(output_dir: str, overwrite: bool) -> None:
    path = os.path.join(output_dir, EVAL_METRICS_FILE)
    if os.path.exists(path) and not overwrite:
        raise ConfigError(f"{path} already exists (an earlier evaluation): pass overwrite=true to replace its "
                          "outputs, or output_dir=DIR for a new one.")


def run(args: EvaluateConfig, ctx: DistContext) -> dict | None:
    """Evaluate; on rank 0 print and write the metrics and return them (flat), None elsewhere."""
    plan = plan_evaluation(args)
    checkpoint, seed = plan.checkpoint, plan.checkpoint.config.seed
    threads = choose_threads(args.num_threads)
    apply_threads(threads)  # before any tensor work: the thread pool is sized once
    seed_everything(seed + ctx.rank)
    if not has_split(plan.test_paths, "test"):
        raise ConfigError(f"{plan.test_paths} has no test split to evaluate.")
    output_dir = args.output_dir or default_output_dir(args, checkpoint)
    # Held for the whole evaluation: a second evaluate.py into the same output_dir refuses instead of mixing outputs.
    # Taken before the data is loaded, so that an output_dir that cannot be written stops at once.
    with hold_run_lock(output_dir, ctx):
        check_output_dir(output_dir, args.overwrite)
        loader, test_metadata = create_dataloader(plan.test_paths, "test", ctx, seed=seed,
                                                  global_batch_size=plan.global_batch_size,
                                                  num_workers=args.num_workers, max_examples=args.max_eval_examples)
        check_dataset_fits(plan, test_metadata)
        return _evaluate_into(args, ctx, plan, loader, test_metadata, output_dir, threads)


def _evaluate_into(args: EvaluateConfig, ctx: DistContext, plan, loader, test_metadata,
                   output_dir: str, threads: Choice) -> dict | None:
    checkpoint, seed = plan.checkpoint, plan.checkpoint.config.seed
    model = load_trained(checkpoint, ctx.device, local_batch_size=loader.dataset.local_batch_size,  # cut to the data
                         data_paths=plan.train_paths, fallback_metadata=test_metadata, compile_model=args.compile)
    evaluators = create_evaluators(plan.evaluators, plan.test_paths, test_metadata,
                                   capped=args.max_eval_examples is not None)
    tta = tta_transforms(test_metadata.vocab_size, test_metadata.seq_len, args.tta, seed) if args.tta else []
    if ctx.is_main:
        make_dirs(output_dir)
        print(f"Evaluating {quoted(checkpoint.weights)} ({quoted(checkpoint.config_path)}) on {plan.test_paths}, "
              f"device {ctx.device} x{ctx.world_size} ({threads.describe()}, "
              f"{forward_dtype_choice(checkpoint.config.arch, ctx.device).describe()}), "
              f"halt_early={args.halt_early}, tta={args.tta}")

    results = evaluate(model, loader, test_metadata, evaluators, ctx, checkpoint.step, output_dir,
                       save_outputs=args.save_outputs, halt_early=args.halt_early, tta=tta,
                       tta_sudoku_check=args.tta_sudoku_check)
    if not ctx.is_main:
        return None
    flat = flatten_metrics(results)
    values, non_finite = json_metrics(flat)
    path = os.path.join(output_dir, EVAL_METRICS_FILE)
    write_atomically(path, lambda f: json.dump({"step": checkpoint.step, **values}, f, indent=1, allow_nan=False),
                     mode="w")
    print_report(results, output_dir, checkpoint.step, evaluators)
    if non_finite:
        print(non_finite_warning(non_finite, path, checkpoint.weights, model))
    return flat


def non_finite_warning(keys: list[str], path: str, weights: str, model) -> str:
    """One line: which metrics are NaN/inf (null in metrics.json) and, when that is why, that the weights are."""
    shown = ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
    bad = non_finite_names(dict(model.named_parameters()))
    why = (f": {weights} holds weights that are not finite (NaN or inf, in {len(bad)} tensors); evaluate a "
           "checkpoint saved before training diverged" if bad else "")
    return f"warning: metrics {shown} are not finite, written as null in {path}{why}."


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
