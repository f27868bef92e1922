"""End-to-end training on CPU: learning, torchrun equivalence, config errors, published interface."""
import math
import os
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir

from models.losses import ACTLossHead
from models.recursive_reasoning.trm import TinyRecursiveReasoningModel_ACTV1
from tests.conftest import REPO_ROOT
from dataset.build_copy_dataset import write_copy_task
from trainer import cosine_schedule_with_warmup_lr
from utils.checkpoint import load_weights
from utils.config import parse_config
from utils.distributed import DistContext

TINY_ARCH = ["arch.hidden_size=32", "arch.num_heads=2", "arch.L_layers=1", "arch.H_cycles=1", "arch.L_cycles=1",
             "arch.halt_max_steps=2", "arch.forward_dtype=float32", "arch.puzzle_emb_len=1", "arch.expansion=2"]


def compose_config(overrides: list[str], config_name: str = "cfg_pretrain") -> dict:
    with initialize_config_dir(config_dir=os.path.join(REPO_ROOT, "config"), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides)
    from omegaconf import OmegaConf
    return OmegaConf.to_container(cfg, resolve=True)


def cpu_context() -> DistContext:
    return DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), cpu_group=None)


def read_metrics(path: str) -> list[dict]:
    import json
    with open(os.path.join(path, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def copy_task(tmp_path_factory) -> str:
    return write_copy_task(str(tmp_path_factory.mktemp("data") / "copy"), num_train_puzzles=64, num_test_puzzles=16,
                           seq_len=8, vocab_size=6, num_puzzle_identifiers=65)


def test_copy_task_is_learned(copy_task, tmp_path):
    from trainer import train
    raw = compose_config([f"data_paths=[{copy_task}]", "evaluators=[]", *TINY_ARCH, "global_batch_size=16",
                          "epochs=40", "eval_interval=40", "lr=3e-3", "lr_warmup_steps=5", "wandb_mode=disabled",
                          "num_workers=0", f"+checkpoint_path={tmp_path}", "arch.halt_exploration_prob=0"])
    result = train(parse_config(raw), cpu_context())
    lines = [m for m in read_metrics(str(tmp_path)) if "train/lm_loss" in m]
    first, last = lines[0], lines[-1]
    assert last["train/lm_loss"] < 0.2 * first["train/lm_loss"]
    assert last["train/exact_accuracy"] == 1.0
    assert result["all"]["exact_accuracy"] == 1.0  # held-out copies too
    assert os.path.isfile(os.path.join(tmp_path, f"step_{lines[-1]['step']}"))
    assert os.path.isfile(os.path.join(tmp_path, "all_config.yaml"))


@pytest.mark.parametrize("overrides", [
    ["arch.loss.loss_type=softmax_cross_entropy"],
    ["arch.no_ACT_continue=false", "arch.halt_exploration_prob=0.5"],
    ["arch.puzzle_emb_ndim=0"],  # puzzle_emb_len stays 1: no prefix instead of the published crash
    ["arch.mlp_t=true", "arch.pos_encodings=none"],
    ["arch.pos_encodings=learned", "ema=true", "freeze_weights=true"],
], ids=["softmax", "act_continue", "no_puzzle_emb", "mlp_t", "learned_ema_frozen"])
def test_options_train(copy_task, tmp_path, overrides):
    from trainer import train
    raw = compose_config([f"data_paths=[{copy_task}]", "evaluators=[]", *TINY_ARCH, "global_batch_size=16",
                          "epochs=4", "eval_interval=4", "wandb_mode=disabled", "num_workers=0",
                          f"+checkpoint_path={tmp_path}", *overrides])
    result = train(parse_config(raw), cpu_context())
    losses = [m["train/lm_loss"] for m in read_metrics(str(tmp_path)) if "train/lm_loss" in m]
    assert losses and all(math.isfinite(x) for x in losses)
    assert 0.0 <= result["all"]["accuracy"] <= 1.0
    if "arch.no_ACT_continue=false" in overrides:
        assert any("train/q_continue_loss" in m for m in read_metrics(str(tmp_path)))


def _run_pretrain(args: list[str], nproc: int = 1, cwd: str = REPO_ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1", PYTHONPATH=REPO_ROOT)
    if nproc == 1:
        cmd = [sys.executable, os.path.join(REPO_ROOT, "pretrain.py")]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
               os.path.join(REPO_ROOT, "pretrain.py")]
    return subprocess.run(cmd + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _final_weights(path: str) -> dict[str, torch.Tensor]:
    steps = sorted((f for f in os.listdir(path) if f.startswith("step_") and f[5:].isdigit()), key=lambda f: int(f[5:]))
    return torch.load(os.path.join(path, steps[-1]), weights_only=True)


@pytest.mark.slow
def test_torchrun_two_processes_match_one(copy_task, tmp_path):
    common = [f"data_paths=[{copy_task}]", "evaluators=[]", *TINY_ARCH, "arch.halt_exploration_prob=0",
              "global_batch_size=16", "epochs=4", "eval_interval=4", "lr=1e-3", "lr_warmup_steps=2", "device=cpu"]
    single = _run_pretrain(common + [f"+checkpoint_path={tmp_path / 'one'}"])
    assert single.returncode == 0, single.stderr[-3000:]
    double = _run_pretrain(common + [f"+checkpoint_path={tmp_path / 'two'}"], nproc=2)
    assert double.returncode == 0, double.stderr[-3000:]
    one, two = _final_weights(str(tmp_path / "one")), _final_weights(str(tmp_path / "two"))
    assert one.keys() == two.keys() and "model.inner.puzzle_emb.weights" in one
    for key in one:
        diff = (one[key].double() - two[key].double()).abs().max().item()
        assert diff <= 1e-5, f"{key}: 1-process and 2-process runs differ by {diff}"
    assert (one["model.inner.puzzle_emb.weights"].abs().sum() > 0), "puzzle embeddings were never trained"


@pytest.mark.parametrize("args, message", [
    (["+arch.L_cylces=4"], "arch.L_cylces: unknown key"),
    (["arch.L_cylces=4"], "Key 'L_cylces' is not in struct"),
    (["+lr_typo=1"], "lr_typo: unknown key"),
    (["eval_interval=3"], "eval_interval (3) must be >= 1 and divide epochs"),
    (["arch.pos_encodings=sinusoid"], "arch.pos_encodings"),
], ids=["arch_plus", "arch_struct", "top_level", "eval_interval", "bad_value"])
def test_config_errors_are_clear(copy_task, args, message):
    result = _run_pretrain([f"data_paths=[{copy_task}]", "evaluators=[]", "epochs=4", "eval_interval=2", *args])
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_dataset_is_clear(tmp_path):
    result = _run_pretrain([f"data_paths=[{tmp_path / 'missing'}]", "evaluators=[]"])
    assert result.returncode != 0
    assert "does not exist" in result.stderr and "build" in result.stderr
    assert "Traceback" not in result.stderr


def test_unavailable_evaluator_is_an_error(copy_task):
    result = _run_pretrain([f"data_paths=[{copy_task}]", "evaluators=[{name: nonexistent@Nope}]", "epochs=4", "eval_interval=4",
                            *TINY_ARCH, "global_batch_size=16"])
    assert result.returncode != 0
    assert "evaluator 'nonexistent@Nope' is not available" in result.stderr


def test_published_interface_and_prefixed_weights():
    config = dict(batch_size=2, seq_len=4, vocab_size=5, num_puzzle_identifiers=3, puzzle_emb_ndim=16, H_cycles=1,
                  L_cycles=1, H_layers=0, L_layers=1, hidden_size=16, expansion=2, num_heads=2, pos_encodings="rope",
                  halt_max_steps=2, halt_exploration_prob=0.0, forward_dtype="float32", causal=False)
    head = ACTLossHead(TinyRecursiveReasoningModel_ACTV1(config), loss_type="stablemax_cross_entropy")
    batch = dict(inputs=torch.randint(0, 5, (2, 4), dtype=torch.int32), labels=torch.randint(0, 5, (2, 4), dtype=torch.int32),
                 puzzle_identifiers=torch.tensor([1, 2], dtype=torch.int32))
    carry = head.initial_carry(batch)
    carry, loss, metrics, outputs, all_halted = head(carry=carry, batch=batch, return_keys=["logits", "preds"])
    assert outputs["logits"].shape == (2, 4, 5) and outputs["preds"].shape == (2, 4)
    assert loss.ndim == 0 and {"count", "accuracy", "exact_accuracy", "lm_loss", "q_halt_loss"} <= set(metrics)
    assert isinstance(all_halted.item(), bool)

    other = ACTLossHead(TinyRecursiveReasoningModel_ACTV1(config), loss_type="stablemax_cross_entropy")
    published = {f"_orig_mod.{k}": v for k, v in head.state_dict().items()}
    assert any(k.endswith("puzzle_emb.weights") for k in published)
    load_weights(other, published)
    for key, value in head.state_dict().items():
        assert torch.equal(other.state_dict()[key], value)
    del published["_orig_mod.model.inner.H_init"]
    with pytest.raises(ValueError, match="missing keys"):
        load_weights(other, published)


def test_lr_schedule():
    assert cosine_schedule_with_warmup_lr(0, 1.0, 10, 110) == 0.0
    assert cosine_schedule_with_warmup_lr(5, 1.0, 10, 110) == pytest.approx(0.5)
    assert cosine_schedule_with_warmup_lr(10, 1.0, 10, 110) == pytest.approx(1.0)
    assert cosine_schedule_with_warmup_lr(60, 1.0, 10, 110, min_ratio=0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert cosine_schedule_with_warmup_lr(110, 1.0, 10, 110, min_ratio=0.1) == pytest.approx(0.1)
    # lr_min_ratio 1.0 (the default) keeps the lr constant after warm-up
    assert cosine_schedule_with_warmup_lr(77, 2.0, 10, 110, min_ratio=1.0) == pytest.approx(2.0)
