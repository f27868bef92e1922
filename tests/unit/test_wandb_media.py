"""RunLogger's pictures (wandb media), weights (a wandb model artifact), group and tags, read back from an offline
wandb run's files; nothing of it when wandb is disabled."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from rundir.metrics import RunLogger, artifact_name, wandb_media
from tests.helpers import compose_config
from tests.wandb_offline import (
    artifacts,
    finished_run_records,
    history_rows,
    offline_run_log,
    offline_wandb,
)
from training.config import parse_config
from training.publish import publish_weights

RUN_NAME = "ACTLossHead urban-chimera"  # the published default: a space, which artifact names may not hold


def write_pictures_and_weights(directory) -> tuple[str, str, str]:
    """A PNG, an HTML page and a weights file, as a finished run leaves them."""
    directory.mkdir(parents=True, exist_ok=True)
    png, html, weights = directory / "curves.png", directory / "predictions.html", directory / "step_12"
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3)).save(png)
    html.write_text("<html><body><p>eight puzzles</p></body></html>")
    weights.write_bytes(b"weights of step 12")
    return str(png), str(html), str(weights)


def test_pictures_and_weights_reach_an_offline_wandb_run(tmp_path, monkeypatch):
    offline_wandb(monkeypatch, tmp_path)  # wandb_mode=None below: WANDB_MODE=offline decides
    run_dir = tmp_path / "run"
    png, html, weights = write_pictures_and_weights(run_dir)
    with RunLogger(str(run_dir), "p", RUN_NAME, {"lr": 1e-3}, wandb_mode=None, group="sweep-1",
                   tags=["L_cycles=2"]) as logger:
        assert logger.wandb_mode == "offline"
        logger.log({"all/exact_accuracy": 0.5}, step=12)
        logger.log_pictures({"pictures/curves": png, "pictures/predictions": html}, step=12)
        assert logger.log_weights(weights, step=12) == "ACTLossHead-urban-chimera"

    records = finished_run_records(str(run_dir))
    log = offline_run_log(str(run_dir))
    (run,) = [record.run for record in records if record.WhichOneof("record_type") == "run"]
    assert (run.display_name, run.run_group, list(run.tags)) == (RUN_NAME, "sweep-1", ["L_cycles=2"])
    (row,) = [row for row in history_rows(records) if "pictures/curves/path" in row]
    assert row["_step"] == 12 and row["all/exact_accuracy"] == 0.5  # the step the pictures were made
    assert row["pictures/curves/_type"] == "image-file" and row["pictures/predictions/_type"] == "html-file"
    files = os.path.join(os.path.dirname(log), "files")
    with open(os.path.join(files, row["pictures/curves/path"]), "rb") as logged, open(png, "rb") as drawn:
        assert logged.read() == drawn.read()
    with open(os.path.join(files, row["pictures/predictions/path"]), encoding="utf-8") as logged:
        assert "<p>eight puzzles</p>" in logged.read()

    (artifact,) = artifacts(records)
    assert (artifact.name, artifact.type) == ("ACTLossHead-urban-chimera", "model")
    assert sorted(artifact.aliases) == ["latest", "step_12"]
    assert json.loads(artifact.metadata) == {"step": 12, "file": "step_12"}
    (entry,) = artifact.manifest.contents
    assert entry.path == "step_12" and entry.local_path.startswith(str(tmp_path))  # nothing written outside
    with open(entry.local_path, "rb") as staged:  # wandb's copy, uploaded by a later `wandb sync`
        assert staged.read() == b"weights of step 12"


def test_nothing_is_sent_when_wandb_is_disabled(tmp_path, monkeypatch):
    offline_wandb(monkeypatch, tmp_path)
    run_dir = tmp_path / "run"
    png, html, weights = write_pictures_and_weights(run_dir)
    with RunLogger(str(run_dir), "p", RUN_NAME, {}, wandb_mode="disabled") as logger:
        logger.log_pictures({"pictures/curves": png, "pictures/predictions": html}, step=12)
        assert logger.log_weights(weights, step=12) is None
    assert not (run_dir / "wandb").exists() and not (tmp_path / "wandb-home" / "data").exists()


class RecordingRun:
    """A wandb run that a resumed RunLogger continues: it already holds steps before `starting_step`."""

    def __init__(self, starting_step: int):
        self.starting_step, self.logged = starting_step, []

    def log(self, metrics, step):
        self.logged.append((sorted(metrics), step))

    def finish(self):
        pass


def test_pictures_of_a_step_the_resumed_wandb_run_has_are_not_sent_again(tmp_path, monkeypatch):
    import rundir.metrics
    run = RecordingRun(starting_step=13)
    monkeypatch.setattr(rundir.metrics.wandb, "init", lambda **kwargs: run)
    png, _, _ = write_pictures_and_weights(tmp_path / "run")
    with RunLogger(str(tmp_path / "run"), "p", "r", {}, "offline", resume_step=12) as logger:
        logger.log_pictures({"pictures/curves": png}, step=12)  # wandb would drop a step below its last one
        logger.log_pictures({"pictures/curves": png}, step=13)
    assert run.logged == [(["pictures/curves"], 13)]


@pytest.mark.parametrize("run_name, expected", [
    ("ACTLossHead urban-chimera", "ACTLossHead-urban-chimera"),
    ("L_cycles=2,lr=1e-3", "L_cycles-2-lr-1e-3"),
    ("a/b:c", "a-b-c"),
    ("x" * 200, "x" * 128),
    (" / ", "run"),
])
def test_artifact_name_is_one_wandb_accepts(run_name, expected):
    assert artifact_name(run_name) == expected


def test_only_png_and_html_are_media(tmp_path):
    with pytest.raises(ValueError, match="only .png and .html"):
        wandb_media(str(tmp_path / "curves.pdf"))


@pytest.mark.parametrize("mode, saved, said", [
    ("disabled", True, "wandb is disabled (wandb_mode or WANDB_MODE), so no weights artifact was logged"),
    ("offline", False, "were saved at the last step, so no weights artifact was logged"),
])
def test_wandb_log_weights_says_why_no_artifact_was_logged(tmp_path, monkeypatch, capsys, mode, saved, said):
    offline_wandb(monkeypatch, tmp_path)
    run_dir = tmp_path / "run"
    _, _, weights = write_pictures_and_weights(run_dir)
    if not saved:
        os.remove(weights)
    config = parse_config(compose_config(["data_paths=[unused]", "wandb_log_weights=true",
                                          f"+checkpoint_path={run_dir}"]))
    with RunLogger(str(run_dir), "p", RUN_NAME, {}, wandb_mode=mode) as logger:
        publish_weights(config, 12, logger)
    assert said in capsys.readouterr().out
    if mode == "offline":
        assert not artifacts(finished_run_records(str(run_dir)))
    else:
        assert not (run_dir / "wandb").exists()


def test_a_relative_run_directory_holds_its_wandb_run_whatever_the_working_directory_was(tmp_path, monkeypatch):
    """wandb's service process, started by the first run of a process, resolved a later run's relative directory
    from its own working directory: the wandb run landed in another folder (tests, notebooks)."""
    offline_wandb(monkeypatch, tmp_path)
    for folder in ("first", "second"):
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        RunLogger("run", "p", "r", {}, wandb_mode=None).finish()
    for folder in ("first", "second"):
        assert finished_run_records(str(tmp_path / folder / "run"))  # one offline run in each
