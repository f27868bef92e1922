"""A finished run with `pictures: true` and `wandb_log_weights=true`, wandb offline: its offline wandb run holds
curves.png and predictions.html as media at the last step, and the final weights as a model artifact."""
import os
from contextlib import redirect_stdout
from io import StringIO

from rundir.layout import weights_path
from tests.helpers import TINY_ARCH, compose_config, cpu_context
from tests.wandb_offline import (
    artifacts,
    finished_run_records,
    history_rows,
    offline_run_log,
    offline_wandb,
)
from training.config import parse_config
from training.loop import train_until_stopped

RUN = [*TINY_ARCH, "global_batch_size=16", "epochs=2", "eval_interval=2", "lr_warmup_steps=1", "evaluators=[]",
       "device=cpu", "num_workers=0", "pictures=true", "eval_save_outputs=[inputs,labels,puzzle_identifiers,preds]"]


def test_a_run_sends_its_pictures_and_final_weights_to_wandb(copy_task, tmp_path, monkeypatch):
    offline_wandb(monkeypatch, tmp_path)  # wandb_mode unset: WANDB_MODE=offline decides, as a user's shell would
    monkeypatch.chdir(tmp_path)  # the default run name (with its space) under ./checkpoints
    printed = StringIO()
    with redirect_stdout(printed):
        outcome = train_until_stopped(parse_config(compose_config(
            [f"data_paths=[{copy_task}]", *RUN, "wandb_log_weights=true"])), cpu_context())
    run_dir = outcome.config.checkpoint_path
    records = finished_run_records(run_dir)
    steps = [row["_step"] for row in history_rows(records)]
    (row,) = [row for row in history_rows(records) if "pictures/curves/path" in row]
    assert row["_step"] == max(steps) and row["pictures/predictions/_type"] == "html-file"
    files = os.path.join(os.path.dirname(offline_run_log(run_dir)), "files")
    assert os.path.getsize(os.path.join(files, row["pictures/curves/path"])) > 1000  # the drawn curves.png
    out = printed.getvalue()
    assert "curves: " in out and "pictures: " in out  # still drawn into the run directory and printed

    (artifact,) = artifacts(records)
    assert artifact.type == "model" and artifact.name == outcome.config.run_name.replace(" ", "-")
    assert sorted(artifact.aliases) == ["latest", f"step_{max(steps)}"]
    (entry,) = artifact.manifest.contents
    with open(entry.local_path, "rb") as staged, open(weights_path(run_dir, max(steps)), "rb") as saved:
        assert staged.read() == saved.read()
    assert f"as the model artifact {artifact.name!r}" in out
