"""rundir/metrics.py: the wandb mode (asked for, from the environment, from credentials), metrics.jsonl written one
JSON line per log, truncated back to a resumed step, and the wandb run id kept across resumes."""
import json

import numpy as np
import pytest
import torch

from rundir.layout import WANDB_ID_FILE
from rundir.metrics import RunLogger, resolve_wandb_mode, truncate_metrics
from tests.helpers import read_metrics


# ---------------------------------------------------------------------------------------------
# The wandb mode
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def clean_wandb_env(monkeypatch, tmp_path):
    """A HOME without credentials and no wandb variables, so the host machine cannot leak in."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("NETRC", "WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.mark.parametrize("mode", ["online", "offline", "disabled"])
def test_resolve_wandb_mode_explicit(clean_wandb_env, monkeypatch, mode):
    monkeypatch.setenv("WANDB_MODE", "disabled")  # an explicit request beats the environment
    assert resolve_wandb_mode(mode) == mode


def test_resolve_wandb_mode_invalid(clean_wandb_env):
    with pytest.raises(ValueError, match="valid modes: online, offline, disabled"):
        resolve_wandb_mode("dryrun")


def test_resolve_wandb_mode_env(clean_wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode(None) == "disabled"
    monkeypatch.setenv("WANDB_MODE", "bogus")
    with pytest.raises(ValueError, match="WANDB_MODE"):
        resolve_wandb_mode(None)


def test_resolve_wandb_mode_no_credentials_is_offline(clean_wandb_env):
    assert resolve_wandb_mode(None) == "offline"


def test_resolve_wandb_mode_api_key(clean_wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode(None) == "online"


def test_resolve_wandb_mode_home_netrc(clean_wandb_env):
    netrc_file = clean_wandb_env / ".netrc"
    netrc_file.write_text("machine example.com login u password p\n")
    assert resolve_wandb_mode(None) == "offline"  # another host's entry is not a wandb login
    netrc_file.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    assert resolve_wandb_mode(None) == "online"


def test_resolve_wandb_mode_netrc_env(clean_wandb_env, monkeypatch, tmp_path):
    netrc_file = tmp_path / "custom_netrc"
    netrc_file.write_text("machine api.wandb.ai login user password secret\n")
    (clean_wandb_env / ".netrc").write_text("machine example.com login u password p\n")
    monkeypatch.setenv("NETRC", str(netrc_file))
    assert resolve_wandb_mode(None) == "online"
    monkeypatch.setenv("NETRC", str(tmp_path / "missing"))
    assert resolve_wandb_mode(None) == "offline"


def test_resolve_wandb_mode_base_url_host(clean_wandb_env, monkeypatch):
    (clean_wandb_env / ".netrc").write_text("machine api.wandb.ai login user password secret\n")
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    assert resolve_wandb_mode(None) == "offline"
    (clean_wandb_env / ".netrc").write_text("machine wandb.example.org login user password secret\n")
    assert resolve_wandb_mode(None) == "online"


def test_wandb_settings_disable_stats():
    from rundir.metrics import _wandb_settings
    assert _wandb_settings().x_disable_stats is True


# ---------------------------------------------------------------------------------------------
# metrics.jsonl, and the wandb run across resumes
# ---------------------------------------------------------------------------------------------
def test_run_logger_writes_jsonl(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    run_dir = tmp_path / "run"
    logger = RunLogger(str(run_dir), project="p", run_name="r", config_dict={"lr": 1e-4}, wandb_mode="disabled")
    logger.log({"loss": torch.tensor(0.5), "count": np.int64(3), "acc": np.float32(0.25), "lr": 1e-4}, step=1)
    logger.log({"flag": torch.tensor(True), "n": torch.tensor([7])}, step=np.int64(2))
    with pytest.raises(ValueError, match="shape"):
        logger.log({"vec": torch.zeros(2)}, step=3)
    with pytest.raises(ValueError, match="reserved"):
        logger.log({"step": 4}, step=4)
    logger.finish()
    logger.finish()

    text = (run_dir / "metrics.jsonl").read_text()
    lines = text.splitlines()
    assert text.endswith("\n") and len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first == {"step": 1, "loss": 0.5, "count": 3, "acc": 0.25, "lr": 1e-4}
    assert type(first["count"]) is int and type(first["loss"]) is float
    assert second == {"step": 2, "flag": True, "n": 7}
    assert list(first) == ["step", "loss", "count", "acc", "lr"]


class _FillingFile:
    """The metrics file of a RunLogger on a disk that fills after `room` more bytes."""

    def __init__(self, real, room: int):
        self.real, self.room = real, room

    def write(self, data) -> int:
        if len(data) > self.room:
            self.real.write(data[:self.room])
            raise OSError(28, "No space left on device")
        self.room -= len(data)
        return self.real.write(data)

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_issue23_b_disk_full_while_appending_metrics_is_one_line_and_leaves_no_half_line(tmp_path, monkeypatch):
    """Issue 23 B: a full disk while appending metrics.jsonl was a raw OSError and left half a line."""
    from utils.errors import DiskFullError
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    logger = RunLogger(str(tmp_path / "run"), project="p", run_name="r", config_dict={}, wandb_mode="disabled")
    logger.log({"loss": 0.5}, step=1)
    logger._metrics_file = _FillingFile(logger._metrics_file, room=10)
    with pytest.raises(DiskFullError) as err:
        logger.log({"loss": 0.25}, step=2)
        logger._metrics_file.flush()  # a buffered file fails here
    logger.finish()
    path = tmp_path / "run" / "metrics.jsonl"
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    assert path.read_text() == '{"step": 1, "loss": 0.5}\n'  # the earlier line whole, no half of the new one


def test_truncate_metrics(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "x": s}) + "\n" for s in (0, 1, 2, 3, 2, 5)]
    path.write_text("".join(lines) + '{"step": 6, "x"')
    assert truncate_metrics(str(path), 2) == 3  # steps 3 and 5, and the line cut short
    assert path.read_text() == lines[0] + lines[1] + lines[2] + lines[4]
    assert truncate_metrics(str(path), 2) == 0 and truncate_metrics(str(tmp_path / "none"), 2) == 0


class FakeWandbRun:
    def __init__(self, starting_step: int):
        self.starting_step, self.logged = starting_step, []

    def log(self, metrics, step):
        self.logged.append(step)

    def finish(self):
        pass


def test_wandb_run_id_is_persisted_and_reused(tmp_path, monkeypatch):
    import rundir.metrics
    calls, runs = [], []

    def fake_init(**kwargs):  # a resumed wandb run already has steps 0..7 (the same values: a resume is exact)
        calls.append(kwargs)
        runs.append(FakeWandbRun(starting_step=8 if len(calls) == 2 else 0))
        return runs[-1]

    monkeypatch.setattr(rundir.metrics.wandb, "init", fake_init)

    def logger(resume_step=None, mode="offline"):
        return RunLogger(str(tmp_path), "p", "r", {}, mode, resume_step=resume_step)

    logger().finish()
    first_id = (tmp_path / WANDB_ID_FILE).read_text().strip()
    assert first_id and calls[-1]["id"] == first_id and calls[-1]["resume"] == "allow"
    resumed = logger(resume_step=4)  # resume=auto: the same wandb run continues
    assert calls[-1]["id"] == first_id and calls[-1]["resume"] == "allow"
    for step in (5, 7, 8, 9):
        resumed.log({"x": step}, step=step)
    resumed.finish()
    assert runs[-1].logged == [8, 9] and [m["step"] for m in read_metrics(str(tmp_path))] == [5, 7, 8, 9]
    logger().finish()  # a new run in the directory: a new wandb run
    assert calls[-1]["id"] not in (None, first_id)
    logger(resume_step=4, mode="disabled").finish()
    assert calls[-1]["id"] is None


def _strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def test_issue23_e_non_finite_metrics_are_written_as_null(tmp_path, monkeypatch):
    """Issue 23 E (the metrics.jsonl twin of evaluate's metrics.json): NaN and inf were written bare, not JSON."""
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    logger = RunLogger(str(tmp_path / "run"), project="p", run_name="r", config_dict={}, wandb_mode="disabled")
    logger.log({"loss": torch.tensor(float("nan")), "acc": np.float32("inf"), "lr": 1e-4}, step=1)
    logger.finish()
    assert _strict_json((tmp_path / "run" / "metrics.jsonl").read_text()) == {"step": 1, "loss": None, "acc": None,
                                                                              "lr": 1e-4}
