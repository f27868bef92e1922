"""Fast tests, one module per component: no whole training or evaluation runs, no training or torchrun
subprocesses. `python -m pytest -q tests/unit` is the quick loop."""
