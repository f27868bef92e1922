"""`--help` of every argparse command (builders, generators, benchmarks, visualize.py, kaggle.adapt): every option
has a line of help, and every option with a value to show shows its default exactly once (utils.cli.new_parser)."""
import argparse
import importlib
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT
from utils.cli import undescribed_options

# Every argparse entry point: module -> how its docstring runs it (after `python`).
CLI_COMMANDS = {
    "dataset.build_sudoku_dataset": ["dataset/build_sudoku_dataset.py"],
    "dataset.build_maze_dataset": ["dataset/build_maze_dataset.py"],
    "dataset.build_arc_dataset": ["dataset/build_arc_dataset.py"],
    "dataset.assemble_arc_data": ["dataset/assemble_arc_data.py"],
    "dataset.build_copy_dataset": ["dataset/build_copy_dataset.py"],
    "dataset.generate_sudoku": ["dataset/generate_sudoku.py"],
    "dataset.generate_maze": ["dataset/generate_maze.py"],
    "visualize": ["visualize.py"],
    "benchmarks.build_arc": ["benchmarks/build_arc.py"],
    "benchmarks.eval_arc": ["benchmarks/eval_arc.py"],
    "benchmarks.generators": ["benchmarks/generators.py"],
    "benchmarks.gpu_check": ["benchmarks/gpu_check.py"],
    "benchmarks.lma_speed": ["benchmarks/lma_speed.py"],
    "benchmarks.train_step": ["benchmarks/train_step.py"],
    "kaggle.adapt": ["-m", "kaggle.adapt"],
}


def build_parser(module_name: str) -> argparse.ArgumentParser:
    module = importlib.import_module(module_name)
    assert callable(getattr(module, "build_parser", None)), f"{module_name} has no build_parser()"
    parser = module.build_parser()
    assert isinstance(parser, argparse.ArgumentParser)
    return parser


def parsers(parser: argparse.ArgumentParser, name: str = "") -> list[tuple[str, argparse.ArgumentParser]]:
    """The parser and those of its subcommands, with their command names."""
    found = [(name, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command, sub in action.choices.items():
                found += parsers(sub, f"{name} {command}".strip())
    return found


def listed(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The actions --help lists (not -h itself, not hidden internal flags, not the subcommand chooser)."""
    return [a for a in parser._actions if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
            and a.help != argparse.SUPPRESS]


def has_value_to_show(action: argparse.Action) -> bool:
    default = action.default
    return not (default is None or default is False or (isinstance(default, list) and not default))


def packed(text: str) -> str:
    """Text without whitespace: comparisons unaffected by how the help is wrapped."""
    return "".join(text.split())


def options_help(parser: argparse.ArgumentParser) -> str:
    """format_help() without the usage line (the only part that depends on `prog`)."""
    usage, text = parser.format_usage(), parser.format_help()
    assert text.startswith(usage)
    return text[len(usage):]


@pytest.mark.parametrize("module_name", CLI_COMMANDS)
def test_every_option_is_described(module_name):
    assert undescribed_options(build_parser(module_name)) == []


@pytest.mark.parametrize("module_name", CLI_COMMANDS)
def test_every_default_is_shown_once(module_name):
    for command, parser in parsers(build_parser(module_name)):
        text = packed(options_help(parser))
        shown = 0
        for action in listed(parser):
            entry = packed(parser._get_formatter()._expand_help(action))
            where = f"{module_name} {command} {'/'.join(action.option_strings) or action.dest}: {entry!r}"
            assert entry in text, where
            count = entry.count("(default:")
            if has_value_to_show(action) and action.option_strings:
                assert count == 1, where
            else:
                assert count <= 1, where
            shown += count
        assert text.count("(default:") == shown, f"{module_name} {command}: a default shown twice"


@pytest.mark.parametrize("module_name", CLI_COMMANDS)
def test_help_lists_every_option(module_name):
    for command, parser in parsers(build_parser(module_name)):
        text = options_help(parser)
        for action in listed(parser):
            for name in action.option_strings or [action.metavar or action.dest]:
                assert name in text, f"{module_name} {command}: {name} is not in --help"


@pytest.mark.integration
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
