"""Run-directory names are spelled once, in rundir/layout.py, and built and parsed there.

The scan reads every string literal of every tracked non-test Python file (f-string pieces included;
docstrings and comments are documentation and not read) and fails where one spells a run-directory name:
a whole fixed name (`all_config.yaml`, `state.pt`, ...), or the start of a numbered one that code completes
(`step_` + a number or `{`, `rank{`, `"rank" + ...`), or a placeholder naming one in a message (`step_N`,
`step_best`). Metric keys, config keys and words that merely contain the letters (`compile_step_s`,
`"rank"` as a dict key, `rank {r}:`) are not names and do not count.
"""
import ast
import os
import re
import subprocess
from types import SimpleNamespace

import pytest

from rundir import layout
from rundir.states import prune_checkpoints, remove_stale_temporaries
from tests.helpers import REPO_ROOT

LAYOUT = "rundir/layout.py"

# A literal piece spelling a run-directory name (each rule is checked to fire on the layout module itself).
FIXED_NAMES = ("all_config.yaml", "metrics.jsonl", "best.json", "state.pt", "run.lock", "wandb_id",
               "train_state_step_", "_all_preds")
PATTERNS = {
    **{name: re.compile(re.escape(name)) for name in FIXED_NAMES},
    "metrics.json": re.compile(r"metrics\.json(?!l)"),
    # step_N being built (a number or a placeholder follows, or the piece ends before a value), or named.
    "step_": re.compile(r"step_(?=\d|\{|$)|(?<!\w)step_(?=N\b|best\b)"),
    "rank<r>": re.compile(r"(?<!\w)rank(?=\d|\{|\.pt)"),
}
RANK_BEFORE_VALUE = re.compile(r"(?<!\w)rank$")  # f"rank{r}" or "rank" + str(r)


def _docstring_nodes(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                found.add(id(first.value))
    return found


def _builds_on(node: ast.AST) -> set[int]:
    """String constants followed by a computed value: f-string pieces before a `{...}`, the left side of `+`."""
    followed = set()
    for parent in ast.walk(node):
        if isinstance(parent, ast.JoinedStr):
            for piece, after in zip(parent.values, parent.values[1:]):
                if isinstance(piece, ast.Constant) and isinstance(after, ast.FormattedValue):
                    followed.add(id(piece))
        elif isinstance(parent, ast.BinOp) and isinstance(parent.op, ast.Add) and isinstance(parent.left, ast.Constant):
            followed.add(id(parent.left))
    return followed


def spelled_names(source: str) -> list[tuple[int, str, str]]:
    """(line, rule, literal) for every non-docstring string literal of `source` that spells a run-directory name."""
    tree = ast.parse(source)
    docstrings, followed = _docstring_nodes(tree), _builds_on(tree)
    hits = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or id(node) in docstrings:
            continue
        rules = [rule for rule, pattern in PATTERNS.items() if pattern.search(node.value)]
        if id(node) in followed and RANK_BEFORE_VALUE.search(node.value) and "rank<r>" not in rules:
            rules.append("rank<r>")
        hits += [(node.lineno, rule, node.value) for rule in rules]
    return hits


def tracked_sources() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    return [path for path in listed.stdout.split() if not path.startswith("tests/")]


def test_no_file_but_the_layout_spells_a_run_directory_name():
    sources = tracked_sources()
    # The scan covers what reads and writes run directories (not vacuous: a broken listing fails here).
    assert {LAYOUT, "rundir/states.py", "rundir/lock.py", "rundir/metrics.py", "rundir/hub.py",
            "training/checkpointing.py", "training/best.py", "training/loop.py", "training/report.py",
            "training/evaluation.py", "evaluate.py", "predict.py", "visualize.py", "kaggle/adapt.py",
            "viz/data.py", "viz/curves.py"} <= set(sources)
    assert len(sources) > 50
    offenders = []
    for path in sources:
        if path == LAYOUT:
            continue
        with open(os.path.join(REPO_ROOT, path), encoding="utf-8") as f:
            for line, rule, literal in spelled_names(f.read()):
                offenders.append(f"{path}:{line}: {rule} in {literal!r}")
    assert offenders == [], "spell these names with rundir.layout:\n" + "\n".join(offenders)


def test_the_layout_module_spells_every_name():
    with open(os.path.join(REPO_ROOT, LAYOUT), encoding="utf-8") as f:
        rules = {rule for _, rule, _ in spelled_names(f.read())}
    assert rules == set(PATTERNS)


@pytest.mark.parametrize("source", [
    'p = os.path.join(d, f"step_{step}")', 'p = "step_" + str(n)', 'p = "step_12"', 'p = f"rank{r}.pt"',
    'p = "rank" + str(r)', 'p = "rank0.pt"', 'p = os.path.join(d, "state.pt")', 'm = "no all_config.yaml here"',
    'h = "give a step_N file"', 'h = f"keep step_best in {d}"', 'p = f"{d}/metrics.json"', 'p = "x_all_preds.0"',
    'p = f"train_state_step_{n}"', 'p = "run.lock"', 'p = "wandb_id"', 'p = "best.json"', 'p = "metrics.jsonl"',
])
def test_a_spelled_name_is_found(source):
    assert spelled_names(source)


@pytest.mark.parametrize("source", [
    'k = "train/steps"', 'k = {"compile_step_s": 1.0}', 'holder = {"rank": 0}', 'e = f"rank {rank}: stopped"',
    'k = "halt_max_steps"', 'k = "stop_at_step"', 'def f():\n    """Writes step_N and state.pt."""\n',
    '"""all_config.yaml, rank<r>.pt"""', '# state.pt\nx = 1', 'k = "first_step_time"',
])
def test_words_that_are_no_names_are_not_found(source):
    assert spelled_names(source) == []


# ---------------------------------------------------------------------------------------------
# The layout builds and parses the same names
# ---------------------------------------------------------------------------------------------
def test_names_round_trip(tmp_path):
    run_dir = str(tmp_path)
    for step in (3, 10, 2):
        open(layout.weights_path(run_dir, step), "wb").close()
        os.makedirs(layout.train_state_dir(run_dir, step))
        open(layout.outputs_path(run_dir, step, rank=0), "wb").close()
        open(layout.outputs_path(run_dir, step, rank=1), "wb").close()
    os.makedirs(layout.temporary_train_state_dir(layout.train_state_dir(run_dir, 11)))
    open(os.path.join(run_dir, layout.BEST_WEIGHTS), "wb").close()
    assert layout.weight_steps(run_dir) == [2, 3, 10]  # numerically, step_best and outputs aside
    assert [step for step, _ in layout.list_train_states(run_dir)] == [2, 3, 10]  # the .tmp one is not complete
    assert layout.temporary_train_states(run_dir) == [layout.temporary_train_state_dir(
        layout.train_state_dir(run_dir, 11))]
    assert layout.outputs_steps(run_dir, rank=1) == [2, 3, 10]
    assert layout.weights_step(os.path.basename(layout.weights_path(run_dir, 7))) == 7
    assert layout.weights_step(layout.BEST_WEIGHTS) is None
    assert layout.weights_step(layout.outputs_name(7, 0)) is None
    assert layout.config_beside(layout.weights_path(run_dir, 7)) == os.path.join(run_dir, layout.CONFIG_FILE)


def test_prune_keeps_the_newest_by_number_and_the_best(tmp_path):
    run_dir = str(tmp_path)
    for step in (2, 9, 10, 11):
        open(layout.weights_path(run_dir, step), "wb").close()
        os.makedirs(layout.train_state_dir(run_dir, step))
    open(os.path.join(run_dir, layout.BEST_WEIGHTS), "wb").close()
    os.makedirs(layout.temporary_train_state_dir(layout.train_state_dir(run_dir, 12)))
    prune_checkpoints(run_dir, keep_last=2, newest=11)
    assert layout.weight_steps(run_dir) == [10, 11]
    assert [step for step, _ in layout.list_train_states(run_dir)] == [10, 11]
    assert os.path.exists(os.path.join(run_dir, layout.BEST_WEIGHTS))
    remove_stale_temporaries(run_dir)
    assert layout.temporary_train_states(run_dir) == []


def test_prune_removes_only_the_runs_own_checkpoints_and_never_its_newest(tmp_path, capsys):
    """Steps past the one just saved are not this run's; a state holding a user's file is not pruned."""
    run_dir = str(tmp_path)
    for step in (3, 5, 8, 3200):
        open(layout.weights_path(run_dir, step), "wb").close()
        os.makedirs(layout.train_state_dir(run_dir, step))
        open(layout.shared_state_path(layout.train_state_dir(run_dir, step)), "wb").close()
    open(os.path.join(layout.train_state_dir(run_dir, 3), "notes.txt"), "w").close()
    prune_checkpoints(run_dir, keep_last=1, newest=8)
    assert layout.weight_steps(run_dir) == [8, 3200]
    assert [step for step, _ in layout.list_train_states(run_dir)] == [3, 8, 3200]
    assert "leaves" in capsys.readouterr().out and os.path.exists(os.path.join(layout.train_state_dir(run_dir, 3),
                                                                              "notes.txt"))


def test_foreign_entries_name_what_no_run_wrote(tmp_path):
    run_dir = str(tmp_path)
    state = layout.train_state_dir(run_dir, 4)
    os.makedirs(state)
    for name in (layout.shared_state_path(state), layout.rank_state_path(state, 0), layout.weights_path(run_dir, 4),
                 layout.outputs_path(run_dir, 4, 1), os.path.join(run_dir, layout.CONFIG_FILE),
                 os.path.join(run_dir, layout.METRICS_FILE), os.path.join(run_dir, layout.BEST_WEIGHTS),
                 os.path.join(run_dir, layout.BEST_FILE), os.path.join(run_dir, "trm.py"),
                 os.path.join(run_dir, layout.CONFIG_FILE) + ".tmp-123-0123abcd"):
        open(name, "wb").close()
    for directory in (layout.evaluator_dir(run_dir, "ARC", 4), layout.default_eval_dir(layout.weights_path(run_dir, 4)),
                      os.path.join(run_dir, layout.WANDB_DIR), layout.abandoned_dir(run_dir, 2)):
        os.makedirs(os.path.join(directory, "anything"))
    assert layout.foreign_entries(run_dir) == []
    open(os.path.join(state, "notes.txt"), "w").close()
    open(os.path.join(run_dir, "thesis.tex"), "w").close()
    os.makedirs(os.path.join(run_dir, "my_runs"))
    os.symlink(run_dir, os.path.join(run_dir, "step_9"))
    assert layout.foreign_entries(run_dir) == ["my_runs/", "step_9", "thesis.tex",
                                               f"{os.path.basename(state)}/notes.txt"]


def test_a_resume_from_an_older_state_moves_the_later_attempt_aside(tmp_path, capsys):
    import json

    from rundir.lineage import abandon_later_attempt
    run_dir = str(tmp_path)
    for step in (4, 8, 12):
        open(layout.weights_path(run_dir, step), "wb").close()
        os.makedirs(layout.train_state_dir(run_dir, step))
        open(layout.outputs_path(run_dir, step), "wb").close()
        os.makedirs(layout.evaluator_dir(run_dir, "ARC", step))
    os.makedirs(layout.default_eval_dir(layout.weights_path(run_dir, 12)))
    open(os.path.join(run_dir, layout.BEST_WEIGHTS), "wb").close()
    with open(os.path.join(run_dir, layout.BEST_FILE), "w") as f:
        json.dump({"step": 8, "metric": "m", "value": 1.0, "mode": "max"}, f)
    with open(os.path.join(run_dir, layout.METRICS_FILE), "w") as f:
        f.write('{"step": 12}\n')
    moved = abandon_later_attempt(run_dir, 4)
    assert moved == os.path.join(run_dir, "abandoned_after_step_4")
    assert "moved what the abandoned attempt saved after step 4" in capsys.readouterr().out
    assert sorted(os.listdir(moved)) == sorted([
        layout.BEST_FILE, layout.BEST_WEIGHTS, layout.METRICS_FILE, *(os.path.basename(p) for p in (
            layout.default_eval_dir(layout.weights_path(run_dir, 12)),
            *(f(run_dir, s) for s in (8, 12) for f in (layout.weights_path, layout.train_state_dir,
                                                        layout.outputs_path)),
            *(layout.evaluator_dir(run_dir, "ARC", s) for s in (8, 12))))])
    assert layout.weight_steps(run_dir) == [4] and os.path.isfile(os.path.join(run_dir, layout.METRICS_FILE))
    assert abandon_later_attempt(run_dir, 4) is None  # nothing after step 4 any more
    open(layout.weights_path(run_dir, 6), "wb").close()
    assert abandon_later_attempt(run_dir, 4) == moved + "-2"  # a second abandoned attempt after the same step


def test_a_move_aside_cut_short_by_a_kill_is_finished_and_auto_never_resumes_the_abandoned_attempt(tmp_path,
                                                                                                     monkeypatch):
    """Issue 23 A2: the move aside is several renames; a kill between them left later states of the abandoned
    attempt in the run directory, and resume=auto then continued the abandoned attempt."""
    from rundir import lineage
    from training.checkpointing import find_resume_dir
    run_dir = str(tmp_path)
    for step in (4, 8, 12):
        open(layout.weights_path(run_dir, step), "wb").close()
        os.makedirs(layout.train_state_dir(run_dir, step))
        open(layout.shared_state_path(layout.train_state_dir(run_dir, step)), "wb").close()
    replace, moved = os.replace, []

    def killed_after_one(src, dst):
        if moved:
            raise KeyboardInterrupt  # stands for SIGKILL: nothing after this runs
        moved.append(src)
        replace(src, dst)

    monkeypatch.setattr(lineage.os, "replace", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        lineage.abandon_later_attempt(run_dir, 4)
    monkeypatch.setattr(lineage.os, "replace", replace)
    monkeypatch.setattr("rundir.states.missing_state_files", lambda path: [])
    monkeypatch.setattr("training.checkpointing.missing_state_files", lambda path: [])
    config = SimpleNamespace(resume="auto", checkpoint_path=run_dir)
    assert find_resume_dir(config, announce=False) == layout.train_state_dir(run_dir, 4)
    destination = lineage.abandon_later_attempt(run_dir, 4)  # the rerun finishes the move into the same folder
    assert destination == layout.abandoned_dir(run_dir, 4).removesuffix("-2")
    assert layout.weight_steps(run_dir) == [4] and [s for s, _ in layout.list_train_states(run_dir)] == [4]
    assert sorted(os.listdir(destination)) == sorted(os.path.basename(f(run_dir, s)) for s in (8, 12)
                                                     for f in (layout.weights_path, layout.train_state_dir))
    assert find_resume_dir(config, announce=False) == layout.train_state_dir(run_dir, 4)


def test_issue26_evaluation_choices_name_the_default_output_dir(tmp_path):
    """evaluate.py's ablations (tta, halt_early, other data, other evaluators) each get their own directory, and a
    lineage move still takes them with the step they belong to."""
    import evaluate

    run_dir = str(tmp_path)
    weights = layout.weights_path(run_dir, 12)
    checkpoint = type("Checkpoint", (), {"weights": weights})  # default_output_dir reads only .weights

    def output_dir(*argv: str) -> str:
        return evaluate.default_output_dir(evaluate.parse_args([f"checkpoint={weights}", *argv]), checkpoint)

    names = [os.path.basename(output_dir(*argv)) for argv in (
        [], ["tta=8"], ["tta=8", "tta_sudoku_check=true"], ["halt_early=true"], ["tta=8", "halt_early=true"],
        ["data_paths=[data/maze-a,data/maze-b/]"], ["evaluators=[]"], ["global_batch_size=4"])]
    assert names == ["eval_step_12", "eval_step_12+tta8", "eval_step_12+tta8+tta_sudoku_check",
                     "eval_step_12+halt_early", "eval_step_12+tta8+halt_early", "eval_step_12+data-maze-a-maze-b",
                     "eval_step_12+evaluators-none", "eval_step_12"]  # the batch size does not change results
    for name in names[:3]:
        os.makedirs(os.path.join(run_dir, name))
    os.makedirs(layout.default_eval_dir(layout.weights_path(run_dir, 4), ["tta8"]))
    assert layout.entries_after(run_dir, 8) == sorted(names[:3])
