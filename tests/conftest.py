"""Shared fixtures and collection rules (the helpers themselves are in tests/helpers.py)."""
import os

import pytest
import torch

from dataset.build_copy_dataset import write_copy_task
from tests.helpers import REPO_ROOT

# Reference numbers from the published TRM code, shipped with the repository (see tests/fixtures/README.md).
FIXTURES_DIR = os.path.join(REPO_ROOT, "tests", "fixtures")
# The parity test replays every *.pt fixture in this directory; TRM_REFERENCE_DIR points it elsewhere.
REFERENCE_DIR = os.environ.get("TRM_REFERENCE_DIR", FIXTURES_DIR)


@pytest.fixture(scope="session")
def copy_task(tmp_path_factory) -> str:
    """A copy task (labels = inputs): 64 training puzzles with their own embedding rows, 16 test puzzles."""
    return write_copy_task(str(tmp_path_factory.mktemp("data") / "copy"), num_train_puzzles=64, num_test_puzzles=16,
                           seq_len=8, vocab_size=6, num_puzzle_identifiers=65)


def pytest_collection_modifyitems(config, items):
    """GPU tests skip themselves on machines without CUDA."""
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
