"""Replays fixtures computed by the published TRM code and compares every tensor.

Any `*.pt` fixture in $TRM_REFERENCE_DIR (default tests/fixtures) is a test case; see that
directory's README for the format, and `tests/helpers.py` (`replay_fixture`) for the tolerances.
"""
import glob
import os

import pytest

from tests.conftest import REFERENCE_DIR
from tests.helpers import replay_fixture

FIXTURES = sorted(glob.glob(os.path.join(REFERENCE_DIR, "*.pt")))


def _fixture_id(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


@pytest.mark.parametrize("path", FIXTURES, ids=[_fixture_id(p) for p in FIXTURES])
def test_parity(path):
    replay_fixture(path)


def test_fixtures_present():
    assert FIXTURES, f"no *.pt fixtures found in {REFERENCE_DIR} (set TRM_REFERENCE_DIR)"
