import os
import sys

import pytest
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

# Reference numbers from the published TRM code, shipped with the repository (see tests/fixtures/README.md).
FIXTURES_DIR = os.path.join(REPO_ROOT, "tests", "fixtures")
# The parity test replays every *.pt fixture in this directory; TRM_REFERENCE_DIR points it elsewhere.
REFERENCE_DIR = os.environ.get("TRM_REFERENCE_DIR", FIXTURES_DIR)


def pytest_collection_modifyitems(config, items):
    """GPU tests skip themselves on machines without CUDA."""
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
