"""The README's quick demo (`python pretrain.py --config-name quickstart`), at a smaller size."""
import os
import re
import shlex
import subprocess
import sys

from tests.helpers import REPO_ROOT


def test_quickstart_builds_data_trains_and_reports(tmp_path):
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONPATH=REPO_ROOT)
    overrides = ["generate_if_missing.num_train=128", "generate_if_missing.num_test=16", "epochs=2", "eval_interval=2"]
    result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "pretrain.py"), "--config-name", "quickstart",
                             *overrides], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert re.fullmatch(r"test exact_accuracy: [01]\.\d{4}", lines[-1]), lines[-1]
    assert re.fullmatch(r"test tta_exact_accuracy: [01]\.\d{4}", lines[-2]), lines[-2]  # eval_tta: 8
    assert re.search(r"^eval at step \d+: all/exact_accuracy [01]\.\d{4}   all/tta_exact_accuracy", result.stdout, re.M)
    assert "generating a sudoku dataset" in result.stdout
    # Only the built dataset is announced, not the temporary CSV folder it was built from (deleted by then).
    wrote = [line for line in result.stdout.splitlines() if line.startswith("Wrote ")]
    assert len(wrote) == 1 and "sudoku-quickstart" in wrote[0] and "-csv-" not in wrote[0], wrote
    # The first line of the run says how it computes: threads, the dtype `auto` became on this CPU, eager.
    assert re.search(r"^Run .*: \d+ steps on cpu x1 \(\d+ threads? \([^)]+\), (bfloat16 \(auto: CPU with [^)]+\)|"
                     r"float32 \(auto: CPU without bf16 units\)), eager\); ", result.stdout, re.M), result.stdout[:2000]
    assert os.path.isfile(tmp_path / "data" / "sudoku-quickstart" / "test" / "dataset.json")
    # Only what the run asked for lands in the working directory: no Hydra outputs/<date>/<time>/pretrain.log.
    assert sorted(os.listdir(tmp_path)) == ["checkpoints", "data"]
    # Printed shell-quoted (the run name has a space): one shell word each.
    paths = {key: shlex.split(value)[0] for key, _, value in (line.partition(": ") for line in lines[:-1])
             if key in ("curves", "pictures", "metrics")}
    for key in ("curves", "pictures", "metrics"):
        assert os.path.isfile(tmp_path / paths[key]), f"{key} missing: {paths}"
    html = (tmp_path / paths["pictures"]).read_text()
    assert html.count('class="panels"') == 8  # eight test puzzles, each with its label and prediction
