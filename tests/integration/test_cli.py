"""The commands' --help as a user types it (subprocesses): every argparse command and subcommand exits 0 listing
every option, the key=value commands print their help, and a bad override with --help is one line."""
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT
from tests.unit.test_cli import CLI_COMMANDS, build_parser, listed, parsers


@pytest.mark.parametrize("module_name", CLI_COMMANDS)
def test_help_command_runs(module_name):
    """`python <file> [command] --help`, as a user runs it: exit status 0 and every option listed."""
    for command, parser in parsers(build_parser(module_name)):  # subcommands: `python visualize.py curves --help`
        proc = subprocess.run([sys.executable, *CLI_COMMANDS[module_name], *command.split(), "--help"],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr[-2000:]
        for action in listed(parser):
            for name in action.option_strings or [action.metavar or action.dest]:
                assert name in proc.stdout, f"{module_name} {command}: {name} is not in --help"


def test_pretrain_help_bad_override_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "pretrain.py", "arch=nope", "--help"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("error: Cannot compose the configuration cfg_pretrain with ['arch=nope']")
    assert "Traceback" not in result.stderr and "Config search path" not in result.stderr


@pytest.mark.parametrize("argv", [["pretrain.py", "--help"], ["pretrain.py", "arch=hrm", "-h"],
                                  ["evaluate.py", "--help"], ["predict.py", "--help"]])
def test_help_commands_as_typed(argv):
    result = subprocess.run([sys.executable, *argv], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "checkpoint" in result.stdout and result.stderr == ""
