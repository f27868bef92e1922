"""hf:// checkpoints (rundir/hub.py), without network: a hub cache laid out in tmp_path, HF_HUB_OFFLINE on.

huggingface_hub reads HF_HUB_CACHE and HF_HUB_OFFLINE into `huggingface_hub.constants` at import time and looks
them up there on each call, so the fixture patches those attributes (and the environment, for anything that reads
it later). A cache is `models--OWNER--REPO/refs/<branch>` holding a commit hash plus `snapshots/<hash>/<files>`;
plain files under snapshots are what hf_hub_download returns offline (real caches link them to blobs/).
"""
import os
import sys
from types import SimpleNamespace

import huggingface_hub
import pytest
import torch
from huggingface_hub import constants, errors

from rundir.hub import HUB_SCHEME, is_hub_path, parse_hub_path, resolve_hub_checkpoint
from rundir.layout import CONFIG_FILE
from rundir.states import safe_load
from tests.helpers import offline_hub_folder
from utils.errors import CheckpointError

REPO = "arcprize/trm_arc_prize_verification"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
WEIGHTS = {"model.weight": torch.arange(6.0).reshape(2, 3), "model.bias": torch.tensor([1.0, -1.0])}


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An offline hub cache holding REPO at COMMIT (branch main) with arc_v1_public/step_10 and its config."""
    folder = offline_hub_folder(monkeypatch, tmp_path / "hub", REPO, COMMIT, "arc_v1_public")
    repo_dir = tmp_path / "hub" / f"models--{REPO.replace('/', '--')}"
    torch.save(WEIGHTS, folder / "step_10")
    (folder / CONFIG_FILE).write_text("arch:\n  name: trm\n")
    return SimpleNamespace(repo_dir=repo_dir, folder=folder)


@pytest.mark.parametrize("revision", ["", "@main", f"@{COMMIT}"])
def test_resolve_returns_cached_weights_with_config_beside(hub_cache, capsys, revision):
    path = resolve_hub_checkpoint(f"{HUB_SCHEME}{REPO}{revision}/arc_v1_public/step_10")
    assert path == str(hub_cache.folder / "step_10")
    assert os.path.isfile(os.path.join(os.path.dirname(path), CONFIG_FILE))
    loaded = torch.load(path, weights_only=True)
    assert loaded.keys() == WEIGHTS.keys() and all(torch.equal(loaded[k], WEIGHTS[k]) for k in WEIGHTS)
    assert torch.equal(safe_load(path, mmap=True)["model.weight"], WEIGHTS["model.weight"])
    assert "Downloading" not in capsys.readouterr().out  # cached: nothing to download


@pytest.mark.parametrize("uri, expected", [
    (f"hf://{REPO}/arc_v1_public/step_518071", (REPO, "arc_v1_public/step_518071", None)),
    ("hf://owner/repo/step_5", ("owner/repo", "step_5", None)),
    ("hf://owner/repo@v1.0/a/b/step_5", ("owner/repo", "a/b/step_5", "v1.0")),
    ("hf://owner/repo@refs%2Fpr%2F3/step_5", ("owner/repo", "step_5", "refs/pr/3")),
])
def test_parse_hub_path(uri, expected):
    assert is_hub_path(uri)
    assert parse_hub_path(uri) == expected


@pytest.mark.parametrize("uri", [
    "hf://", "hf://owner", "hf://owner/repo", "hf://owner/repo/", "hf://owner//step_5", "hf:///repo/step_5",
    "hf://owner/repo@/step_5", "hf://owner/repo/a//step_5", "hf://owner/repo/../step_5", "owner/repo/step_5",
])
def test_parse_hub_path_rejects_malformed(uri):
    with pytest.raises(CheckpointError, match="expected hf://OWNER/REPO") as err:
        parse_hub_path(uri)
    assert "hf://arcprize/trm_arc_prize_verification/arc_v1_public/step_518071" in str(err.value)
    assert not is_hub_path("checkpoints/run/step_5")


@pytest.mark.parametrize("uri", [f"hf://{REPO}/arc_v1_public/step_99", "hf://someone/elsewhere/step_1"])
def test_offline_and_not_cached_says_so(hub_cache, uri):
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE=1") as err:
        resolve_hub_checkpoint(uri)
    assert "\n" not in str(err.value) and uri in str(err.value)


def test_config_missing_in_repo_points_to_config_option(hub_cache, monkeypatch):
    (hub_cache.folder / CONFIG_FILE).unlink()
    # What hf_hub_download records after the hub answered 404: the cache then knows the file is absent.
    no_exist = hub_cache.repo_dir / ".no_exist" / COMMIT / "arc_v1_public"
    no_exist.mkdir(parents=True)
    (no_exist / CONFIG_FILE).touch()
    uri = f"hf://{REPO}/arc_v1_public/step_10"
    with pytest.raises(CheckpointError, match="config=PATH") as err:
        resolve_hub_checkpoint(uri)
    assert f"arc_v1_public has no {CONFIG_FILE}" in str(err.value) and "\n" not in str(err.value)
    assert resolve_hub_checkpoint(uri, need_config=False) == str(hub_cache.folder / "step_10")

    # Online, the hub itself says the file does not exist.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", hub_answers)
    real_download = huggingface_hub.hf_hub_download

    def download(repo_id, filename, **kwargs):
        if filename.endswith(CONFIG_FILE):
            raise errors.EntryNotFoundError("404 Client Error. Entry Not Found for url ...")
        return real_download(repo_id, filename, **kwargs)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    with pytest.raises(CheckpointError, match="config=PATH"):
        resolve_hub_checkpoint(uri)


def hub_answers(url, **kwargs):
    """The first look-up (rundir.hub's reachability check) as if the hub answered: no network in tests."""
    return None


def test_a_refused_connection_fails_at_once_without_retries(tmp_path, monkeypatch):
    """Issue 26 finding 7: huggingface_hub retried a refused connection for about 25 s before the error; the first
    refusal is reported, one line saying what to do, and hf_hub_download (with its retries) is never called.
    (The same through a real closed port and HF_HUB_OFFLINE=1: tests/integration/test_hub_unreachable.py.)"""
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    asked = []

    def refused(url, **kwargs):
        asked.append(url)
        raise errors.HTTPError("[Errno 111] Connection refused")  # the transport's error class (httpx's ConnectError)

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", refused)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: pytest.fail("hf_hub_download called"))
    with pytest.raises(CheckpointError, match="Cannot reach the Hugging Face hub.*Connection refused.*"
                                              "HF_HUB_OFFLINE=1") as err:
        resolve_hub_checkpoint("hf://owner/repo/step_5")
    assert "\n" not in str(err.value) and len(asked) == 1 and asked[0].endswith("/owner/repo/resolve/main/step_5")


def _http_error(cls, status):
    response = SimpleNamespace(status_code=status, headers={}, request=None)
    return cls(f"{status} Client Error.\n\nMore lines from the hub.", response=response)


@pytest.mark.parametrize("error, expected", [
    (lambda: _http_error(errors.GatedRepoError, 403), "is gated.*HF_TOKEN"),
    (lambda: _http_error(errors.RepositoryNotFoundError, 401), "not found.*login.*HF_TOKEN"),
    (lambda: _http_error(errors.RevisionNotFoundError, 404), "has no revision"),
    (lambda: _http_error(errors.HfHubHTTPError, 503), "answered 503"),
    (lambda: errors.HTTPError("connection reset by peer"), "Network error"),
    (lambda: errors.LocalEntryNotFoundError("cannot find the requested files"), "Cannot reach the Hugging Face hub"),
])
def test_hub_errors_become_one_line(tmp_path, monkeypatch, capsys, error, expected):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", hub_answers)

    def download(*args, **kwargs):
        raise error()

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    with pytest.raises(CheckpointError, match=expected) as err:
        resolve_hub_checkpoint("hf://owner/repo/step_5")
    assert "\n" not in str(err.value)
    # Online and not cached: one line says what is being downloaded and where it goes.
    out = capsys.readouterr().out
    assert out.startswith("Downloading hf://owner/repo/step_5 from the Hugging Face hub (cached in ")
    assert out.count("\n") == 1


def test_without_huggingface_hub_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # makes `import huggingface_hub` fail
    with pytest.raises(CheckpointError, match="pip install huggingface_hub"):
        resolve_hub_checkpoint("hf://owner/repo/step_5")
