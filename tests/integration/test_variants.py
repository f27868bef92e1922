"""Every architecture trained by the trainer (what `python pretrain.py arch=<variant> ...` runs): the loss falls, the
Q-continue loss is logged by HRM only, the saved keys are the variant's published ones, and the baseline's
act_enabled decides whether training halts early."""
import math
import os

import pytest
import torch

from dataset.common import PuzzleDatasetMetadata
from models.weights import load_weights
from tests.helpers import build_head as build_configured_head
from tests.helpers import compose_config, cpu_context, read_metrics
from tests.unit.test_variants import CLASS_PATHS, NEW_VARIANTS, TINY_ARCH, TINY_COMMON, q_head_towards
from training.config import parse_config


@pytest.mark.parametrize("variant", NEW_VARIANTS)
def test_pretrain_trains_variant(variant, copy_task, tmp_path):
    from training.loop import train
    raw = compose_config([f"arch={variant}", f"data_paths=[{copy_task}]", "evaluators=[]", *TINY_COMMON,
                          *TINY_ARCH[variant], "global_batch_size=16", "epochs=6", "eval_interval=6", "lr=3e-3",
                          "lr_warmup_steps=2", "wandb_mode=disabled", "num_workers=0", f"+checkpoint_path={tmp_path}"])
    config = parse_config(raw)
    result = train(config, cpu_context())
    losses = [m["train/lm_loss"] for m in read_metrics(str(tmp_path)) if "train/lm_loss" in m]
    assert len(losses) >= 12 and all(math.isfinite(x) for x in losses)
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.5 * first, f"{variant}: lm_loss {first:.3f} -> {last:.3f}"
    # The Q-continue loss is logged by HRM only (published: HRM always trains it, the baseline never).
    logged = set().union(*read_metrics(str(tmp_path)))
    assert ("train/q_continue_loss" in logged) == (variant == "hrm"), sorted(logged)
    assert result["all"]["steps"] == 2  # evaluation runs halt_max_steps (2) for every sequence

    steps = sorted((f for f in os.listdir(tmp_path) if f.startswith("step_") and f[5:].isdigit()),
                   key=lambda f: int(f[5:]))
    weights = torch.load(os.path.join(tmp_path, steps[-1]), weights_only=True)
    metadata = PuzzleDatasetMetadata.model_validate_json(open(os.path.join(copy_task, "train", "dataset.json")).read())
    fresh = build_configured_head(config, metadata)
    assert type(fresh.model).__module__ == "models." + CLASS_PATHS[variant].split("@")[0]
    load_weights(fresh, weights)  # strict: the saved keys are the variant's published ones


@pytest.mark.parametrize("act_enabled", [True, False])
def test_pretrain_baseline_act_enabled_decides_whether_training_halts_early(act_enabled, copy_task, tmp_path):
    from training.loop import train
    overrides = ["arch=transformers_baseline", f"data_paths=[{copy_task}]", "evaluators=[]", *TINY_COMMON,
                 *TINY_ARCH["transformers_baseline"], "arch.halt_max_steps=3", f"arch.act_enabled={act_enabled}",
                 "arch.halt_exploration_prob=0", "global_batch_size=16", "epochs=3", "eval_interval=3", "lr=1e-4",
                 "wandb_mode=disabled", "num_workers=0", f"+checkpoint_path={tmp_path / 'run'}"]
    # Start from weights whose Q head says halt (q_halt 3 > q_continue -3) everywhere.
    metadata = PuzzleDatasetMetadata.model_validate_json(open(os.path.join(copy_task, "train", "dataset.json")).read())
    head = build_configured_head(parse_config(compose_config(overrides)), metadata)
    q_head_towards(head, 3.0, -3.0)
    torch.save(head.state_dict(), tmp_path / "init.pt")
    train(parse_config(compose_config([*overrides, f"+load_checkpoint={tmp_path / 'init.pt'}"])), cpu_context())

    logged = [m for m in read_metrics(str(tmp_path / "run")) if "train/steps" in m][:9]
    assert len(logged) == 9
    # Metrics are over the sequences that halted at this call (train/count: 1 when any did, else 0).
    if act_enabled:  # every sequence halts after one step
        assert all(m["train/count"] == 1 and m["train/steps"] == 1 for m in logged)
    else:  # every sequence runs halt_max_steps = 3
        assert [m["train/count"] for m in logged] == [0, 0, 1] * 3
        assert all(m["train/steps"] == 3 for m in logged if m["train/count"])
