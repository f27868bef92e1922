"""Helpers shared by the tests: composing configs as pretrain.py does, a CPU context, run outputs, tiny data."""
import json
import os

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from dataset.common import PuzzleDatasetMetadata
from training.state import build_model
from utils.config import PretrainConfig
from utils.distributed import DistContext
from utils.run_files import METRICS_FILE

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A tiny TRM for CPU runs (two ACT steps, float32).
TINY_ARCH = ["arch.hidden_size=32", "arch.num_heads=2", "arch.L_layers=1", "arch.H_cycles=1", "arch.L_cycles=1",
             "arch.halt_max_steps=2", "arch.forward_dtype=float32", "arch.puzzle_emb_len=1", "arch.expansion=2"]
# The same with three deterministic ACT steps (no exploration), for evaluation tests.
TINY_EVAL_ARCH = [*(o for o in TINY_ARCH if not o.startswith("arch.halt_max_steps")), "arch.halt_max_steps=3",
                  "arch.halt_exploration_prob=0"]


def compose_config(overrides: list[str], config_name: str = "cfg_pretrain") -> dict:
    """The raw config pretrain.py would get for these command-line overrides."""
    with initialize_config_dir(config_dir=os.path.join(REPO_ROOT, "config"), version_base="1.3"):
        return OmegaConf.to_container(compose(config_name=config_name, overrides=overrides), resolve=True)


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
