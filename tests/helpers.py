"""Helpers shared by the tests: composing configs as pretrain.py does, a CPU context, run outputs, tiny data."""
import importlib
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from dataset.common import PuzzleDatasetMetadata
from models.losses import ACTLossHead
from models.registry import load_model_class
from models.weights import build_model, load_weights
from pretrain import compose_config  # noqa: F401  (re-exported: the tests compose as pretrain.py does)
from rundir.layout import METRICS_FILE
from training.config import PretrainConfig
from training.loop import gradients as fixture_gradients  # the fixtures name gradients as training does
from utils.cli import REPO_ROOT  # noqa: F401  (re-exported: where the tests find the entry points)
from utils.distributed import DistContext

# A tiny TRM for CPU runs (two ACT steps, float32).
TINY_ARCH = ["arch.hidden_size=32", "arch.num_heads=2", "arch.L_layers=1", "arch.H_cycles=1", "arch.L_cycles=1",
             "arch.halt_max_steps=2", "arch.forward_dtype=float32", "arch.puzzle_emb_len=1", "arch.expansion=2"]
# The same with three deterministic ACT steps (no exploration), for evaluation tests.
TINY_EVAL_ARCH = [*(o for o in TINY_ARCH if not o.startswith("arch.halt_max_steps")), "arch.halt_max_steps=3",
                  "arch.halt_exploration_prob=0"]


def cpu_context() -> DistContext:
    return DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), cpu_group=None)


def build_head(config: PretrainConfig, metadata: PuzzleDatasetMetadata) -> torch.nn.Module:
    """The loss head a one-process CPU run of `config` builds."""
    return build_model(config.arch, metadata, config.global_batch_size, torch.device("cpu"))


def read_metrics(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, METRICS_FILE)) as f:
        return [json.loads(line) for line in f]


def write_tiny_arc_source(directory: str) -> str:
    """Kaggle-layout files for 2 training and 3 evaluation tasks (one with 2 test inputs); rule: rotate."""
    rng = np.random.default_rng(0)

    def pair():
        grid = rng.integers(0, 10, rng.integers(2, 6, 2))
        return {"input": grid.tolist(), "output": np.rot90(grid).tolist()}

    subsets = {"training": {"0a1b2c3d": (2, 1), "1b2c3d4e": (2, 1)},
               "evaluation": {"2c3d4e5f": (2, 1), "3d4e5f60": (2, 2), "4e5f6071": (2, 1)}}
    os.makedirs(directory, exist_ok=True)
    for subset, tasks in subsets.items():
        full = {tid: {"train": [pair() for _ in range(n)], "test": [pair() for _ in range(m)]}
                for tid, (n, m) in tasks.items()}
        challenges = {tid: {"test": [{"input": p["input"]} for p in t["test"]], "train": t["train"]}
                      for tid, t in full.items()}
        solutions = {tid: [p["output"] for p in t["test"]] for tid, t in full.items()}
        for kind, content in (("challenges", challenges), ("solutions", solutions)):
            with open(os.path.join(directory, f"arc-agi_{subset}_{kind}.json"), "w") as f:
                json.dump(content, f)
    return os.path.join(directory, "arc-agi")


def evaluate_saved(run_dir: str, output_dir: str) -> dict:
    """What evaluate.py reports (flat metrics) for the newest step_N of a run directory."""
    import evaluate as evaluate_cli
    return evaluate_cli.run(evaluate_cli.EvaluateConfig(checkpoint=run_dir, device="cpu", num_workers=0,
                                                        output_dir=output_dir), cpu_context())


def assert_evaluate_reproduces(result: dict, run_dir: str) -> None:
    """The metrics train() returned are those of the saved weights, recounted by evaluate.py."""
    from training.evaluation import flatten_metrics
    assert evaluate_saved(run_dir, os.path.join(run_dir, "recount")) == flatten_metrics(result)


def train_metadata(config: PretrainConfig) -> PuzzleDatasetMetadata:
    from dataset.puzzle_dataset import merge_metadata
    return merge_metadata(config.data_paths, "train")


def evaluate_head(config: PretrainConfig, head: torch.nn.Module, save_dir: str | None = None, step: int = 0,
                  halt_early: bool = False):
    """(results, evaluators) of the evaluation a one-process CPU run of `config` does, for `head`."""
    from training.data import create_dataloader, split_paths
    from training.evaluation import create_evaluators, evaluate
    paths = split_paths(config, "test")
    loader, metadata = create_dataloader(paths, "test", cpu_context(), seed=config.seed,
                                         global_batch_size=config.global_batch_size)
    evaluators = create_evaluators(config.evaluators, paths, metadata)
    results = evaluate(head, loader, metadata, evaluators, cpu_context(), step, save_dir,
                       save_outputs=config.eval_save_outputs, halt_early=halt_early)
    return results, evaluators


def assert_kaggle_submission(submission: dict, test_puzzles: dict, attempts: int = 2) -> None:
    """Kaggle ARC format: every task, one dict per test input, attempt_1..K non-empty rectangular 0..9 grids."""
    assert set(submission) == set(test_puzzles)
    for task, entries in submission.items():
        assert isinstance(entries, list) and len(entries) == len(test_puzzles[task]["test"])
        for entry in entries:
            assert list(entry) == [f"attempt_{k + 1}" for k in range(attempts)]
            for grid in entry.values():
                assert isinstance(grid, list) and grid and all(isinstance(row, list) and row for row in grid)
                assert len({len(row) for row in grid}) == 1
                assert all(type(x) is int and 0 <= x <= 9 for row in grid for x in row)



def sweep_jobs(args: list[str]) -> list[list[str]]:
    """The overrides of each job of `python pretrain.py -m ARGS`, as Hydra's sweeper expands them, with the hydra
    overrides and what pretrain.py adds to a sweep's command line (training/sweeps.py)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    from training.sweeps import parsed_overrides, sweep_arguments
    parsed = parsed_overrides(args)
    hydra = [o.input_line for o in parsed if o.is_hydra_override()] + sweep_arguments(args)
    (jobs,) = BasicSweeper.split_arguments([o for o in parsed if not o.is_hydra_override()], None)
    return [[*job, *hydra] for job in jobs]


def compose_hydra(overrides: list[str], config_name: str = "cfg_pretrain"):
    """The Hydra configuration (`hydra.*`) of a job run with these overrides."""
    from hydra import compose, initialize_config_dir

    from pretrain import CONFIG_DIR
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides, return_hydra_config=True).hydra


def run_pretrain(args: list[str], nproc: int = 1, env: dict | None = None, wait: bool = True, cwd: str = REPO_ROOT):
    """`python pretrain.py ARGS` from `cwd` (under torchrun for nproc > 1): its CompletedProcess, or with
    wait=False the running Popen, in its own session, so that a signal reaches the DataLoader worker too, as a
    scheduler's would."""
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1", PYTHONPATH=REPO_ROOT, **(env or {}))
    cmd = [sys.executable, os.path.join(REPO_ROOT, "pretrain.py")]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), cmd[1]]
    if not wait:
        return subprocess.Popen(cmd + args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
    return subprocess.run(cmd + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)

# ---------------------------------------------------------------------------------------------
# The parity harness: replaying fixtures computed by the published code (tests/unit/test_parity.py)
# ---------------------------------------------------------------------------------------------
ATOL = 1e-4  # logits, Q logits, losses (the fixtures' README)
# The recursion amplifies float32 round-off (about 5x per ACT step for mlp_t, whose norm runs over
# positions), so at the later eval steps two correct float32 runs on different CPUs or BLAS builds
# drift apart by more than ATOL: on trm_mlpt_none the fixture itself is 1.7e-3 away from the float64
# answer at eval step 3, and so are we. Only there, for eval-step tensors, the bound becomes
# ROUNDOFF_FACTOR times our own float32-vs-float64 deviation at that step (which is below ATOL
# everywhere else, so ATOL holds unchanged); preds, halted, steps, train steps and gradients are
# always checked at the README tolerances.
ROUNDOFF_FACTOR = 4.0
GRAD_RTOL = 1e-3  # ||g - g_ref|| / ||g_ref||


def _fixture_id(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _implements(arch_name: str) -> bool:
    """Whether this project has the published class path `module@Class` (a module file defining the class).

    Only a class path we do not have may skip; a module of ours that fails to import, a config
    it rejects or weights that do not load are failures.
    """
    module_path, _, class_name = arch_name.partition("@")
    try:
        spec = importlib.util.find_spec(f"models.{module_path}")
    except ModuleNotFoundError:  # a parent package we do not have
        return False
    return spec is not None and hasattr(importlib.import_module(f"models.{module_path}"), class_name)


def _build(fixture: dict) -> ACTLossHead:
    if not _implements(fixture["arch_name"]):
        pytest.skip(f"architecture {fixture['arch_name']!r} is not implemented here")
    model_cls = load_model_class(fixture["arch_name"])
    head = ACTLossHead(model_cls(dict(fixture["config"])), loss_type=fixture["loss_type"])
    load_weights(head, fixture["state_dict"])
    return head


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item() if b.numel() else 0.0


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str, atol: float = ATOL) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    err = _max_abs(actual, expected)
    assert err <= atol, f"{what}: max abs error {err:.3g} > {atol:.3g}"


def _float64_eval_outputs(fixture: dict) -> list[dict[str, torch.Tensor]]:
    """The eval steps computed in float64: the round-off-free answer, to measure our float32 drift."""
    config = dict(fixture["config"], forward_dtype="float64")
    head = ACTLossHead(load_model_class(fixture["arch_name"])(config), loss_type=fixture["loss_type"])
    load_weights(head, fixture["state_dict"])
    head.eval()
    batch = fixture["batch"]
    carry = head.initial_carry(batch)
    steps = []
    with torch.no_grad():
        for _ in fixture["eval_steps"]:
            carry, loss, _, outputs, _ = head(carry=carry, batch=batch,
                                              return_keys=["logits", "q_halt_logits", "q_continue_logits"])
            steps.append(dict(outputs, loss=loss))
    return steps


def _assert_equal(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    assert torch.equal(actual.cpu().to(expected.dtype), expected), f"{what}: {actual} != {expected}"


def _compare_step(step: dict, loss, metrics, outputs, carry, where: str,
                  tolerances: dict[str, float] | None = None) -> None:
    tolerances = tolerances or {}
    _assert_close(loss.detach(), step["loss"], f"{where} loss", tolerances.get("loss", ATOL))
    assert set(metrics) == set(step["metrics"]), f"{where} metric names {sorted(metrics)} != {sorted(step['metrics'])}"
    for name, expected in step["metrics"].items():
        _assert_close(metrics[name], expected, f"{where} metric {name}")
    for name, expected in step["outputs"].items():
        if name == "preds":
            _assert_equal(outputs[name], expected, f"{where} preds")
        else:
            _assert_close(outputs[name], expected, f"{where} {name}", tolerances.get(name, ATOL))
    _assert_equal(carry.halted, step["halted"], f"{where} halted")
    _assert_equal(carry.steps, step["steps"], f"{where} steps")


def replay_fixture(path: str) -> None:
    """Replay a fixture (tests/fixtures/README.md) and compare every tensor at the tolerances above."""
    fixture = torch.load(path, weights_only=False)
    head = _build(fixture)
    batch = fixture["batch"]
    all_keys = ["logits", "q_halt_logits", "q_continue_logits", "preds"]

    head.eval()
    carry = head.initial_carry(batch)
    exact = _float64_eval_outputs(fixture)
    with torch.no_grad():
        for i, step in enumerate(fixture["eval_steps"]):
            carry, loss, metrics, outputs, _ = head(carry=carry, batch=batch, return_keys=all_keys)
            ours = dict(outputs, loss=loss)
            tolerances = {k: max(ATOL, ROUNDOFF_FACTOR * _max_abs(ours[k], v)) for k, v in exact[i].items()}
            _compare_step(step, loss, metrics, outputs, carry, f"eval step {i}", tolerances)

    head.train()
    carry = head.initial_carry(batch)
    for i, step in enumerate(fixture["train_steps"]):
        head.zero_grad(set_to_none=True)
        if hasattr(head.model.inner, "puzzle_emb"):
            head.model.inner.puzzle_emb.local_weights.grad = None
        carry, loss, metrics, outputs, _ = head(carry=carry, batch=batch, return_keys=all_keys)
        loss.backward()
        _compare_step(step, loss, metrics, outputs, carry, f"train step {i}")
        grads = fixture_gradients(head)
        assert set(grads) == set(step["grads"]), (f"train step {i}: gradient names differ: "
                                                  f"{set(grads) ^ set(step['grads'])}")
        for name, expected in step["grads"].items():
            rel = ((grads[name] - expected).norm() / expected.norm().clamp_min(1e-12)).item()
            assert rel <= GRAD_RTOL, f"train step {i}: gradient {name} relative error {rel:.3g} > {GRAD_RTOL}"


def offline_hub_folder(monkeypatch, cache, repo: str, commit: str, folder: str):
    """A huggingface_hub cache at `cache` (used offline) holding `repo` at `commit` on branch main; returns the
    snapshot's `folder` (created) for the caller to fill. huggingface_hub reads HF_HUB_CACHE and HF_HUB_OFFLINE
    into its `constants` at import time, so those attributes are patched (and the environment, for later
    readers). Offline, hf_hub_download returns plain files under snapshots/ (a real cache links them to blobs/)."""
    from huggingface_hub import constants
    for name, value in [("HF_HUB_CACHE", str(cache)), ("HF_HUB_OFFLINE", True)]:
        monkeypatch.setattr(constants, name, value)
        monkeypatch.setenv(name, "1" if value is True else value)
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    snapshot = repo_dir / "snapshots" / commit / folder
    snapshot.mkdir(parents=True)
    return snapshot
