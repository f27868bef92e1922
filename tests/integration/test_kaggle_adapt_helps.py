"""Test-time adaptation measurably helps: `kaggle.adapt` on held-out tasks of a synthetic ARC family.

The family ("fill"): a task is two colours (a, b), a != b; its output is its input with every background cell
(colour 0) painted a and every other cell painted b. Inputs are random 3x3 grids. Nothing in a test input tells
which (a, b) its task has: only what the model learned about the task, its puzzle-embedding rows, can. Pretraining
on some tasks teaches the network to decode such rows into a fill; a held-out task's rows start at the mean of the
pretrained rows (`puzzle_emb_reset`), so the unadapted model answers with some blend, while adaptation on the
task's train pairs can learn its colours. Under the ARC builder's augmentation (dihedral transform and a colour
permutation fixing 0, applied to whole puzzles) a fill stays a fill, (a, b) -> (m(a), m(b)), with its own row.

Why this family: an ARC example is a 30x30 canvas (900 tokens) whatever the grid size, so a CPU affords a few
hundred steps of a tiny model and the rule must be learned in that. A per-cell rule needs no spatial reasoning, is
unaffected by the builder's translations and dihedral transforms, and its colours depend on the task alone. In a
trial with the same model and steps, per-task permutations of three colours reached adapted pass@2 0.5 where the
fill reached 1.0; dihedral tasks need spatial reasoning far beyond this budget.

Unadapted vs adapted: both are `kaggle.adapt` runs from the same checkpoint on the same task file with the same
--num-aug and --seed, so the same dataset (checked), test inputs and voting; the unadapted one trains with
lr=0 puzzle_emb_lr=0 (checked: its weights are the pretrained ones, every puzzle row the mean row).

Measured (8 pretraining and 8 held-out tasks, 160 + 160 steps): held-out pass@2 unadapted 0.000, adapted 1.000;
with four other task/training seeds 0.000-0.125 unadapted, 1.000 adapted every time. About 65 s on two idle cores,
up to 140 s while other jobs shared them.
"""
import filecmp
import json
import os
import time

import numpy as np
import pytest
import torch

from dataset.build_arc_dataset import ArcBuildConfig, build_arc_dataset
from kaggle import adapt
from models.weights import PUZZLE_EMB_KEY, strip_compiled_prefix
from rundir.layout import weight_steps, weights_path
from rundir.states import safe_load
from tests.helpers import compose_config, cpu_context
from training.config import parse_config
from training.loop import train

pytestmark = pytest.mark.slow  # two tiny trainings: 1-2 minutes on 2 cores

# A tiny TRM, one ACT step (the ARC canvas is 900 tokens: the cost per example is fixed, the model must be small).
ARCH = ["arch.hidden_size=32", "arch.num_heads=2", "arch.expansion=2", "arch.L_layers=1", "arch.H_cycles=1",
        "arch.L_cycles=1", "arch.halt_max_steps=1", "arch.halt_exploration_prob=0", "arch.puzzle_emb_len=1",
        "arch.forward_dtype=float32"]
# Small batches learn fastest per example here; no weight decay (few steps); the puzzle rows' sign-SGD is large.
RUN = ["global_batch_size=4", "num_workers=0", "device=cpu", "wandb_mode=disabled", "seed=0", "lr_warmup_steps=1",
       "weight_decay=0", "puzzle_emb_weight_decay=0"]
LEARNING = ["lr=2e-3", "puzzle_emb_lr=0.2"]
NUM_PRETRAIN_TASKS = 8
NUM_HELD_OUT_TASKS = 8
NUM_TRAIN_PAIRS = 3
GRID = 3
PRETRAIN_EPOCHS = 40
ADAPT_EPOCHS = 40
NUM_AUG = 1  # held-out copies per task (original + 1): pass@2 counts a task when either copy's answer is right
MARGIN = 0.5  # adapted pass@2 must exceed unadapted by this much (measured: see the test's assertion message)


@pytest.fixture
def one_thread():
    """One intra-op thread: on a shared 2-core CPU, two threads of such small ops wait on each other (3-5x slower
    when other jobs run); also one summation order, whatever the machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fill_pair(rng: np.random.Generator, background: int, foreground: int) -> dict:
    while True:  # both kinds of cell present, so that the pair shows both colours of the task
        grid = rng.integers(1, 10, (GRID, GRID)) * (rng.random((GRID, GRID)) >= 0.4)
        if (grid == 0).any() and (grid != 0).any():
            return {"input": grid.tolist(), "output": np.where(grid == 0, background, foreground).tolist()}


def fill_tasks(rng: np.random.Generator, colours: list[tuple[int, int]], prefix: str) -> tuple[dict, dict]:
    """Kaggle layout: challenges (task id -> {train, test inputs}) and solutions (task id -> test outputs)."""
    challenges, solutions = {}, {}
    for i, (a, b) in enumerate(colours):
        train_pairs = [fill_pair(rng, a, b) for _ in range(NUM_TRAIN_PAIRS)]
        test = fill_pair(rng, a, b)
        challenges[f"{prefix}{i:02d}"] = {"train": train_pairs, "test": [{"input": test["input"]}]}
        solutions[f"{prefix}{i:02d}"] = [test["output"]]
    return challenges, solutions


def write_json(path, value) -> str:
    with open(path, "w") as f:
        json.dump(value, f)
    return str(path)


def pretrain(root, challenges: dict, solutions: dict) -> tuple[str, dict]:
    """A tiny ARC model trained on `challenges` (their train pairs; their test inputs evaluated): (run dir, metrics)."""
    write_json(root / "arc-agi_pre_challenges.json", challenges)
    write_json(root / "arc-agi_pre_solutions.json", solutions)
    data = str(root / "data")
    build_arc_dataset(ArcBuildConfig(input_file_prefix=str(root / "arc-agi"), output_dir=data, subsets=["pre"],
                                     test_set_name="pre", num_aug=0), progress=False)
    run_dir = str(root / "run")
    metrics = train(parse_config(compose_config([f"data_paths=[{data}]", *ARCH, *RUN, *LEARNING,
                                                 f"epochs={PRETRAIN_EPOCHS}", f"eval_interval={PRETRAIN_EPOCHS}",
                                                 f"+checkpoint_path={run_dir}"])), cpu_context())
    return run_dir, metrics


def run_adapt(tasks: str, solutions: str, checkpoint: str, out, epochs: int, *keys: str) -> dict:
    adapt.main(["--tasks", tasks, "--solutions", solutions, "--checkpoint", checkpoint, "--output-dir", str(out),
                "--num-aug", str(NUM_AUG), "--epochs", str(epochs), *RUN, *keys])
    with open(out / "metrics.json") as f:
        return json.load(f)


def newest_weights(run_dir: str) -> dict[str, torch.Tensor]:
    return strip_compiled_prefix(safe_load(weights_path(run_dir, weight_steps(run_dir)[-1])))


def same_files(left: str, right: str) -> bool:
    comparison = filecmp.dircmp(left, right)
    if comparison.left_only or comparison.right_only or comparison.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(left, right, comparison.common_files, shallow=False)
    return not mismatch and not errors and all(same_files(os.path.join(left, d), os.path.join(right, d))
                                               for d in comparison.common_dirs)


def test_adaptation_beats_the_unadapted_model_on_held_out_tasks(tmp_path, one_thread):
    start = time.monotonic()
    rng = np.random.default_rng(0)
    pairs = [(a, b) for a in range(10) for b in range(10) if a != b]
    order = rng.permutation(len(pairs))
    colours = [pairs[i] for i in order[:NUM_PRETRAIN_TASKS + NUM_HELD_OUT_TASKS]]
    seen = fill_tasks(rng, colours[:NUM_PRETRAIN_TASKS], "seen")
    held_out = fill_tasks(rng, colours[NUM_PRETRAIN_TASKS:], "new")  # colours no pretraining task has

    (tmp_path / "pretrain").mkdir()
    checkpoint, pretrained = pretrain(tmp_path / "pretrain", *seen)
    tasks = write_json(tmp_path / "tasks.json", held_out[0])
    solutions = write_json(tmp_path / "solutions.json", held_out[1])

    # (a) Unadapted: the same pipeline, data and voting, with nothing learned.
    unadapted = run_adapt(tasks, solutions, checkpoint, tmp_path / "unadapted", 1, "lr=0", "puzzle_emb_lr=0")
    before, after = newest_weights(checkpoint), newest_weights(str(tmp_path / "unadapted" / "run"))
    assert after.keys() == before.keys()
    for key, value in after.items():
        expected = before[key].mean(dim=0, keepdim=True).expand_as(value) if key == PUZZLE_EMB_KEY else before[key]
        assert torch.equal(value, expected), f"the unadapted run changed {key}"
    # (b) Adapted: fine-tuned on the held-out tasks' train pairs.
    adapted = run_adapt(tasks, solutions, checkpoint, tmp_path / "adapted", ADAPT_EPOCHS)
    assert same_files(str(tmp_path / "unadapted" / "data"), str(tmp_path / "adapted" / "data"))

    figures = (f"held-out pass@2: unadapted {unadapted['ARC/pass@2']:.3f}, adapted {adapted['ARC/pass@2']:.3f} "
               f"(pass@1 {unadapted['ARC/pass@1']:.3f} -> {adapted['ARC/pass@1']:.3f}; {NUM_HELD_OUT_TASKS} tasks; "
               f"the pretraining tasks' own test inputs: pass@2 {pretrained['ARC/pass@2']:.3f}; "
               f"{time.monotonic() - start:.0f}s)")
    print(figures)
    assert adapted["ARC/pass@2"] >= unadapted["ARC/pass@2"] + MARGIN, figures
