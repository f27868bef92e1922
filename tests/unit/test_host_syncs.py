"""Device-to-host synchronisations of a training step, counted with a CPU proxy: every Tensor method that hands
a value to Python (`item`, `tolist`, `cpu`, `numpy`, `bool`, `float`, `int`) is wrapped and counted."""
import contextlib

import pytest
import torch

from tests.helpers import TINY_ARCH, compose_config, cpu_context
from training import loop
from training.config import parse_config
from training.state import init_train_state
from utils.errors import NonFiniteLossError

SYNCING = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")


@contextlib.contextmanager
def counting_syncs():
    counts = {"n": 0}
    originals = {name: getattr(torch.Tensor, name) for name in SYNCING}

    def wrap(original):
        def counted(self, *args, **kwargs):
            counts["n"] += 1
            return original(self, *args, **kwargs)
        return counted

    for name, original in originals.items():
        setattr(torch.Tensor, name, wrap(original))
    try:
        yield counts
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


@pytest.fixture
def setup(copy_task):
    def make(*extra: str):
        config = parse_config(compose_config([f"data_paths=[{copy_task}]", *TINY_ARCH, "global_batch_size=16",
                                              "epochs=4", "eval_interval=4", "evaluators=[]", *extra]))
        ctx = cpu_context()
        loader, metadata = loop.create_dataloader(config.data_paths, "train", ctx, seed=0, global_batch_size=16,
                                                  epochs_per_iter=4, num_workers=0)
        state = init_train_state(config, metadata, ctx)
        batches = [(batch, size) for _, batch, size in loader]
        return config, ctx, state, batches
    return make


def syncs_per_step(config, ctx, state, batches, steps: int) -> list[int]:
    counts = []
    for batch, size in batches[:steps]:
        with counting_syncs() as count:
            loop.train_batch(config, state, batch, size, ctx)
        counts.append(count["n"])
    return counts


def test_a_step_that_logs_reads_the_metrics_once(setup):
    config, ctx, state, batches = setup()
    counts = syncs_per_step(config, ctx, state, batches, 3)
    assert counts == [1, 1, 1], counts  # the metrics (losses and the finite flags) come over in one transfer


def test_steps_between_log_intervals_need_no_sync(setup):
    config, ctx, state, batches = setup("log_interval=4")
    counts = syncs_per_step(config, ctx, state, batches, 8)
    assert counts == [0, 0, 0, 1, 0, 0, 0, 1], counts


def test_a_non_finite_loss_between_logs_is_caught_at_the_next_read(setup):
    config, ctx, state, batches = setup("log_interval=4")
    syncs_per_step(config, ctx, state, batches, 1)
    with torch.no_grad():
        state.raw_model.model.inner.lm_head.weight.fill_(float("nan"))
    loop.train_batch(config, state, *batches[1], ctx)  # step 2: no read, no error yet
    loop.train_batch(config, state, *batches[2], ctx)
    with pytest.raises(NonFiniteLossError, match="first at step 2") as err:
        loop.train_batch(config, state, *batches[3], ctx)  # step 4 reads
    assert "log_interval" in str(err.value)
