"""A few ARC tasks: the builder's --tasks / --max-tasks, and `generate_if_missing: {kind: arc}` (the ARC preset's
data). The default build (no selection) is the published one: tests/unit/test_arc_dataset.py's digests."""
import json
import os

import pytest

from dataset import build_arc_dataset as arc
from dataset.generated import build_generated_dataset
from dataset.tasks.arc import NAME_SEPARATOR
from tests.helpers import write_tiny_arc_source
from utils.errors import DatasetError

TRAINING = ["0a1b2c3d", "1b2c3d4e"]  # write_tiny_arc_source's tasks, in file order
EVALUATION = ["2c3d4e5f", "3d4e5f60", "4e5f6071"]


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    return write_tiny_arc_source(str(tmp_path_factory.mktemp("kaggle")))


def build(prefix: str, out: str, *options: str) -> tuple[set[str], list[str]]:
    """(tasks with a name in identifiers.json, test tasks in test_puzzles.json) of a build with `options`."""
    arc.main(["--input-file-prefix", prefix, "--output-dir", out, "--subsets", "training", "evaluation",
              "--num-aug", "2", *options])
    with open(os.path.join(out, "identifiers.json")) as f:
        tasks = {name.split(NAME_SEPARATOR)[0] for name in json.load(f)[1:]}
    with open(os.path.join(out, "test_puzzles.json")) as f:
        return tasks, sorted(json.load(f))


def test_tasks_by_id_keeps_only_those(prefix, tmp_path):
    tasks, test = build(prefix, str(tmp_path / "ids"), "--tasks", "1b2c3d4e", "4e5f6071")
    assert tasks == {"1b2c3d4e", "4e5f6071"} and test == ["4e5f6071"]


def test_max_tasks_keeps_the_first_of_each_subset(prefix, tmp_path):
    tasks, test = build(prefix, str(tmp_path / "first"), "--max-tasks", "2")
    assert tasks == {*TRAINING, *EVALUATION[:2]} and test == EVALUATION[:2]
    everything, _ = build(prefix, str(tmp_path / "all"), "--max-tasks", "100")
    assert everything == {*TRAINING, *EVALUATION}


def test_unknown_task_ids_are_named_with_the_files_searched(prefix, tmp_path):
    out = tmp_path / "bad"
    with pytest.raises(SystemExit) as exit_info:
        build(prefix, str(out), "--tasks", "2c3d4e5f", "nosuch", "4e5f6072")
    err = str(exit_info.value.code)  # the one line the command exits with
    assert "no task '4e5f6072', 'nosuch' in" in err and "did you mean '4e5f6071'?" in err
    assert f"{prefix}_evaluation_challenges.json" in err and "--subsets" in err
    assert not out.exists()


def test_a_selection_without_test_tasks_and_bad_options_are_refused(prefix, tmp_path):
    config = arc.ArcBuildConfig(input_file_prefix=prefix, output_dir=str(tmp_path / "x"),
                                subsets=["training", "evaluation"], tasks=["0a1b2c3d"])
    with pytest.raises(DatasetError, match="no task of the test set 'evaluation'.*no test split"):
        arc.build_arc_dataset(config, progress=False)
    for bad, match in ((dict(max_tasks=0), "--max-tasks must be >= 1"), (dict(tasks=[]), "--tasks is empty"),
                       (dict(tasks=["0a1b2c3d"], max_tasks=1), "give one of them")):
        # Checked with the other options, before any file is read: a missing prefix is not what is reported.
        config = arc.ArcBuildConfig(input_file_prefix=str(tmp_path / "nothing"), output_dir=str(tmp_path / "y"),
                                    **bad)
        with pytest.raises(DatasetError, match=match):
            arc.build_arc_dataset(config, progress=False)


def test_generated_arc_builds_the_shipped_concept_tasks(tmp_path, capsys):
    out = str(tmp_path / "arc")
    build_generated_dataset(out, "arc", num_aug=1, tasks=["Center10", "CleanUp7"])
    with open(os.path.join(out, "test_puzzles.json")) as f:
        assert sorted(json.load(f)) == ["Center10", "CleanUp7"]  # tested on the tasks' own test inputs
    with open(os.path.join(out, "test", "dataset.json")) as f:
        assert json.load(f)["total_groups"] == 2
    assert f"Wrote {out}: 2 ConceptARC tasks" in capsys.readouterr().out

