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


TESTS_DIR = os.path.join(REPO_ROOT, "tests")
UNIT_DIR, INTEGRATION_DIR = os.path.join(TESTS_DIR, "unit"), os.path.join(TESTS_DIR, "integration")


def _is_under(path, directory: str) -> bool:
    return os.path.commonpath([str(path), directory]) == directory


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: `-m "not integration"` must see these marks
def pytest_collection_modifyitems(config, items):
    """Tests under tests/integration are marked `integration`, so that `-m "not integration"` selects exactly
    tests/unit (the quick loop); a test elsewhere, or an integration mark in tests/unit, is a usage error. GPU
    tests skip themselves on machines without CUDA."""
    misplaced = []
    for item in items:
        if _is_under(item.path, INTEGRATION_DIR):
            item.add_marker(pytest.mark.integration)
        elif not _is_under(item.path, UNIT_DIR) or item.get_closest_marker("integration"):
            misplaced.append(item.nodeid)
    if misplaced:
        raise pytest.UsageError(f"tests belong in tests/unit (fast, no integration mark) or tests/integration: "
                                f"{misplaced}")
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
