"""hf:// look-ups with the hub out of reach fail at once with one line saying what to do (issue 26 finding 7: they
retried for about 25 s first). The endpoint is a closed port on this machine: nothing leaves it."""
import os
import socket
import subprocess
import sys
import time

import pytest

from tests.helpers import REPO_ROOT

URI = "hf://owner/repo/arc_v1_public/step_5"
LOOKUP = ("from rundir.hub import resolve_hub_checkpoint\n"
          "from utils.errors import CheckpointError\n"
          "try:\n"
          f"    resolve_hub_checkpoint({URI!r})\n"
          "except CheckpointError as err:\n"
          "    print(err)\n")


def closed_port() -> int:
    """A local port nobody listens on: a connection to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("offline", [False, True], ids=["connection-refused", "HF_HUB_OFFLINE"])
def test_unreachable_hub_fails_within_seconds_and_says_what_to_do(tmp_path, offline):
    env = dict(os.environ, HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}", HF_HOME=str(tmp_path / "hf"),
               HF_HUB_CACHE=str(tmp_path / "hf" / "hub"), PYTHONPATH=REPO_ROOT)
    env.pop("HF_HUB_OFFLINE", None)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", LOOKUP], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    elapsed = time.monotonic() - start
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    message = lines[-1] if lines else ""
    assert URI in message and "not in the Hugging Face cache" in message, done.stdout + done.stderr[-2000:]
    if offline:
        assert "HF_HUB_OFFLINE=1 is set" in message, message
    else:
        assert "Cannot reach the Hugging Face hub" in message and "Connection refused" in message, message
        assert "HF_HUB_OFFLINE=1" in message, message  # what to do with the file already cached
    assert "Retrying" not in done.stderr, done.stderr[-2000:]
    assert elapsed < 8, f"took {elapsed:.1f} s"  # the interpreter's start included; the retries took ~25 s
