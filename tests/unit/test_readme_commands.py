"""Every command in README.md and docs/*.md must still parse against the code, so the text cannot drift.

Commands are taken from the ```bash blocks of the README and of the design notes. Training commands
(`python pretrain.py`, also under `torchrun`) are composed with Hydra exactly as written and the model is
built from them (with a stand-in dataset description; a sweep, `-m`, once per job); builder, evaluation,
picture and benchmark commands go through their own argument parsers. What each command then does is covered
by the other test files (e.g. test_quickstart, test_arc_dataset, test_sudoku_maze_datasets, test_evaluate,
test_pictures, test_resume, test_sweeps).
"""
import glob
import importlib
import os
import re
import shlex

import pytest

from dataset.common import PuzzleDatasetMetadata
from pretrain import MULTIRUN_FLAGS
from tests.helpers import REPO_ROOT, build_head, compose_config, compose_hydra, sweep_jobs
from training.config import parse_config
from training.sweeps import sweep_job_names

SKIP_PROGRAMS = {"pip", "source", "cd", "export"}


SHELL_ASSIGNMENT = re.compile(r"(\w+)=(\S+)")

# The paper's commands (README "Training"), which the README must give character for character.
PAPER_COMMANDS = [
    "python -m dataset.build_arc_dataset --input-file-prefix kaggle/combined/arc-agi --output-dir "
    "data/arc1concept-aug-1000 --subsets training evaluation concept --test-set-name evaluation",
    "python -m dataset.build_arc_dataset --input-file-prefix kaggle/combined/arc-agi --output-dir "
    "data/arc2concept-aug-1000 --subsets training2 evaluation2 concept --test-set-name evaluation2",
    "python dataset/build_sudoku_dataset.py --output-dir data/sudoku-extreme-1k-aug-1000 --subsample-size 1000 "
    "--num-aug 1000",
    "python dataset/build_maze_dataset.py",
    'run_name="pretrain_att_arc1concept_4"',
    "torchrun --nproc-per-node 4 --rdzv_backend=c10d --rdzv_endpoint=localhost:0 --nnodes=1 pretrain.py arch=trm "
    'data_paths="[data/arc1concept-aug-1000]" arch.L_layers=2 arch.H_cycles=3 arch.L_cycles=4 +run_name=${run_name} '
    "ema=True",
    'run_name="pretrain_mlp_t_sudoku"',
    'python pretrain.py arch=trm data_paths="[data/sudoku-extreme-1k-aug-1000]" evaluators="[]" epochs=50000 '
    "eval_interval=5000 lr=1e-4 puzzle_emb_lr=1e-4 weight_decay=1.0 puzzle_emb_weight_decay=1.0 arch.mlp_t=True "
    "arch.pos_encodings=none arch.L_layers=2 arch.H_cycles=3 arch.L_cycles=6 +run_name=${run_name} ema=True",
    'run_name="pretrain_att_sudoku"',
    'python pretrain.py arch=trm data_paths="[data/sudoku-extreme-1k-aug-1000]" evaluators="[]" epochs=50000 '
    "eval_interval=5000 lr=1e-4 puzzle_emb_lr=1e-4 weight_decay=1.0 puzzle_emb_weight_decay=1.0 "
    "arch.L_layers=2 arch.H_cycles=3 arch.L_cycles=6 +run_name=${run_name} ema=True",
    'run_name="pretrain_att_maze30x30"',
    "torchrun --nproc-per-node 4 --rdzv_backend=c10d --rdzv_endpoint=localhost:0 --nnodes=1 pretrain.py arch=trm "
    'data_paths="[data/maze-30x30-hard-1k]" evaluators="[]" epochs=50000 eval_interval=5000 lr=1e-4 '
    "puzzle_emb_lr=1e-4 weight_decay=1.0 puzzle_emb_weight_decay=1.0 arch.L_layers=2 arch.H_cycles=3 "
    "arch.L_cycles=4 +run_name=${run_name} ema=True",
]


def strip_comment(line: str) -> str:
    return line.split("  #")[0].split(" # ")[0].strip()


DOCUMENTS = ["README.md", *sorted(os.path.join("docs", os.path.basename(p))
                                  for p in glob.glob(os.path.join(REPO_ROOT, "docs", "*.md")))]


def readme_lines(document: str = "README.md") -> list[str]:
    """Every command line of a document's bash blocks, continuations joined, comments removed."""
    with open(os.path.join(REPO_ROOT, document)) as f:
        text = f.read()
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = strip_comment(line)
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def readme_commands(document: str = "README.md") -> list[str]:
    """A document's commands, with shell variables set by `name="value"` lines substituted as bash would."""
    commands, variables = [], {}
    for line in readme_lines(document):
        words = shlex.split(line)
        assignment = SHELL_ASSIGNMENT.fullmatch(words[0]) if len(words) == 1 else None
        if assignment:
            variables[assignment.group(1)] = assignment.group(2)
            continue
        for name, value in variables.items():
            line = line.replace("${" + name + "}", value)
        commands.extend(part.strip() for part in line.split("&&"))
    return [c for c in commands if shlex.split(c)[0] not in SKIP_PROGRAMS and "venv" not in c]


def test_paper_commands_are_in_the_readme_verbatim():
    lines = readme_lines()
    missing = [command for command in PAPER_COMMANDS if command not in lines]
    assert not missing, f"the README must give these paper commands as written: {missing}"


def split_program(command: str) -> tuple[str, list[str]]:
    """('pretrain.py' | 'dataset.build_arc_dataset' | ..., args), unwrapping python/torchrun launchers."""
    words = shlex.split(command)
    if words[0] == "torchrun":
        script = next(i for i, w in enumerate(words) if w.endswith(".py"))
        return words[script], words[script + 1:]
    assert words[0] == "python", f"unexpected program in README: {command}"
    if words[1] == "-m":
        return words[2], words[3:]
    return words[1], words[2:]


def fill_placeholders(args: list[str]) -> list[str]:
    """The README writes `...` for "your other arguments" and `key=...` for "your value"."""
    return [a.replace("=...", "=PLACEHOLDER") for a in args if a != "..."]


STAND_IN_METADATA = PuzzleDatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=12, seq_len=81,
                                          num_puzzle_identifiers=10, total_groups=10, mean_puzzle_examples=1.0,
                                          total_puzzles=10, sets=["all"])


def check_training_command(args: list[str]) -> None:
    """The command composes; a sweep (-m) is checked as pretrain.py checks it, and each of its jobs composes."""
    config_name = "cfg_pretrain"
    if "--config-name" in args:
        i = args.index("--config-name")
        config_name, args = args[i + 1], args[:i] + args[i + 2:]
    sweep = any(a in MULTIRUN_FLAGS for a in args)
    jobs = sweep_jobs([a for a in args if a not in MULTIRUN_FLAGS]) if sweep else [args]
    for num, job in enumerate(jobs):
        raw = compose_config(job, config_name=config_name)
        if sweep:  # named as pretrain.py names a sweep's jobs
            hydra = compose_hydra(job, config_name)
            raw = sweep_job_names(raw, hydra.sweep.dir, hydra.job.override_dirname, num)
        config = parse_config(raw)
        model = build_head(config.model_copy(update={"global_batch_size": 8}), STAND_IN_METADATA)
        assert sum(p.numel() for p in model.parameters()) > 0


def module_for(program: str):
    name = program.removesuffix(".py").replace("/", ".")
    return importlib.import_module(name)


COMMANDS = readme_commands()
DOCUMENT_COMMANDS = list(dict.fromkeys(c for document in DOCUMENTS for c in readme_commands(document)))


def test_readme_has_commands():
    programs = {split_program(c)[0] for c in COMMANDS}
    assert {"pretrain.py", "evaluate.py", "visualize.py", "dataset.build_arc_dataset"} <= programs, programs


@pytest.mark.parametrize("command", DOCUMENT_COMMANDS, ids=[c[:60] for c in DOCUMENT_COMMANDS])
def test_readme_command_parses(command, tmp_path):
    program, args = split_program(command)
    args = fill_placeholders(args)
    if program == "pytest":
        return  # the test command itself: this run
    if program == "pretrain.py":
        check_training_command(args)
        return
    module = module_for(program)
    if hasattr(module, "parse_args"):
        module.parse_args(args)
    elif program in ("dataset/build_copy_dataset.py", "dataset.build_copy_dataset"):
        module.main(["--output-dir", str(tmp_path / "copy"), *args[2:]])  # small and quick: really run it
    else:
        assert hasattr(module, "main"), f"{program}: no main() to run"


