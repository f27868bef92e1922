"""The command-line faces' help and arguments, checked in process.

`--help` of every argparse command (builders, generators, benchmarks, visualize.py, kaggle.adapt): every option has
a line of help, and every option with a value to show shows its default exactly once (utils.cli.new_parser).
`--help` of the key=value commands (pretrain.py, evaluate.py, predict.py) is generated from the typed configs, so
every key is listed with its description and the value it would take, and the listing cannot drift. The commands
the trainer prints are quoted for the shell. (The commands as typed: tests/integration/test_cli.py.)"""
import argparse
import importlib
import os
import re
import shlex
import signal
import time

import pytest
from hydra import compose, initialize_config_dir

import evaluate
import predict
import pretrain
from evaluators.base import EvaluatorConfig
from models.arch import DERIVED_MODEL_KEYS, ArchConfig, LossConfig
from models.recursive_reasoning.config import CONFIG_CLASSES
from tests.helpers import REPO_ROOT
from training.config import GeneratedDataConfig, PretrainConfig
from utils.cli import command_line, undescribed_fields, undescribed_options
from utils.errors import ConfigError

# ---------------------------------------------------------------------------------------------
# argparse commands
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# key=value commands: the help generated from the typed configs
# ---------------------------------------------------------------------------------------------
TYPED_CONFIGS = [PretrainConfig, ArchConfig, LossConfig, EvaluatorConfig, GeneratedDataConfig,
                 evaluate.EvaluateConfig, predict.PredictConfig, *CONFIG_CLASSES.values()]


def one_line(text: str) -> str:
    return " ".join(text.split())


def help_entries(text: str) -> dict[str, str]:
    """`key` (with its `+`/prefix) -> (shown value, description) of a generated key listing."""
    entries, key = {}, None
    for line in text.splitlines():
        match = re.fullmatch(r"  (\+?[\w.]+)=(.*)", line)
        if match:
            key = match.group(1)
            entries[key] = [match.group(2), ""]
        elif key is not None and line.startswith(" " * 6):
            entries[key][1] = (entries[key][1] + " " + line.strip()).strip()
        else:
            key = None
    return {k: (value, description) for k, (value, description) in entries.items()}


@pytest.mark.parametrize("model", TYPED_CONFIGS, ids=lambda model: model.__name__)
def test_every_key_has_a_description(model):
    assert undescribed_fields(model) == []


def pretrain_help(capsys, argv: list[str]) -> str:
    pretrain.print_help(argv)
    return capsys.readouterr().out


@pytest.mark.parametrize("arch", ["trm", "hrm", "trm_singlez", "trm_hier6", "transformers_baseline"])
def test_pretrain_help_lists_every_key_with_its_value(capsys, arch):
    out = pretrain_help(capsys, [f"arch={arch}", "global_batch_size=32", "+run_name=mine", "--help"])
    entries = {key.lstrip("+"): (value, description) for key, (value, description) in help_entries(out).items()}
    for name, field in PretrainConfig.model_fields.items():
        if name != "arch":
            assert entries[name][1] == one_line(field.description), name
    for name, field in GeneratedDataConfig.model_fields.items():
        assert entries[f"generate_if_missing.{name}"][1] == one_line(field.description)
    config_cls = CONFIG_CLASSES[entries["arch.name"][0]]
    assert config_cls is CONFIG_CLASSES[next(k for k in CONFIG_CLASSES if k.split("@")[0].endswith(f".{arch}"))]
    for name, field in config_cls.model_fields.items():
        if name not in DERIVED_MODEL_KEYS:
            assert entries[f"arch.{name}"][1] == one_line(field.description), name
    assert not any(f"arch.{name}" in entries for name in DERIVED_MODEL_KEYS)  # the trainer sets those
    assert entries["arch.loss.loss_type"][0] == "stablemax_cross_entropy"
    # The values are the composed ones: the command's overrides, the arch YAML's, the fields' defaults.
    assert entries["global_batch_size"][0] == "32"
    assert entries["run_name"][0] == "mine"
    assert entries["epochs"][0] == "100000"
    assert entries["resume"][0] == "null"
    if arch == "hrm":
        assert entries["arch.H_layers"][0] == "4"


def test_pretrain_help_values_can_be_typed_back(capsys):
    """The listed `key=value` overrides (with their `+` where shown) are accepted by Hydra as written and
    change nothing; keys shown without `+` are in the YAML, those with `+` are not (Hydra refuses them bare)."""
    from omegaconf import OmegaConf

    out = pretrain_help(capsys, ["--help"])
    entries = {key: value for key, (value, _) in help_entries(out).items()
               if value != "required" and "generate_if_missing." not in key}
    assert "+run_name" in entries and "run_name" not in entries  # the paper's `+run_name=...`
    with initialize_config_dir(config_dir=pretrain.CONFIG_DIR, version_base="1.3"):
        plain = OmegaConf.to_container(compose(config_name="cfg_pretrain"), resolve=True)
        typed = OmegaConf.to_container(compose(config_name="cfg_pretrain", overrides=[
            f"{key}={value}" for key, value in entries.items()]), resolve=True)
        for key in entries:
            if not key.startswith("+"):
                assert OmegaConf.select(OmegaConf.create(plain), key, default="absent") != "absent", key
        for key in [key for key in entries if key.startswith("+")]:
            with pytest.raises(Exception, match="[Cc]ould not override|No match"):
                compose(config_name="cfg_pretrain", overrides=[f"{key[1:]}={entries[key]}"])
    added = {key.lstrip("+") for key in entries if key.startswith("+")}
    assert {k: v for k, v in typed.items() if k not in added and k != "arch"} == \
        {k: v for k, v in plain.items() if k != "arch"}
    assert {k: v for k, v in typed["arch"].items() if f"arch.{k}" not in added} == plain["arch"]


def test_pretrain_help_follows_the_config_name(capsys):
    out = pretrain_help(capsys, ["--config-name", "quickstart", "--help"])
    entries = help_entries(out)
    assert "config/quickstart.yaml" in one_line(out)
    assert entries["generate_if_missing.kind"][0] == "sudoku"


@pytest.mark.parametrize("module,model", [(evaluate, evaluate.EvaluateConfig), (predict, predict.PredictConfig)],
                         ids=["evaluate", "predict"])
def test_key_value_command_help_lists_every_key(capsys, module, model):
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    entries = help_entries(capsys.readouterr().out)
    assert set(entries) == set(model.model_fields)
    for name, field in model.model_fields.items():
        assert entries[name][1] == one_line(field.description)
    assert entries["checkpoint"][0] == "required"
    assert entries["device"][0] == "auto" and entries["tta"][0] == "0"


@pytest.mark.parametrize("script", ["evaluate.py", "predict.py"])
def test_unknown_key_points_at_the_help(capsys, script):
    module = evaluate if script == "evaluate.py" else predict
    with pytest.raises(SystemExit) as exit_info:
        module.main(["checkpoint=x", "tta_kk=3"])
    assert exit_info.value.code == f"error: Invalid {script} arguments:\n  tta_kk: unknown key " \
                                   f"(misspelt? `python {script} --help` lists the keys)"


def test_without_arguments_the_help_goes_to_stderr(capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main([])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "checkpoint=required" in captured.err


@pytest.mark.parametrize("module", [evaluate, predict], ids=["evaluate", "predict"])
def test_help_anywhere_on_the_line_prints_the_help(capsys, module):
    """As with pretrain.py, `--help` after some keys still prints the help (not a key=value error)."""
    with pytest.raises(SystemExit) as exit_info:
        module.main(["checkpoint=x", "tta=2", "-h"])
    assert exit_info.value.code == 0
    assert "checkpoint=required" in capsys.readouterr().out


def test_path_keys_are_taken_as_written_and_null_is_the_default():
    args = evaluate.parse_args(["checkpoint=runs/TRM happy-cat/step_8", "output_dir=null", "config=null",
                                "data_paths=[data/a,data/b]"])
    assert args.checkpoint == "runs/TRM happy-cat/step_8"  # no YAML parsing of a path
    assert args.output_dir is None and args.config is None
    assert args.data_paths == ["data/a", "data/b"]
    assert evaluate.parse_args(["checkpoint=1e3"]).checkpoint == "1e3"  # YAML would read a number
    assert predict.parse_args(["checkpoint=x", "config=null", "sudoku=" + "." * 81]).config is None


# ---------------------------------------------------------------------------------------------
# Printed commands
# ---------------------------------------------------------------------------------------------
def test_command_line_quotes_what_the_shell_would_split(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = command_line("evaluate.py", checkpoint="checkpoints/P/TRM happy-cat/step_8", tta=8)
    words = shlex.split(line)
    assert words[0] == "python" and os.path.samefile(tmp_path / words[1], os.path.join(REPO_ROOT, "evaluate.py"))
    assert words[2:] == ["checkpoint=checkpoints/P/TRM happy-cat/step_8", "tta=8"]


@pytest.mark.parametrize("arg, message", [("global_batch_size=0", "global_batch_size"),
                                          ("save_outputs=[inputs,bogus]", "save_outputs: unknown output.*bogus")])
def test_issue23_d_evaluate_rejects_bad_keys(arg, message):
    """Issue 23 D: a batch of 0 was silently the training batch; an unknown output name was silently not saved."""
    with pytest.raises(ConfigError, match=message):
        evaluate.parse_args(["checkpoint=x", arg])


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_issue23_c_a_signal_to_evaluate_is_one_line(monkeypatch, capsys, sig, status):
    """Issue 23 C: Ctrl-C on evaluate.py printed a KeyboardInterrupt traceback (and SIGTERM skipped every cleanup);
    both are one line and the conventional status, after the `finally` blocks ran."""
    cleaned = []

    def evaluation(_args, _ctx):
        try:
            os.kill(os.getpid(), sig)
            time.sleep(5)  # the signal arrives here
        finally:
            cleaned.append(True)

    monkeypatch.setattr(evaluate, "run", evaluation)
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["checkpoint=somewhere", "device=cpu"])
    assert exit_info.value.code == status and cleaned == [True]
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"interrupted by {sig.name}: "), lines
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
