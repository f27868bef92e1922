"""The trainer with LMA (what `python pretrain.py arch=trm arch.lma_enable=true ...` runs): every mode trains,
evaluate.py recounts what training reported, the checkpoint loads into an LMA model of the same config, and many
puzzles seen a few times teach it the copy task."""
import math
import os
import re

import pytest
import torch

from dataset.build_copy_dataset import write_copy_task
from dataset.common import PuzzleDatasetMetadata
from models.weights import load_weights
from tests.helpers import TINY_ARCH, assert_evaluate_reproduces, compose_config, cpu_context, read_metrics
from tests.helpers import build_head as build_configured_head
from training.config import parse_config


def _final_weights(path: str) -> dict[str, torch.Tensor]:
    steps = sorted((f for f in os.listdir(path) if f.startswith("step_") and f[5:].isdigit()), key=lambda f: int(f[5:]))
    return torch.load(os.path.join(path, steps[-1]), weights_only=True)


@pytest.mark.parametrize("overrides", [
    ["arch.lma_mode=unclean"],
    ["arch.lma_mode=clean", "arch.pos_encodings=learned", "ema=true"],
    ["arch.lma_latent_len=3", "arch.mlp_t=true", "arch.pos_encodings=none", "arch.no_ACT_continue=false"],
], ids=["unclean", "clean_learned_ema", "mlp_t_act_continue"])
def test_trainer_runs_with_lma(copy_task, tmp_path, overrides, capsys):
    from training.loop import train
    raw = compose_config([f"data_paths=[{copy_task}]", "evaluators=[]", *TINY_ARCH, "global_batch_size=16",
                          "epochs=2", "eval_interval=2", "wandb_mode=disabled", "num_workers=0",
                          f"+checkpoint_path={tmp_path}", "arch.lma_enable=true", *overrides])
    config = parse_config(raw)
    result = train(config, cpu_context())
    # The latent sizes LMA chose (all_config.yaml keeps what was asked: null for automatic) are printed.
    automatic = "(automatic)" if config.arch.model_keys.get("lma_latent_len") is None else "L_new 3,"
    line = re.search(r"^  LMA: mode \w+, L_new \d+.*C' \d+; L = \d+ -> \d+.*$", capsys.readouterr().out, re.M)
    assert line and automatic in line.group(0), line
    first = read_metrics(str(tmp_path))[0]  # ... and recorded at step 0, where all_config.yaml has null
    assert first["step"] == 0 and f"L_new {first['lma/L_new']}" in line.group(0)
    assert f"C' {first['lma/chunk_size']};" in line.group(0) and first["lma/latent_width"] > 0
    losses = [m["train/lm_loss"] for m in read_metrics(str(tmp_path)) if "train/lm_loss" in m]
    assert losses and all(math.isfinite(x) for x in losses)
    assert_evaluate_reproduces(result, str(tmp_path))  # evaluate.py on the saved step_N reports what training did

    weights = _final_weights(str(tmp_path))
    assert "model.inner.lma.residual_encoder.weight" in weights and "model.inner.puzzle_emb.weights" in weights
    metadata = PuzzleDatasetMetadata.model_validate_json(open(os.path.join(copy_task, "train", "dataset.json")).read())
    fresh = build_configured_head(config, metadata)
    load_weights(fresh, weights)  # strict: the checkpoint matches an LMA model built from the same config


def test_lma_learns_the_copy_task(tmp_path):
    from training.loop import train
    # Many puzzles seen few times: the chunk encoders have no weights shared across positions, so
    # on 64 puzzles repeated 40 times LMA memorises them (train exact 1.0, held-out ~0.2) instead
    # of learning to copy.
    data = write_copy_task(str(tmp_path / "copy"), num_train_puzzles=640, num_test_puzzles=64, seq_len=8, vocab_size=6,
                           num_puzzle_identifiers=641)
    raw = compose_config([f"data_paths=[{data}]", "evaluators=[]", *TINY_ARCH, "global_batch_size=16",
                          "epochs=5", "eval_interval=5", "lr=3e-3", "lr_warmup_steps=5", "wandb_mode=disabled",
                          "num_workers=0", f"+checkpoint_path={tmp_path / 'run'}", "arch.halt_exploration_prob=0",
                          "arch.lma_enable=true", "arch.lma_mode=unclean"])
    result = train(parse_config(raw), cpu_context())
    lines = [m for m in read_metrics(str(tmp_path / "run")) if "train/lm_loss" in m]
    assert lines[-1]["train/lm_loss"] < 0.2 * lines[0]["train/lm_loss"]
    assert lines[0]["train/exact_accuracy"] < 0.1  # chance is (1/5)^8
    assert lines[-1]["train/exact_accuracy"] >= 0.9
    assert result["all"]["exact_accuracy"] >= 0.9  # held-out copies too
