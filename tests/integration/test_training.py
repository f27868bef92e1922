"""End-to-end training on CPU: the copy task is learned, every option trains as it should, two processes under
torchrun match one, and non-finite gradients or weights never reach the weights or a checkpoint."""
import math
import os

import pytest
import torch

import training.loop
from rundir.layout import list_train_states
from tests.helpers import TINY_ARCH, assert_evaluate_reproduces, compose_config, cpu_context, read_metrics, run_pretrain
from training.config import parse_config
from utils.errors import ConfigError, NonFiniteLossError


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


def _final_weights(path: str) -> dict[str, torch.Tensor]:
    steps = sorted((f for f in os.listdir(path) if f.startswith("step_") and f[5:].isdigit()), key=lambda f: int(f[5:]))
    return torch.load(os.path.join(path, steps[-1]), weights_only=True)


@pytest.mark.slow
def test_torchrun_two_processes_match_one(copy_task, tmp_path):
    common = [f"data_paths=[{copy_task}]", "evaluators=[]", *TINY_ARCH, "arch.halt_exploration_prob=0",
              "global_batch_size=16", "epochs=4", "eval_interval=4", "lr=1e-3", "lr_warmup_steps=2", "device=cpu"]
    single = run_pretrain(common + [f"+checkpoint_path={tmp_path / 'one'}"])
    assert single.returncode == 0, single.stderr[-3000:]
    double = run_pretrain(common + [f"+checkpoint_path={tmp_path / 'two'}"], nproc=2)
    assert double.returncode == 0, double.stderr[-3000:]
    one, two = _final_weights(str(tmp_path / "one")), _final_weights(str(tmp_path / "two"))
    assert one.keys() == two.keys() and "model.inner.puzzle_emb.weights" in one
    for key in one:
        diff = (one[key].double() - two[key].double()).abs().max().item()
        assert diff <= 1e-5, f"{key}: 1-process and 2-process runs differ by {diff}"
    assert (one["model.inner.puzzle_emb.weights"].abs().sum() > 0), "puzzle embeddings were never trained"


# ---------------------------------------------------------------------------------------------
# Non-finite gradients and weights never reach the weights or a checkpoint
# ---------------------------------------------------------------------------------------------
def run_with(copy_task, tmp_path, corrupt, *overrides):
    """Train a tiny TRM, calling corrupt(state) after every optimizer step (on the built TrainState)."""
    raw = compose_config([f"data_paths=[{copy_task}]", "evaluators=[]", *TINY_ARCH, "global_batch_size=16",
                          "epochs=4", "eval_interval=4", "lr=1e-3", "wandb_mode=disabled", "num_workers=0",
                          "checkpoint_interval=2", f"+checkpoint_path={tmp_path}", *overrides])
    real_train_batch = training.loop.train_batch

    def train_batch_then_corrupt(config, state, *args):
        metrics = real_train_batch(config, state, *args)
        corrupt(state)
        return metrics

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training.loop, "train_batch", train_batch_then_corrupt)
        return training.loop.train(parse_config(raw), cpu_context())


def test_non_finite_gradient_stops_before_the_update(copy_task, tmp_path):
    """A gradient turning NaN (the loss still finite) stops the step, names the parameter and the last good state."""
    calls = []

    def poison_gradients_from_step_3(state):
        if state.step == 2 and not calls:
            weight = state.raw_model.model.inner.lm_head.weight
            calls.append(weight.register_hook(lambda grad: torch.full_like(grad, math.nan)))

    with pytest.raises(NonFiniteLossError, match=r"(?s)Non-finite gradient at step 3.*lm_head\.weight.*"
                                                 r"train_state_step_2"):
        run_with(copy_task, tmp_path, poison_gradients_from_step_3)
    assert [s for s, _ in list_train_states(str(tmp_path))] == [2]
    state = torch.load(tmp_path / "train_state_step_2" / "state.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_non_finite_weights_are_never_saved(copy_task, tmp_path):
    """A weight that became inf (e.g. an overflow in an update) is caught before any checkpoint holds it."""
    def overflow_a_weight_at_step_4(state):  # after the update of step 4, before its checkpoint
        if state.step == 4:
            with torch.no_grad():
                state.raw_model.model.inner.q_head.bias[0] = math.inf

    with pytest.raises(NonFiniteLossError, match=r"(?s)Non-finite weights at step 4.*q_head\.bias.*train_state_step_2"):
        run_with(copy_task, tmp_path, overflow_a_weight_at_step_4)
    assert [s for s, _ in list_train_states(str(tmp_path))] == [2]
    assert not (tmp_path / "step_4").exists()


def test_issue23_c_a_batch_larger_than_the_training_data_is_refused_at_start(copy_task, tmp_path):
    """Issue 23 C: global_batch_size=100000 on 64 training examples ran 0 steps, then padded an evaluation batch to
    100000 rows; it is refused before the run directory is written, naming both sizes."""
    raw = compose_config([f"data_paths=[{copy_task}]", *OPTION_RUN_ARGS, f"+checkpoint_path={tmp_path / 'run'}",
                          "global_batch_size=100000"])
    with pytest.raises(ConfigError) as error:
        training.loop.train(parse_config(raw), cpu_context())
    message = str(error.value)
    assert "global_batch_size=100000" in message and "64 training examples" in message, message
    assert not os.path.exists(tmp_path / "run" / "all_config.yaml")


def write_uneven_groups(directory, puzzle_sizes: list[int], group_sizes: list[int]) -> str:
    """A copy-task split whose groups hold different numbers of puzzles of different sizes."""
    import numpy as np

    from dataset.common import write_set
    rows = np.arange(sum(puzzle_sizes) * 4).reshape(-1, 4) % 5 + 1
    for split in ("train", "test"):
        write_set(str(directory), split, rows, rows, puzzle_sizes=puzzle_sizes, group_sizes=group_sizes,
                  puzzle_identifiers=list(range(1, len(puzzle_sizes) + 1)), vocab_size=6,
                  num_puzzle_identifiers=len(puzzle_sizes) + 1)
    return str(directory)


@pytest.mark.parametrize("puzzle_sizes, group_sizes, batch, expected", [
    # Mean 4.6 examples per puzzle: the published estimate gives 2 x 4.6 = 9.2 a batch of 8 per epoch, but an epoch
    # draws one puzzle per group, 1 + 5 = 6: no batch fills.
    ([1] + [5] * 9, [1, 9], 8, ["6 training examples per epoch", "epochs=2"]),
    # Mean 1.4: an epoch draws 5 + 1 = 6, a batch, but the lr schedule's length (the estimate, 2 x 1.4 / 6) is 0
    # steps, and the published loop trains no batch past it.
    ([5] + [1] * 9, [1, 9], 6, ["is 0 steps", "epochs=3"]),
], ids=["no-batch-fills", "zero-step-schedule"])
def test_issue26_settings_that_train_no_step_are_refused_at_start(tmp_path, puzzle_sizes, group_sizes, batch,
                                                                  expected):
    """Issue 26 finding 6: settings that train not one step (kaggle.adapt --epochs 2) reported the run finished.
    They are refused before the run directory is written, naming the epochs that train; those train."""
    data = write_uneven_groups(tmp_path / "data", puzzle_sizes, group_sizes)
    args = [f"data_paths=[{data}]", *OPTION_RUN_ARGS, f"global_batch_size={batch}", "eval_interval=null"]
    with pytest.raises(ConfigError) as error:
        training.loop.train(parse_config(compose_config([*args, "epochs=1", f"+checkpoint_path={tmp_path / 'a'}"])),
                            cpu_context())
    message = str(error.value)
    assert f"global_batch_size={batch}" in message and all(e in message for e in expected), message
    assert not os.path.exists(tmp_path / "a" / "all_config.yaml")
    epochs = expected[-1]
    training.loop.train(parse_config(compose_config([*args, epochs, f"+checkpoint_path={tmp_path / 'b'}"])),
                        cpu_context())
    assert any("train/lm_loss" in record for record in read_metrics(str(tmp_path / "b")))  # a step trained


def test_issue23_a5_a_dataset_rebuilt_under_a_running_job_is_saved_and_named(tmp_path):
    """Issue 23 A5: a dataset rebuilt in place under a run was caught only at the first evaluation, and the steps
    since the last checkpoint were lost. The run stops within about a second, saves its state and names the file;
    resuming against the rebuilt (different) dataset is refused."""
    from dataset.build_copy_dataset import write_copy_task
    from tests.integration.test_run_lock import kill_everything, start_pretrain, train_steps, wait_until
    long = ["epochs=40000", "eval_interval=40000"]  # minutes of steps: the run never ends on its own here
    data = write_copy_task(str(tmp_path / "data"), num_train_puzzles=64, num_test_puzzles=16, seq_len=8,
                           vocab_size=6, num_puzzle_identifiers=65)
    run_dir = tmp_path / "run"
    job = start_pretrain(data, run_dir, *long)
    try:
        wait_until(lambda: len(train_steps(run_dir)) >= 3, job, timeout=90)
        write_copy_task(data, num_train_puzzles=48, num_test_puzzles=16, seq_len=8, vocab_size=6,
                        num_puzzle_identifiers=65)
        _, stderr = job.communicate(timeout=60)
    finally:
        kill_everything(job)
    assert job.returncode == 1, stderr[-3000:]
    ours = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(ours) == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert data in ours[0] and "changed" in ours[0] and "saved" in ours[0], ours[0]
    saved = [step for step, _ in list_train_states(str(run_dir))]
    assert saved and saved[-1] >= 3 and saved[-1] >= max(train_steps(run_dir)), (saved, train_steps(run_dir))
    resumed = run_pretrain([f"data_paths=[{data}]", *OPTION_RUN_ARGS, "device=cpu", f"+checkpoint_path={run_dir}",
                            "resume=auto", *long])
    assert resumed.returncode == 1 and "The dataset differs" in resumed.stderr, resumed.stderr[-3000:]
