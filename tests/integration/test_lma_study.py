"""`benchmarks/lma_study.py --smoke` end to end in a subprocess: every task and variant family trains for its
tiny budget, and the JSON (every point, the table) and the picture are written beside each other."""
import json
import os
import subprocess
import sys

from tests.helpers import REPO_ROOT

POINT_KEYS = {"train_s", "steps", "examples", "exact_accuracy", "token_accuracy"}


def test_smoke_writes_every_point_the_table_and_the_picture(tmp_path):
    out = tmp_path / "study"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO_ROOT)
    proc = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "benchmarks", "lma_study.py"), "--smoke",
                           "--out", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "planned: 8 models x 1 CPU seconds" in proc.stdout
    assert "plain s to LMA final" in proc.stdout

    document = json.loads((out / "lma_study.json").read_text())
    assert document["kind"] == "lma_study" and document["options"]["budget"] == 1.0
    assert set(document["tasks"]) == {"arc", "maze", "sudoku"}
    assert [document["tasks"][t]["positions"] for t in ("arc", "maze", "sudoku")] == [916, 916, 97]
    for name, families in (("arc", ["plain", "unclean", "clean"]), ("maze", ["plain", "unclean", "clean"]),
                           ("sudoku", ["plain", "clean"])):  # Sudoku has no unclean length near L/8
        assert [variant.split("-")[0] for variant in document["tasks"][name]["variants"]] == families
    for task in document["tasks"].values():
        assert task["held_out_examples"] == 2
        for variant in task["variants"].values():
            points = variant["points"]
            assert len(points) >= 2 and all(POINT_KEYS <= set(p) for p in points)
            assert points[0]["train_s"] == 0 and points[0]["steps"] == 0  # the untrained model
            assert points[-1]["train_s"] >= 1.0 and points[-1]["steps"] == variant["steps"] > 0
            assert all(0 <= p["exact_accuracy"] <= p["token_accuracy"] <= 1 for p in points)
    assert [row["task"] for row in document["table"]] == ["arc", "maze", "sudoku"]
    assert (out / "lma_study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
