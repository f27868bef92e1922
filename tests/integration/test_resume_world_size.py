"""Resuming on another number of processes: the same global batches, the ACT carry re-sliced, curves continue."""
import json
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch

from dataset.puzzle_dataset import PuzzleDataset, PuzzleDatasetConfig
from rundir.states import load_rank_state, save_file_synced
from tests.helpers import REPO_ROOT, TINY_ARCH, read_metrics
from utils.errors import CheckpointError

# 64 puzzles (one example each, puzzle identifiers 1..64) / batch 16: 4 steps per epoch, 16 steps in all.
# No halting exploration: its draws come from per-process streams, so it alone would make the curves differ.
RUN = [*TINY_ARCH, "arch.halt_exploration_prob=0", "global_batch_size=16", "epochs=4", "eval_interval=2",
       "lr=1e-3", "lr_warmup_steps=3", "evaluators=[]", "wandb_mode=disabled", "device=cpu"]
STEPS_PER_EPOCH, TOTAL_STEPS, NUM_PUZZLES = 4, 16, 64

# Runs pretrain.py with train_batch wrapped to append, per rank, the puzzle identifiers of each batch it trains on.
RECORDER = """
import os, runpy, sys
import training.loop as loop
out, rank = os.environ["TRAINED_ON_DIR"], os.environ.get("RANK", "0")
train_batch = loop.train_batch

def recording(config, state, batch, global_batch_size, ctx):
    with open(os.path.join(out, f"rank{rank}.jsonl"), "a") as f:
        f.write(__import__("json").dumps({"step": state.step + 1, "ids": batch["puzzle_identifiers"].tolist()}) + "\\n")
    return train_batch(config, state, batch, global_batch_size, ctx)

loop.train_batch = recording
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def global_dataset(data: str, rank: int = 0, num_replicas: int = 1) -> PuzzleDataset:
    return PuzzleDataset(PuzzleDatasetConfig(seed=0, dataset_paths=[data], rank=rank, num_replicas=num_replicas,
                                             test_set_mode=False, global_batch_size=16, epochs_per_iter=2),
                         split="train")


def ids_of(batches) -> list[list[int]]:
    return [batch["puzzle_identifiers"].tolist() for _, batch, _ in batches]


def test_global_batches_do_not_depend_on_the_number_of_processes(copy_task):
    """The loader position counts global batches: 2 ranks for 3 batches, then 1 rank, is the 1-rank sequence."""
    straight = ids_of(global_dataset(copy_task))
    first = [ids_of(global_dataset(copy_task, rank, 2))[:3] for rank in range(2)]
    rest = global_dataset(copy_task)
    rest.load_state_dict({"iters": 0, "skip_batches": 3})
    resumed = [first[0][k] + first[1][k] for k in range(3)] + ids_of(rest)
    assert resumed == straight and len(straight) == 2 * STEPS_PER_EPOCH


def write_rank_files(state_dir, world_size: int, local: int) -> torch.Tensor:
    """Carries whose rows are their global slot numbers: rank r holds slots r*local .. (r+1)*local-1."""
    os.makedirs(state_dir, exist_ok=True)
    slots = torch.arange(world_size * local)
    for rank in range(world_size):
        part = slots[rank * local:(rank + 1) * local]
        carry = {"inner_carry": {"z_H": part.float().view(-1, 1, 1).expand(-1, 3, 2).clone()},
                 "steps": part.int(), "halted": part % 3 == 0,
                 "current_data": {"inputs": part.view(-1, 1).repeat(1, 4)}}
        save_file_synced({"rng": {"rank": rank}, "carry": carry}, os.path.join(state_dir, f"rank{rank}.pt"))
    return slots


@pytest.mark.parametrize("saved, now", [(2, 1), (1, 2), (2, 4), (4, 2), (3, 2), (2, 3)])
def test_carry_is_re_sliced_to_the_new_ranks(tmp_path, saved, now):
    slots = write_rank_files(tmp_path, saved, local=12 // saved)
    pieces = [load_rank_state(str(tmp_path), rank, now, saved) for rank in range(now)]
    for rank, piece in enumerate(pieces):
        own = slots[rank * (12 // now):(rank + 1) * (12 // now)]
        assert torch.equal(piece["carry"]["steps"], own.int())
        assert torch.equal(piece["carry"]["halted"], own % 3 == 0)
        assert torch.equal(piece["carry"]["inner_carry"]["z_H"][:, 0, 0], own.float())
        assert torch.equal(piece["carry"]["current_data"]["inputs"][:, 0], own)
        # RNG streams are per process: a rank that was saved keeps its own, a new rank gets none (seeded anew).
        assert piece["rng"] == ({"rank": rank} if rank < saved else None)


def test_a_global_batch_the_new_ranks_cannot_share_is_refused(tmp_path):
    write_rank_files(tmp_path, 2, local=3)
    with pytest.raises(CheckpointError, match="global batch of 6, which 4 processes cannot share"):
        load_rank_state(str(tmp_path), 0, 4, 2)


def test_a_missing_rank_file_is_named(tmp_path):
    write_rank_files(tmp_path, 2, local=3)
    os.remove(tmp_path / "rank1.pt")
    with pytest.raises(CheckpointError, match="incomplete: rank1.pt is missing"):
        load_rank_state(str(tmp_path), 0, 1, 2)


# ---------------------------------------------------------------------------------------------
# Whole runs: 2 -> 1 and 1 -> 2 processes (gloo)
# ---------------------------------------------------------------------------------------------
def run_recorded(tmp_path, run_dir, nproc: int, *extra: str) -> subprocess.CompletedProcess:
    recorder = tmp_path / "recorder.py"
    recorder.write_text(RECORDER)
    trained_on = tmp_path / f"trained_on_{os.path.basename(run_dir)}"
    trained_on.mkdir(exist_ok=True)
    env = dict(os.environ, TRAINED_ON_DIR=str(trained_on), OMP_NUM_THREADS="1", PYTHONPATH=REPO_ROOT)
    launcher = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                    "--nproc-per-node", str(nproc)]
    command = launcher + [str(recorder), os.path.join(REPO_ROOT, "pretrain.py"), *extra]
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def global_batches_trained_on(tmp_path, run_name: str) -> dict[int, list[int]]:
    """step -> the puzzle identifiers of that step's global batch (the ranks' slices in rank order)."""
    batches: dict[int, dict[int, list[int]]] = {}
    folder = tmp_path / f"trained_on_{run_name}"
    for name in sorted(os.listdir(folder)):
        rank = int(name.removeprefix("rank").removesuffix(".jsonl"))
        for line in (folder / name).read_text().splitlines():
            record = json.loads(line)
            assert rank not in batches.setdefault(record["step"], {}), f"step {record['step']} trained twice"
            batches[record["step"]][rank] = record["ids"]
    return {step: sum((parts[r] for r in sorted(parts)), []) for step, parts in sorted(batches.items())}


def losses(run_dir) -> dict[int, float]:
    return {m["step"]: m["train/lm_loss"] for m in read_metrics(run_dir) if "train/lm_loss" in m}


@pytest.fixture(scope="module")
def straight_run(copy_task, tmp_path_factory):
    """The uninterrupted run in one process: the batches and losses the resumed runs must continue."""
    tmp_path = tmp_path_factory.mktemp("straight")
    run_recorded(tmp_path, tmp_path / "straight", 1, f"data_paths=[{copy_task}]", *RUN,
                 f"+checkpoint_path={tmp_path / 'straight'}")
    return global_batches_trained_on(tmp_path, "straight"), losses(tmp_path / "straight")


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("before, after", [(2, 1), (1, 2)])
def test_resume_on_another_number_of_processes(copy_task, straight_run, tmp_path, before, after):
    run_dir = tmp_path / "resumed"
    common = [f"data_paths=[{copy_task}]", *RUN, f"+checkpoint_path={run_dir}"]
    run_recorded(tmp_path, run_dir, before, *common, "stop_at_step=5")
    # The premise: sequences are in flight (halt_max_steps=2: step 5 is the first of two), so step 6 goes
    # on with their carries instead of taking batch 6's data; a reset carry would make the curve differ.
    saved = torch.load(run_dir / "train_state_step_5" / "rank0.pt", weights_only=True)
    assert not saved["carry"]["halted"].any()
    result = run_recorded(tmp_path, run_dir, after, *common, "resume=auto")
    assert f"saved by {before} processes with {after}" in result.stdout

    # The run continued to the end, each step logged once.
    resumed_losses = losses(run_dir)
    assert sorted(resumed_losses) == list(range(1, TOTAL_STEPS + 1))
    # Every example of each epoch trained on once: the same global batches as the uninterrupted run.
    batches = global_batches_trained_on(tmp_path, "resumed")
    assert sorted(batches) == list(range(1, TOTAL_STEPS + 1))
    for epoch in range(TOTAL_STEPS // STEPS_PER_EPOCH):
        seen = Counter(i for step in range(epoch * STEPS_PER_EPOCH + 1, (epoch + 1) * STEPS_PER_EPOCH + 1)
                       for i in batches[step])
        assert seen == Counter(range(1, NUM_PUZZLES + 1)), f"epoch {epoch}: examples skipped or repeated"
    straight_batches, straight_losses = straight_run
    assert batches == straight_batches

    # The curve continues where it was: the re-sliced carries hold the same sequences in flight, so the
    # losses are the uninterrupted run's up to the summation order of the ranks' gradients.
    ratio = np.array([resumed_losses[s] / straight_losses[s] for s in range(1, TOTAL_STEPS + 1)])
    assert np.all(np.abs(ratio - 1) < 1e-4), ratio


@pytest.mark.integration
def test_resume_with_another_batch_order_is_refused(copy_task, tmp_path):
    """The saved loader position counts batches of the saved global_batch_size, seed and eval_interval."""
    from tests.helpers import compose_config, cpu_context
    from training.config import parse_config
    from training.loop import train
    common = [f"data_paths=[{copy_task}]", *RUN, f"+checkpoint_path={tmp_path}"]
    train(parse_config(compose_config([*common, "stop_at_step=2"])), cpu_context())
    with pytest.raises(CheckpointError, match=r"'global_batch_size': \(16, 8\).*\+load_checkpoint"):
        train(parse_config(compose_config([*common, "resume=auto", "global_batch_size=8"])), cpu_context())
