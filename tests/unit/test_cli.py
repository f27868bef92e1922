"""`--help` of the key=value commands (pretrain.py, evaluate.py, predict.py): generated from the typed configs,
so every key is listed with its description and the value it would take, and the listing cannot drift."""
import re
import subprocess
import sys

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
from utils.cli import undescribed_fields

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


def test_pretrain_help_bad_override_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "pretrain.py", "arch=nope", "--help"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("error: Cannot compose the configuration cfg_pretrain with ['arch=nope']")
    assert "Traceback" not in result.stderr and "Config search path" not in result.stderr


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


@pytest.mark.integration
@pytest.mark.parametrize("argv", [["pretrain.py", "--help"], ["pretrain.py", "arch=hrm", "-h"],
                                  ["evaluate.py", "--help"], ["predict.py", "--help"]])
def test_help_commands_as_typed(argv):
    result = subprocess.run([sys.executable, *argv], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "checkpoint" in result.stdout and result.stderr == ""


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
