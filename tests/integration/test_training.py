"""End-to-end training on CPU: learning, torchrun equivalence, config errors, published interface."""
import math
import os
import subprocess
import sys
import time

import pytest
import torch

from models.losses import ACTLossHead
from models.recursive_reasoning.trm import TinyRecursiveReasoningModel_ACTV1
from models.weights import load_weights
from tests.helpers import REPO_ROOT, TINY_ARCH, assert_evaluate_reproduces, compose_config, cpu_context, read_metrics
from training.config import parse_config
from training.state import cosine_schedule_with_warmup_lr


@pytest.mark.integration
def test_copy_task_is_learned(copy_task, tmp_path):
    from training.loop import train
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


OPTION_RUN_ARGS = ["evaluators=[]", *TINY_ARCH, "global_batch_size=16", "epochs=2", "eval_interval=2",
                   "lr_warmup_steps=2", "wandb_mode=disabled", "num_workers=0"]
PUZZLE_EMB_KEY = "model.inner.puzzle_emb.weights"


@pytest.fixture(scope="module")
def option_runs(copy_task, tmp_path_factory):
    """run(overrides): one short training run per option set (cached: cases share the default run), with the
    model as built and its initial weights, the final step_N weights and the final training state."""
    import training.loop
    from rundir.layout import list_train_states
    from rundir.states import load_rank_state, load_train_state
    runs = {}

    def run(overrides: tuple[str, ...]) -> dict:
        if overrides in runs:
            return runs[overrides]
        run_dir = str(tmp_path_factory.mktemp("run"))
        raw = compose_config([f"data_paths=[{copy_task}]", *OPTION_RUN_ARGS, f"+checkpoint_path={run_dir}", *overrides])
        built = {}
        original_init = training.loop.init_train_state

        def init_and_capture(*args, **kwargs):
            state = original_init(*args, **kwargs)
            built["model"] = state.raw_model
            built["initial"] = {k: v.detach().clone() for k, v in state.raw_model.state_dict().items()}
            return state

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(training.loop, "init_train_state", init_and_capture)
            result = training.loop.train(parse_config(raw), cpu_context())
        state_dir = list_train_states(run_dir)[-1][1]
        shared, rank0 = load_train_state(state_dir), load_rank_state(state_dir, 0, 1, 1)
        runs[overrides] = dict(run_dir=run_dir, result=result, metrics=read_metrics(run_dir),
                               weights=_final_weights(run_dir),
                               state=shared, rank0=rank0, **built)
        return runs[overrides]

    return run


def _changed(a: torch.Tensor, b: torch.Tensor) -> bool:
    return not torch.equal(a, b)


@pytest.mark.integration
@pytest.mark.parametrize("overrides", [
    [],
    ["arch.loss.loss_type=softmax_cross_entropy"],
    ["arch.no_ACT_continue=false", "arch.halt_exploration_prob=0.5"],
    ["arch.puzzle_emb_ndim=0"],  # puzzle_emb_len stays 1: no prefix instead of the published crash
    ["arch.mlp_t=true", "arch.pos_encodings=none"],
    ["arch.pos_encodings=learned", "ema=true"],
    ["freeze_weights=true"],  # not with ema: the shadow of a constant moves by rounding (0.001 p + 0.999 p)
], ids=["default", "softmax", "act_continue", "no_puzzle_emb", "mlp_t", "learned_ema", "frozen"])
def test_options_train(option_runs, overrides):
    run = option_runs(tuple(overrides))
    default = option_runs(())
    train_lines = [m for m in run["metrics"] if "train/lm_loss" in m]
    assert train_lines and all(math.isfinite(m["train/lm_loss"]) for m in train_lines)
    assert_evaluate_reproduces(run["result"], run["run_dir"])  # the saved step_N is what was evaluated
    inner, initial, weights, raw_final = run["model"].model.inner, run["initial"], run["weights"], run["state"]["model"]
    z_H = run["rank0"]["carry"]["inner_carry"]["z_H"]  # the ACT carry the run ended with
    ema_on = "ema=true" in overrides
    if not ema_on:
        assert weights.keys() == raw_final.keys() and all(torch.equal(weights[k], raw_final[k]) for k in weights)

    if not overrides:  # the control for the options below
        assert "train/q_continue_loss" not in train_lines[0] and z_H.shape == (16, 1 + 8, 32)
        assert hasattr(inner, "rotary_emb") and not hasattr(inner, "embed_pos")
        assert any("self_attn" in k for k in weights) and not any("mlp_t" in k for k in weights)
        assert all(_changed(weights[k], initial[k]) for k in weights if not k.endswith("_init"))
        assert run["state"]["ema"] is None
    if "arch.loss.loss_type=softmax_cross_entropy" in overrides:
        # Same seed, batch and initial weights as the default run: the first step's predictions (so token
        # accuracy and the Q-halt loss) agree, the token loss is the softmax one, not stablemax.
        first, default_first = train_lines[0], [m for m in default["metrics"] if "train/lm_loss" in m][0]
        assert first["train/accuracy"] == default_first["train/accuracy"]
        assert first["train/q_halt_loss"] == default_first["train/q_halt_loss"]
        assert abs(first["train/lm_loss"] - default_first["train/lm_loss"]) > 1e-3 * default_first["train/lm_loss"]
    if "arch.no_ACT_continue=false" in overrides:
        assert all("train/q_continue_loss" in m and m["train/q_continue_loss"] > 0 for m in train_lines)
    if "arch.puzzle_emb_ndim=0" in overrides:
        assert not hasattr(inner, "puzzle_emb") and inner.puzzle_emb_len == 0
        assert not any("puzzle_emb" in k for k in weights)
        assert z_H.shape == (16, 8, 32)  # no prefix: the carry is seq_len long
        assert len(run["state"]["optimizers"]) == 1  # no sign-SGD optimizer for a puzzle table
    if "arch.mlp_t=true" in overrides:
        assert not hasattr(inner, "rotary_emb") and not hasattr(inner, "embed_pos")
        assert weights["model.inner.L_level.layers.0.mlp_t.gate_up_proj.weight"].shape[1] == 1 + 8  # mixes positions
        assert not any("self_attn" in k for k in weights)
    if "arch.pos_encodings=learned" in overrides:
        assert not hasattr(inner, "rotary_emb")
        key = "model.inner.embed_pos.embedding_weight"
        assert inner.embed_pos.embedding_weight.shape == (1 + 8, 32)
        assert _changed(raw_final[key], initial[key]), "learned positions were not trained"
    if ema_on:
        # step_N holds the EMA shadow for every trained parameter (buffers such as the puzzle table as trained);
        # the training state keeps the raw weights and the shadow separately.
        shadow = run["state"]["ema"]
        assert shadow and set(shadow) == {k for k, p in run["model"].named_parameters()}
        assert weights.keys() == raw_final.keys()
        for key in weights:
            assert torch.equal(weights[key], shadow[key] if key in shadow else raw_final[key]), key
        assert all(_changed(shadow[k], raw_final[k]) for k in shadow), "step_N holds the raw weights, not the EMA"
        assert all(_changed(shadow[k], initial[k]) for k in shadow), "the EMA shadow never moved"
    if "freeze_weights=true" in overrides:
        # Only the puzzle embeddings train: every other weight keeps its initial value.
        for key in weights:
            if key != PUZZLE_EMB_KEY:
                assert torch.equal(weights[key], initial[key]), key
        assert len(run["state"]["optimizers"]) == 1
    if "arch.puzzle_emb_ndim=0" not in overrides:
        trained_rows = (weights[PUZZLE_EMB_KEY] != initial[PUZZLE_EMB_KEY]).any(dim=1)
        assert 0 < trained_rows.sum() <= 64, "puzzle embedding rows did not train"  # 64 training puzzles


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


@pytest.mark.integration
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


@pytest.mark.integration
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


@pytest.mark.integration
@pytest.mark.parametrize("args, message", [
    (["+arch.L_cylces=4"], "arch.L_cylces: unknown key"),
    (["arch.halt_max_steps=many"], "arch.halt_max_steps: Input should be a valid integer"),
    (["arch=hrm", "+arch.no_ACT_continue=false"], "arch.no_ACT_continue: not a key of this architecture"),
    (["+arch.seq_len=81"], "arch.seq_len: set by the trainer from the dataset"),
], ids=["misspelt", "mistyped", "other_member", "derived"])
def test_bad_arch_key_stops_before_any_data_is_generated(tmp_path, args, message):
    """The quick demo generates its dataset on first use: a bad arch key must stop first, and quickly."""
    start = time.monotonic()
    result = _run_pretrain(["--config-name", "quickstart", *args], cwd=str(tmp_path))
    elapsed = time.monotonic() - start
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not os.path.exists(tmp_path / "data"), "the dataset was generated before the config was checked"
    assert elapsed < 5, f"took {elapsed:.1f} s"


def test_freeze_weights_without_a_puzzle_embedding_is_rejected():
    from utils.errors import ConfigError
    raw = compose_config(["data_paths=[unused]", "freeze_weights=true", "arch.puzzle_emb_ndim=0"])
    with pytest.raises(ConfigError, match="freeze_weights=True trains only the puzzle embedding"):
        parse_config(raw)


@pytest.mark.integration
def test_missing_dataset_is_clear(tmp_path):
    result = _run_pretrain([f"data_paths=[{tmp_path / 'missing'}]", "evaluators=[]"])
    assert result.returncode != 0
    assert "does not exist" in result.stderr and "build" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.integration
def test_unavailable_evaluator_is_an_error(copy_task):
    result = _run_pretrain([f"data_paths=[{copy_task}]", "evaluators=[{name: nonexistent@Nope}]", "epochs=4",
                            "eval_interval=4",
                            *TINY_ARCH, "global_batch_size=16"])
    assert result.returncode != 0
    assert "evaluator 'nonexistent@Nope' is not available" in result.stderr


def test_published_interface_and_prefixed_weights():
    config = dict(batch_size=2, seq_len=4, vocab_size=5, num_puzzle_identifiers=3, puzzle_emb_ndim=16, H_cycles=1,
                  L_cycles=1, H_layers=0, L_layers=1, hidden_size=16, expansion=2, num_heads=2, pos_encodings="rope",
                  halt_max_steps=2, halt_exploration_prob=0.0, forward_dtype="float32", causal=False)
    head = ACTLossHead(TinyRecursiveReasoningModel_ACTV1(config), loss_type="stablemax_cross_entropy")
    batch = dict(inputs=torch.randint(0, 5, (2, 4), dtype=torch.int32),
                 labels=torch.randint(0, 5, (2, 4), dtype=torch.int32),
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
