"""Comparing runs (issue 26 finding 4): `visualize.py curves` given several runs or a folder of them overlays
their curves, labelled by the config keys that differ, and writes a table of final and best metrics."""
import csv
import json
import os

import pytest
import yaml

import visualize
from viz import compare, curves, overlay

# Two short runs of one sweep that differ in arch.L_cycles (run_name and checkpoint_path differ as always).
# Run "a" peaks before its end; run "b" also has the ARC evaluator's pass@k.
RUN_A = [{"step": 0, "num_params": 1000},
         {"step": 1, "train/lm_loss": 2.0, "train/lr": 1e-4},
         {"step": 2, "train/lm_loss": 1.0, "train/lr": 1e-4},
         {"step": 2, "all/exact_accuracy": 0.5, "all/tta_exact_accuracy": 0.625, "all/lm_loss": 0.9},
         {"step": 3, "train/lm_loss": 1.5, "train/lr": 1e-4},
         {"step": 4, "all/exact_accuracy": 0.25, "all/tta_exact_accuracy": 0.75, "all/lm_loss": 0.8}]
RUN_B = [{"step": 1, "train/lm_loss": 3.0, "train/lr": 1e-4},
         {"step": 2, "train/lm_loss": 0.5, "train/lr": 1e-4},
         {"step": 2, "all/exact_accuracy": 0.75, "ARC/pass@2": 0.5, "ARC/pass@10": 1.0}]


def write_run(run_dir, records, l_cycles=None, lr=1e-4):
    """A run directory as training leaves it: metrics.jsonl and (with `l_cycles`) all_config.yaml."""
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
        f.write("".join(json.dumps(record) + "\n" for record in records))
    if l_cycles is not None:
        config = {"arch": {"name": "trm", "L_cycles": l_cycles, "loss": {"name": "act"}}, "lr": lr,
                  "data_paths": ["data/sudoku"], "run_name": os.path.basename(run_dir), "checkpoint_path": run_dir}
        with open(os.path.join(run_dir, "all_config.yaml"), "w") as f:
            yaml.safe_dump(config, f)
    return str(run_dir)


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sweep"
    write_run(str(root / "a"), RUN_A, l_cycles=1)
    write_run(str(root / "b"), RUN_B, l_cycles=2)
    return str(root)


def test_runs_are_labelled_by_the_key_that_differs(sweep):
    runs = compare.load_runs([sweep])
    assert [run.name for run in runs] == ["a", "b"]
    assert [run.label for run in runs] == ["arch.L_cycles=1", "arch.L_cycles=2"]
    fig = overlay.overlay_figure(runs)
    assert [text.get_text() for text in fig.legends[0].get_texts()] == ["arch.L_cycles=1", "arch.L_cycles=2"]
    accuracy = fig.axes[1]
    assert accuracy.get_title() == "Exact accuracy"
    lines = {line.get_label(): line for line in accuracy.get_lines()}
    assert set(lines) == {"all/exact_accuracy [arch.L_cycles=1]", "all/tta_exact_accuracy [arch.L_cycles=1]",
                          "all/exact_accuracy [arch.L_cycles=2]", "ARC/pass@2 [arch.L_cycles=2]"}
    # one colour per run, one line style per metric
    exact_1, exact_2 = lines["all/exact_accuracy [arch.L_cycles=1]"], lines["all/exact_accuracy [arch.L_cycles=2]"]
    assert exact_1.get_color() != exact_2.get_color()
    assert exact_1.get_linestyle() != lines["all/tta_exact_accuracy [arch.L_cycles=1]"].get_linestyle()


def test_table_holds_final_and_best_in_the_metric_direction(sweep):
    rows = compare.summary_rows(compare.load_runs([sweep]))
    a, b = rows
    assert list(a)[:3] == ["run", "arch.L_cycles", "last step"]
    assert (a["run"], a["arch.L_cycles"], a["last step"], b["arch.L_cycles"], b["last step"]) == ("a", "1", 4, "2", 2)
    # accuracies: the best is the highest, here before the end
    exact = [a[f"all/exact_accuracy {column}"] for column in ("final", "best", "best step")]
    assert exact == [0.25, 0.5, 2]
    assert (a["all/tta_exact_accuracy final"], a["all/tta_exact_accuracy best"]) == (0.75, 0.75)
    # losses: the best is the lowest
    assert (a["train/lm_loss final"], a["train/lm_loss best"], a["train/lm_loss best step"]) == (1.5, 1.0, 2)
    assert (b["train/lm_loss final"], b["train/lm_loss best"]) == (0.5, 0.5)
    # a metric only one run logged is empty for the other; pass@k ordered by k
    assert b["all/tta_exact_accuracy final"] is None and a["ARC/pass@2 best"] is None
    metrics = [c.removesuffix(" final") for c in a if c.endswith(" final")]
    assert metrics == ["ARC/pass@2", "ARC/pass@10", "all/exact_accuracy", "all/tta_exact_accuracy", "train/lm_loss"]


def test_cli_writes_picture_and_tables_that_parse_back(sweep, tmp_path, capsys):
    out = str(tmp_path / "cmp" / "l_cycles.png")
    visualize.main(["curves", os.path.join(sweep, "a"), os.path.join(sweep, "b", "metrics.jsonl"), "--out", out])
    printed = capsys.readouterr().out
    for path in (out, str(tmp_path / "cmp" / "l_cycles.csv"), str(tmp_path / "cmp" / "l_cycles.md")):
        assert os.path.isfile(path) and f"Wrote {path}" in printed
    assert curves.written_here(out)
    with open(tmp_path / "cmp" / "l_cycles.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["run"] for row in rows] == ["a", "b"] and rows[0]["arch.L_cycles"] == "1"
    assert float(rows[0]["all/exact_accuracy best"]) == 0.5 and rows[0]["all/exact_accuracy best step"] == "2"
    assert float(rows[1]["ARC/pass@10 final"]) == 1.0 and rows[0]["ARC/pass@10 final"] == ""
    markdown = (tmp_path / "cmp" / "l_cycles.md").read_text()
    assert markdown in printed  # the table printed is the one written
    header, rule, *body = [[cell.strip() for cell in line.strip().strip("|").split("|")]
                           for line in markdown.splitlines()]
    assert set("".join(rule)) == {"-"} and len(body) == 2
    table = [dict(zip(header, row)) for row in body]
    assert table[0]["all/exact_accuracy final"] == "0.2500"
    assert table[0]["all/exact_accuracy best (step)"] == "0.5000 (2)"
    assert table[1]["train/lm_loss best (step)"] == "0.5000 (2)"


def test_tta_accuracy_is_plotted_for_one_run(sweep):
    fig = curves.curves_figure(os.path.join(sweep, "a"))
    labels = [line.get_label() for line in fig.axes[1].get_lines()]
    assert labels == ["all/exact_accuracy", "all/tta_exact_accuracy"]


def test_one_run_keeps_its_curves_png(sweep, tmp_path, monkeypatch, capsys):
    """One run directory, or a folder holding just one: curves.png in the run directory, no table."""
    monkeypatch.chdir(tmp_path)
    visualize.main(["curves", os.path.join(sweep, "a")])
    visualize.main(["curves", str(tmp_path / "sweep")])  # two runs: the default name in the current directory
    solo = write_run(str(tmp_path / "solo" / "only"), RUN_B, l_cycles=3)
    visualize.main(["curves", str(tmp_path / "solo")])
    printed = capsys.readouterr().out
    assert f"Wrote {os.path.join(sweep, 'a', 'curves.png')}" in printed
    assert f"Wrote {os.path.join(solo, 'curves.png')}" in printed
    assert sorted(os.listdir(tmp_path)) == ["runs.csv", "runs.md", "runs.png", "solo", "sweep"]
    assert printed.count("| run ") == 1


def test_nothing_differs_falls_back_to_names(tmp_path):
    first = write_run(str(tmp_path / "one" / "x"), RUN_A, l_cycles=2)
    second = write_run(str(tmp_path / "two" / "x"), RUN_B, l_cycles=2)  # same name: the path tells them apart
    no_config = write_run(str(tmp_path / "three"), RUN_B)
    assert [r.label for r in compare.load_runs([first, second])] == [os.path.join("one", "x"), os.path.join("two", "x")]
    runs = compare.load_runs([first, no_config])
    assert [r.label for r in runs] == ["x", "three"]
    write_run(str(tmp_path / "four"), RUN_B, l_cycles=3)
    labels = [r.label for r in compare.load_runs([first, second, str(tmp_path / "four")])]
    assert labels == ["arch.L_cycles=2 (one/x)", "arch.L_cycles=2 (two/x)", "arch.L_cycles=3"]


def test_runs_are_found_at_any_depth_but_not_inside_a_run(tmp_path):
    run = write_run(str(tmp_path / "p" / "q" / "run"), RUN_A)
    write_run(os.path.join(run, "abandoned_after_step_2"), RUN_A)  # a moved-aside attempt is part of its run
    assert compare.find_runs([str(tmp_path)]) == [run]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="No runs in .*empty"):
        compare.find_runs([str(tmp_path / "empty")])


def test_outputs_this_tool_did_not_write_are_refused(sweep, tmp_path):
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"a picture of my cat")
    with pytest.raises(SystemExit, match="mine.png exists and was not written by visualize.py curves"):
        visualize.main(["curves", sweep, "--out", str(mine)])
    with pytest.raises(SystemExit, match="mine.png exists"):  # one run: the same rule for --out
        visualize.main(["curves", os.path.join(sweep, "a"), "--out", str(mine)])
    assert mine.read_bytes() == b"a picture of my cat"
    (tmp_path / "notes.md").write_text("my notes")  # a table name beside a picture that is not there
    with pytest.raises(SystemExit, match="notes.md exists"):
        visualize.main(["curves", sweep, "--out", str(tmp_path / "notes.png")])
    assert (tmp_path / "notes.md").read_text() == "my notes" and not (tmp_path / "notes.png").exists()
    with pytest.raises(SystemExit, match="inside the run directory"):
        visualize.main(["curves", sweep, "--out", os.path.join(sweep, "a", "sub", "cmp.png")])
    assert sorted(os.listdir(os.path.join(sweep, "a"))) == ["all_config.yaml", "metrics.jsonl"]
    with pytest.raises(SystemExit, match="NAME.png"):
        visualize.main(["curves", sweep, "--out", str(tmp_path / "cmp.svg")])
    out = str(tmp_path / "cmp.png")
    visualize.main(["curves", sweep, "--out", out])
    visualize.main(["curves", sweep, "--out", out])  # ours: replaced
    assert sorted(os.listdir(tmp_path)) == ["cmp.csv", "cmp.md", "cmp.png", "mine.png", "notes.md", "sweep"]
