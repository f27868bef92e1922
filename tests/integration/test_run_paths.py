"""Paths the trainer prints can be pasted into the next command, although the published run name
`<model class> <slug>` contains a space: they are printed shell-quoted, and the printed evaluate
command runs verbatim. (How a command line is quoted: tests/unit/test_cli.py.)"""
import os
import shlex
import subprocess
import sys
from contextlib import redirect_stdout
from io import StringIO

import pytest

from tests.helpers import TINY_ARCH, compose_config, cpu_context
from training.config import parse_config
from training.loop import train
from utils.cli import quoted

RUN = [*TINY_ARCH, "global_batch_size=16", "epochs=2", "eval_interval=2", "lr_warmup_steps=1", "evaluators=[]",
       "wandb_mode=disabled", "device=cpu", "num_workers=0", "checkpoint_interval=4"]


def printed(out: str, label: str) -> str:
    """The value after `label: ` on the summary line that starts with it."""
    lines = [line for line in out.splitlines() if line.startswith(f"{label}: ")]
    assert len(lines) == 1, (label, out)
    return lines[0][len(label) + 2:]


@pytest.fixture(scope="module")
def default_named_run(copy_task, tmp_path_factory):
    """A run with the published default name, trained from a fresh working directory; its console output."""
    cwd = tmp_path_factory.mktemp("cwd")
    before = os.getcwd()
    os.chdir(cwd)
    try:
        captured = StringIO()
        with redirect_stdout(captured):
            train(parse_config(compose_config([f"data_paths=[{copy_task}]", *RUN])), cpu_context())
    finally:
        os.chdir(before)
    return cwd, captured.getvalue()


def test_the_default_run_name_has_a_space_and_the_start_line_says_so(default_named_run):
    cwd, out = default_named_run
    (project,) = os.listdir(cwd / "checkpoints")
    (run_name,) = os.listdir(cwd / "checkpoints" / project)
    assert " " in run_name
    assert f"in {quoted(os.path.join('checkpoints', project, run_name))}" in out
    assert "+run_name=NAME" in out


@pytest.mark.parametrize("label", ["checkpoint", "training state", "metrics"])
def test_printed_paths_are_one_shell_word_that_exists(default_named_run, label):
    cwd, out = default_named_run
    words = shlex.split(printed(out, label))
    assert len(words) == 1 and " " in words[0]
    assert os.path.exists(cwd / words[0])


def test_the_printed_evaluate_command_runs_verbatim(default_named_run):
    cwd, out = default_named_run
    command = printed(out, "evaluate")
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
           "WANDB_MODE": "disabled"}
    result = subprocess.run(command, shell=True, cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "[all] exact accuracy" in result.stdout
    checkpoint = shlex.split(printed(out, "checkpoint"))[0]
    assert os.path.isfile(cwd / f"{os.path.dirname(checkpoint)}/eval_{os.path.basename(checkpoint)}/metrics.json")
