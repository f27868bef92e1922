"""The small presets (`python pretrain.py --config-name quickstart_maze` / `quickstart_arc`), a few steps each: the
data is built offline on first use, the run trains, evaluates (ARC: capped, with the ARC evaluator) and draws its
pictures."""
import json
import os
import re
import shlex

from tests.helpers import run_pretrain


def run_preset(name: str, overrides: list[str], cwd) -> dict[str, str]:
    """The paths the run's report printed (key: quoted path), after checking it succeeded."""
    result = run_pretrain(["--config-name", name, *overrides], cwd=str(cwd))
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"^eval at step \d+: all/exact_accuracy [01]\.\d{4}", result.stdout, re.M), result.stdout[-2000:]
    lines = result.stdout.splitlines()
    paths = {key: shlex.split(value)[0] for key, _, value in (line.partition(": ") for line in lines)
             if key in ("curves", "pictures", "metrics")}
    for key in ("curves", "pictures", "metrics"):
        assert os.path.isfile(cwd / paths[key]), f"{key} missing: {result.stdout[-2000:]}"
    return {"stdout": result.stdout, **paths}


def test_maze_preset_generates_mazes_trains_and_draws(tmp_path):
    run = run_preset("quickstart_maze", ["generate_if_missing.num_train=16", "generate_if_missing.num_test=4",
                                         "global_batch_size=8", "epochs=1", "eval_interval=1"], tmp_path)
    assert "generating a maze dataset" in run["stdout"]
    with open(tmp_path / "data" / "maze-quickstart" / "test" / "dataset.json") as f:
        assert json.load(f)["total_puzzles"] == 4
    assert (tmp_path / run["pictures"]).read_text().count('class="panels"') == 4  # every test maze


def test_arc_preset_builds_concept_tasks_and_scores_a_capped_evaluation(tmp_path):
    overrides = ["generate_if_missing.tasks=[Center10,CleanUp7]", "generate_if_missing.num_aug=1",
                 "global_batch_size=4", "epochs=2", "eval_interval=2", "max_eval_examples=1"]
    run = run_preset("quickstart_arc", overrides, tmp_path)
    out = run["stdout"]
    assert "generating an ARC dataset of the shipped ConceptARC tasks" in out
    # One whole task of the two: its 3 test inputs in both versions, and pass@k over that task alone.
    assert "max_eval_examples=1: evaluating 6 of 12 test examples, whole groups (1 of 2 groups" in out
    assert re.search(r"^ARC/pass@2: [01]\.\d{4}$", out, re.M)
    run_dir = os.path.dirname(tmp_path / run["metrics"])
    submissions = [name for name in os.listdir(run_dir) if name.startswith("evaluator_ARC_step_")]
    assert submissions and os.path.isfile(os.path.join(run_dir, submissions[0], "submission.json"))
