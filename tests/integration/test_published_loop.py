"""Details of the published training loop: EMA evaluation, EMA after every batch, one evaluator per test path."""
import json
import os

import numpy as np
import pytest
import torch

import evaluate as evaluate_cli
import training.loop
from dataset import build_arc_dataset
from dataset.build_copy_dataset import write_copy_task, write_set
from dataset.common import write_identifiers
from models.ema import EMAHelper
from tests.helpers import TINY_EVAL_ARCH as TINY_ARCH
from tests.helpers import (
    build_head,
    compose_config,
    cpu_context,
    evaluate_head,
    read_metrics,
    train_metadata,
    write_tiny_arc_source,
)
from training.config import derive_names, parse_config
from training.evaluation import flatten_metrics


# ---------------------------------------------------------------------------------------------
# EMA: evaluated through the compiled model; updated after every loader batch
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_ema_evaluation_runs_through_the_compiled_model(tmp_path, monkeypatch):
    """compile=true (CPU inductor): the EMA copy evaluated is the compiled model carrying the shadow weights,
    and evaluate.py on the saved step_N gives the same metrics."""
    data = write_copy_task(str(tmp_path / "copy"), num_train_puzzles=16, num_test_puzzles=8, seq_len=6, vocab_size=5)
    run_dir = tmp_path / "run"
    raw = compose_config([f"data_paths=[{data}]", "evaluators=[]", *TINY_ARCH, "global_batch_size=8", "epochs=2",
                          "eval_interval=2", "lr=1e-3", "ema=true", "ema_rate=0.9", "compile=true", "device=cpu",
                          "wandb_mode=disabled", "num_workers=0", f"+checkpoint_path={run_dir}"])
    evaluated = []
    real_evaluate = training.loop.evaluate

    def recording_evaluate(model, *args, **kwargs):
        evaluated.append(model)
        return real_evaluate(model, *args, **kwargs)

    shadows = []
    real_state_dict = EMAHelper.state_dict
    monkeypatch.setattr(training.loop, "evaluate", recording_evaluate)
    monkeypatch.setattr(EMAHelper, "state_dict",
                        lambda self: shadows.append(dict(self.shadow)) or real_state_dict(self))
    result = training.loop.train(parse_config(raw), cpu_context())

    assert len(evaluated) == 1
    model = evaluated[0]
    assert isinstance(model, torch._dynamo.eval_frame.OptimizedModule), type(model)
    weights = dict(model._orig_mod.named_parameters())
    assert shadows and set(shadows[-1]) == set(weights)
    for name, shadow in shadows[-1].items():
        assert weights[name].dtype == torch.float32
        assert torch.equal(weights[name], shadow), name

    step = max(int(f[5:]) for f in os.listdir(run_dir) if f.startswith("step_") and f[5:].isdigit())
    flat = evaluate_cli.run(evaluate_cli.EvaluateConfig(checkpoint=str(run_dir / f"step_{step}"), device="cpu",
                                                        compile=True, num_workers=0,
                                                        output_dir=str(tmp_path / "eval")), cpu_context())
    assert flat == pytest.approx(flatten_metrics(result), rel=1e-6, abs=1e-7)


def write_uneven_groups(directory: str) -> str:
    """Group 0: one puzzle of 4 examples; group 1: three puzzles of 1 example. The published step estimate
    (groups x mean examples per puzzle) is below what the loader packs, so the last iteration has extra batches."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        inputs = rng.integers(1, 5, size=(7, 6)).astype(np.uint8)
        write_set(directory, split, inputs, inputs.copy(), puzzle_sizes=[4, 1, 1, 1], group_sizes=[1, 3],
                  puzzle_identifiers=[0, 0, 0, 0], vocab_size=5, num_puzzle_identifiers=1)
    write_identifiers(directory, ["<blank>"])
    return directory


def test_ema_moves_after_every_loader_batch_also_past_total_steps(tmp_path, monkeypatch):
    data = write_uneven_groups(str(tmp_path / "uneven"))
    raw = compose_config([f"data_paths=[{data}]", "evaluators=[]", *TINY_ARCH, "global_batch_size=4", "epochs=8",
                          "eval_interval=8", "lr=1e-3", "ema=true", "wandb_mode=disabled", "num_workers=0",
                          f"+checkpoint_path={tmp_path / 'run'}"])
    updates = []
    real_update = EMAHelper.update
    monkeypatch.setattr(EMAHelper, "update", lambda self, module: updates.append(1) or real_update(self, module))
    trained = []
    real_train_batch = training.loop.train_batch
    monkeypatch.setattr(training.loop, "train_batch",
                        lambda *args: trained.append(real_train_batch(*args)) or trained[-1])
    training.loop.train(parse_config(raw), cpu_context())

    total_steps = int(8 * 2 * (7 / 4) / 4)  # the published estimate: 7
    logged_steps = [m["step"] for m in read_metrics(str(tmp_path / "run")) if "train/lm_loss" in m]
    assert logged_steps == list(range(1, total_steps + 1))  # only total_steps batches are trained on
    assert len(trained) > total_steps, "the dataset should give the loader more batches than the estimate"
    assert len(updates) == len(trained)  # ... but, as published, the EMA moves after every loader batch


# ---------------------------------------------------------------------------------------------
# One evaluator per test data path
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_arc_builds(tmp_path_factory):
    root = tmp_path_factory.mktemp("two_arc")
    prefix = write_tiny_arc_source(str(root / "kaggle"))
    builds = []
    for name, num_aug in (("arc-aug-2", "2"), ("arc-aug-1", "1")):
        out = str(root / name)
        build_arc_dataset.main(["--input-file-prefix", prefix, "--output-dir", out, "--subsets", "training",
                                "evaluation", "--test-set-name", "evaluation", "--num-aug", num_aug])
        builds.append(out)
    return builds


def evaluate_untrained(test_paths: list[str], train_path: str, save_dir: str):
    raw = compose_config([f"data_paths=[{train_path}]", f"data_paths_test=[{','.join(test_paths)}]", *TINY_ARCH,
                          "global_batch_size=8", "epochs=1", "eval_interval=1", "num_workers=0",
                          "wandb_mode=disabled", f"+checkpoint_path={save_dir}"])
    config = derive_names(parse_config(raw), "test-run")
    torch.manual_seed(0)
    head = build_head(config, train_metadata(config))
    results, evaluators = evaluate_head(config, head, save_dir)
    return flatten_metrics(results), evaluators


def non_blank_test_examples(path: str) -> int:
    identifiers = np.load(os.path.join(path, "test", "all__puzzle_identifiers.npy"))
    examples = np.diff(np.load(os.path.join(path, "test", "all__puzzle_indices.npy")))
    return int(examples[identifiers != 0].sum())


def test_one_arc_evaluator_per_test_path_with_metrics_for_each(two_arc_builds, tmp_path):
    first, second = two_arc_builds
    both, evaluators = evaluate_untrained([first, second], first, str(tmp_path / "both"))
    assert [(type(e.evaluator).__name__, e.path_index, e.name) for e in evaluators] == [("ARC", 0, "ARC"),
                                                                                         ("ARC", 1, "ARC1")]
    assert {"ARC/pass@1", "ARC/pass@2", "ARC1/pass@1", "ARC1/pass@2", "all/exact_accuracy",
            "all1/exact_accuracy"} <= set(both)
    # Each evaluator voted only on its own path's examples: one vote per test example of that build.
    for entry, path in zip(evaluators, (first, second)):
        votes = sum(len(v) for v in entry.evaluator._votes)
        assert votes == non_blank_test_examples(path), entry.name

    # Each path scores, and submits, exactly what it does when evaluated alone.
    for index, path in enumerate((first, second)):
        alone, _ = evaluate_untrained([path], first, str(tmp_path / f"alone{index}"))
        suffix = "" if index == 0 else "1"
        for k in (1, 2, 5):
            assert both[f"ARC{suffix}/pass@{k}"] == alone[f"ARC/pass@{k}"]
        with open(tmp_path / "both" / f"evaluator_ARC{suffix}_step_0" / "submission.json") as f:
            combined = json.load(f)
        with open(tmp_path / f"alone{index}" / "evaluator_ARC_step_0" / "submission.json") as f:
            assert combined == json.load(f)
