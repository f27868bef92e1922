"""evaluate.py and inference-time halting: a checkpoint scores in a fresh process exactly as at the end of training."""
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import yaml
from torch import nn
from torch.nn import functional as F

import evaluate as evaluate_cli
from dataset import build_arc_dataset
from dataset.build_copy_dataset import write_copy_task
from tests.helpers import (
    REPO_ROOT,
    TINY_EVAL_ARCH,
    assert_kaggle_submission,
    build_head,
    compose_config,
    cpu_context,
    evaluate_head,
    train_metadata,
    write_tiny_arc_source,
)
from training.checkpointing import save_code_and_config, save_weights
from training.config import derive_names, parse_config
from training.evaluation import run_act_halting_early
from training.loop import train

TINY_ARCH = TINY_EVAL_ARCH


def run_evaluate_cli(args: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO_ROOT, WANDB_MODE="disabled")
    return subprocess.run([sys.executable, os.path.join(REPO_ROOT, "evaluate.py"), *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def read_jsonl(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def arc_run(tmp_path_factory):
    """A tiny model trained a few steps on a tiny ARC build (aug 2), evaluated once, at the end, with arc@ARC."""
    root = tmp_path_factory.mktemp("arc_e2e")
    data = str(root / "arc-aug-2")
    build_arc_dataset.main(["--input-file-prefix", write_tiny_arc_source(str(root / "kaggle")), "--output-dir", data,
                            "--subsets", "training", "evaluation", "--test-set-name", "evaluation", "--num-aug", "2"])
    run_dir = str(root / "run")
    raw = compose_config([f"data_paths=[{data}]", *TINY_ARCH, "global_batch_size=8", "epochs=4", "eval_interval=4",
                          "lr=1e-3", "lr_warmup_steps=1", "wandb_mode=disabled", "num_workers=0", "device=cpu",
                          f"+checkpoint_path={run_dir}"])
    assert raw["evaluators"] == [{"name": "arc@ARC"}]
    train(parse_config(raw), cpu_context())
    logged = [line for line in read_jsonl(os.path.join(run_dir, "metrics.jsonl")) if "ARC/pass@1" in line]
    assert len(logged) == 1  # one evaluation: aggregated voting has nothing older to mix in
    checkpoint = os.path.join(run_dir, f"step_{logged[0]['step']}")
    return {"data": data, "run_dir": run_dir, "logged": logged[0], "checkpoint": checkpoint}


# ---------------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_fresh_process_reproduces_training_metrics(arc_run, tmp_path):
    out = tmp_path / "eval"
    result = run_evaluate_cli([f"checkpoint={arc_run['checkpoint']}", f"output_dir={out}", "device=cpu",
                               "num_workers=0",
                               "save_outputs=[puzzle_identifiers,preds,q_halt_logits]"])
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics == arc_run["logged"]  # every key and value, bit for bit (same step too)
    assert "exact accuracy" in result.stdout and "token accuracy" in result.stdout and "ARC/pass@1" in result.stdout

    step = arc_run["logged"]["step"]
    with open(out / f"evaluator_ARC_step_{step}" / "submission.json") as f:
        submission = json.load(f)
    with open(os.path.join(arc_run["run_dir"], f"evaluator_ARC_step_{step}", "submission.json")) as f:
        assert submission == json.load(f)
    with open(os.path.join(arc_run["data"], "test_puzzles.json")) as f:
        assert_kaggle_submission(submission, json.load(f))

    saved = torch.load(out / f"step_{step}_all_preds.0", weights_only=True)
    num_test = np.load(os.path.join(arc_run["data"], "test", "all__inputs.npy")).shape[0]
    padded = -(-num_test // 8) * 8  # the last batch is padded to the batch size
    assert set(saved) == {"puzzle_identifiers", "preds", "q_halt_logits"}
    assert saved["preds"].shape == (padded, 900) and saved["q_halt_logits"].shape == (padded,)


def test_published_checkpoint_format_evaluates(arc_run, tmp_path, capsys):
    """Keys of the compiled loss head (`_orig_mod.`), a run directory as checkpoint=, config=PATH elsewhere."""
    published = tmp_path / "published"
    published.mkdir()
    state = torch.load(arc_run["checkpoint"], weights_only=True)
    torch.save({f"_orig_mod.{k}": v for k, v in state.items()}, published / "step_7")
    config = tmp_path / "all_config.yaml"
    shutil.copy(os.path.join(arc_run["run_dir"], "all_config.yaml"), config)
    evaluate_cli.main([f"checkpoint={published}", f"config={config}", f"output_dir={tmp_path / 'out'}",
                       "device=cpu", "num_workers=0"])
    with open(tmp_path / "out" / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics == {**arc_run["logged"], "step": 7}
    assert "Submission written to" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["checkpoint={missing}"], "does not exist"),
    (["checkpoint={lonely}"], "point at it with config=PATH/all_config.yaml"),
    (["checkpoint={ckpt}", "halt_erly=true"], "halt_erly: unknown key"),
    (["checkpoint={ckpt}", "global_batch_size=many"], "global_batch_size"),
    (["{ckpt}"], "Arguments must be key=value"),
    (["checkpoint={ckpt}", "data_paths=[{missing}]"], "point at the built dataset with data_paths=[DIR]"),
    (["checkpoint={ckpt}", "device=tpu"], "Invalid device 'tpu'"),
], ids=["missing_checkpoint", "missing_config", "unknown_key", "bad_type", "not_key_value", "missing_data", "device"])
def test_errors_are_clear(arc_run, tmp_path, capsys, args, message):
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    shutil.copy(arc_run["checkpoint"], lonely / "step_1")
    paths = dict(missing=tmp_path / "nope", lonely=lonely / "step_1", ckpt=arc_run["checkpoint"])
    with pytest.raises(SystemExit) as exit_info:
        evaluate_cli.main([arg.format(**paths) for arg in args])
    assert str(exit_info.value.code).startswith("error: ") and message in str(exit_info.value.code)


def test_checkpoint_of_another_model_is_a_clear_error(arc_run, tmp_path):
    config = yaml.safe_load(open(os.path.join(arc_run["run_dir"], "all_config.yaml")))
    config["arch"]["hidden_size"] = 64
    (tmp_path / "run").mkdir()
    shutil.copy(arc_run["checkpoint"], tmp_path / "run" / "step_3")
    with open(tmp_path / "run" / "all_config.yaml", "w") as f:
        yaml.safe_dump(config, f)
    with pytest.raises(SystemExit, match="does not fit the model of this config and dataset"):
        evaluate_cli.main([f"checkpoint={tmp_path / 'run'}", "device=cpu", "num_workers=0"])


# ---------------------------------------------------------------------------------------------
# Sudoku / Maze style: no evaluator, exact and token accuracy per set
# ---------------------------------------------------------------------------------------------
def saved_untrained_model(tmp_path, overrides=()) -> tuple[str, object]:
    data = write_copy_task(str(tmp_path / "copy"), num_train_puzzles=8, num_test_puzzles=10, seq_len=6, vocab_size=5)
    raw = compose_config([f"data_paths=[{data}]", "evaluators=[]", *TINY_ARCH, "global_batch_size=4", "epochs=1",
                          "eval_interval=1", "num_workers=0", f"+checkpoint_path={tmp_path / 'run'}", *overrides])
    config = derive_names(parse_config(raw), "test-run")
    torch.manual_seed(0)
    head = build_head(config, train_metadata(config))
    save_code_and_config(config)
    return save_weights(config.checkpoint_path, head, 5), config


def test_exact_and_token_accuracy_per_set_are_reported(tmp_path, capsys):
    checkpoint, _ = saved_untrained_model(tmp_path)
    metrics = evaluate_cli.run(evaluate_cli.EvaluateConfig(checkpoint=checkpoint, device="cpu", num_workers=0,
                                                           output_dir=str(tmp_path / "out")), cpu_context())
    printed = capsys.readouterr().out
    assert "[all] exact accuracy" in printed and "token accuracy" in printed and "mean steps 3.00" in printed
    assert {"all/exact_accuracy", "all/accuracy", "all/steps", "all/lm_loss", "all/q_halt_accuracy"} <= set(metrics)
    with open(tmp_path / "out" / "metrics.json") as f:
        assert json.load(f) == {"step": 5, **metrics}


# ---------------------------------------------------------------------------------------------
# Inference-time halting
# ---------------------------------------------------------------------------------------------
def evaluate_model(config, head, halt_early: bool) -> dict:
    return evaluate_head(config, head, halt_early=halt_early)[0]


def set_q_halt_bias(head: nn.Module, value: float) -> None:
    q_heads = [m for name, m in head.named_modules() if name.endswith("q_head")]
    assert len(q_heads) == 1
    with torch.no_grad():
        q_heads[0].bias[0] = value


def test_halt_early_without_early_halts_equals_published_evaluation(tmp_path):
    checkpoint, config = saved_untrained_model(tmp_path)
    head = build_head(config, train_metadata(config))
    head.load_state_dict(torch.load(checkpoint, weights_only=True))  # Q head at its init: q_halt = -5, never halts
    published, early = evaluate_model(config, head, False), evaluate_model(config, head, True)
    assert published == early and published["all"]["steps"] == 3.0


def test_halting_at_step_one_equals_a_one_step_model(tmp_path):
    checkpoint, config = saved_untrained_model(tmp_path)
    one_step = config.model_copy(update={"arch": config.arch.model_copy(update={"halt_max_steps": 1})})
    assert one_step.arch.model_keys["halt_max_steps"] == 1
    results = []
    for cfg, halt_early in ((config, True), (one_step, False)):
        head = build_head(cfg, train_metadata(cfg))
        head.load_state_dict(torch.load(checkpoint, weights_only=True))
        set_q_halt_bias(head, 5.0)  # q_halt ~ +5 everywhere: every sequence halts at its first step
        results.append(evaluate_model(cfg, head, halt_early))
    assert results[0] == results[1] and results[0]["all"]["steps"] == 1.0


@dataclass
class FakeCarry:
    steps: torch.Tensor
    halted: torch.Tensor


class ScheduledHaltHead(nn.Module):
    """An ACT loss-head stand-in: sequence b says halt from step halt_at[b] on; its predictions at step s are all s."""

    def __init__(self, halt_at: list[int], max_steps: int, vocab: int = 8):
        super().__init__()
        self.halt_at, self.max_steps, self.vocab, self.calls = torch.tensor(halt_at), max_steps, vocab, 0
        self.loss_fn = lambda logits, labels, ignore_index, valid_mask: torch.zeros(labels.shape)

    def initial_carry(self, batch):
        size = batch["inputs"].shape[0]
        return FakeCarry(torch.zeros(size, dtype=torch.int32), torch.ones(size, dtype=torch.bool))

    def forward(self, carry, batch, return_keys):
        self.calls += 1
        steps = torch.where(carry.halted, 0, carry.steps) + 1
        preds = steps[:, None].expand_as(batch["labels"]).long()
        outputs = {"preds": preds, "logits": F.one_hot(preds, self.vocab).float(),
                   "q_halt_logits": torch.where(steps >= self.halt_at, 1.0, -1.0),
                   "q_continue_logits": torch.full(steps.shape, 2.0)}
        halted = steps >= self.max_steps
        return FakeCarry(steps, halted), None, {}, {k: v for k, v in outputs.items() if k in return_keys}, halted.all()


def halts_on_positive_q_halt(q_halt, q_continue):
    return q_halt > 0


def test_halted_sequences_keep_their_outputs():
    halt_at = [1, 3, 9, 2]  # 9: never says halt, stops at halt_max_steps = 4
    batch = {"inputs": torch.zeros(4, 5, dtype=torch.int32),
             "labels": torch.tensor([[1] * 5, [3] * 5, [4] * 5, [-100] * 5], dtype=torch.int32)}
    head = ScheduledHaltHead(halt_at, max_steps=4)
    metrics, outputs = run_act_halting_early(head, batch, {"preds"}, halts_on_positive_q_halt)
    assert outputs.keys() == {"preds"} and outputs["preds"][:, 0].tolist() == [1, 3, 4, 2]
    assert head.calls == 4
    assert {k: float(v) for k, v in metrics.items()} == {
        "count": 3.0, "accuracy": 3.0, "exact_accuracy": 3.0,
        "q_halt_accuracy": 2.0,  # the third sequence is right but ended with q_halt < 0
        "steps": 8.0,  # 1 + 3 + 4: the label-less fourth row is not counted
        "lm_loss": 0.0,
        # every row (padding too, as in the loss head) is a "correct" target: BCE = softplus(-q)
        "q_halt_loss": pytest.approx(3 * float(F.softplus(torch.tensor(-1.0))) + float(F.softplus(torch.tensor(1.0))))}

    head = ScheduledHaltHead([1, 2, 1, 2], max_steps=16)
    _, outputs = run_act_halting_early(head, batch, {"preds", "q_halt_logits"}, halts_on_positive_q_halt)
    assert head.calls == 2 and outputs["preds"][:, 0].tolist() == [1, 2, 1, 2]  # stops once all halted

    head = ScheduledHaltHead(halt_at, max_steps=4)  # q_halt (1) never exceeds q_continue (2)
    _, outputs = run_act_halting_early(head, batch, {"preds"}, lambda q_halt, q_continue: q_halt > q_continue)
    assert outputs["preds"][:, 0].tolist() == [4, 4, 4, 4]


@pytest.mark.integration
@pytest.mark.slow
def test_torchrun_two_processes_match_one(arc_run, tmp_path):
    """Under torchrun each rank evaluates its slice; metrics are reduced and ARC votes gathered on rank 0."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO_ROOT)
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             os.path.join(REPO_ROOT, "evaluate.py"), f"checkpoint={arc_run['checkpoint']}",
                             f"output_dir={tmp_path}", "device=cpu", "num_workers=0"],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics.keys() == arc_run["logged"].keys()
    for key, value in arc_run["logged"].items():
        assert metrics[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
