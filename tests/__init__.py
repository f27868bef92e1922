"""The test suite: tests/unit (the quick loop, `python -m pytest -q tests/unit`) and tests/integration (whole runs
and subprocesses, marked `integration` by conftest.py), with the shared helpers.py and conftest.py beside them."""
