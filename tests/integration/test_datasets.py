"""Datasets in real processes: the builders run as users type them (script paths, `python -m`), a killed build
leaves a temporary that the next build removes, and a process exiting with a loader still open does not hang. The
inputs and fixtures are those of the builders' unit modules."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from dataset import assemble_arc_data
from dataset.common import load_metadata
from tests.helpers import REPO_ROOT
from tests.unit import test_dataset_output_dir as output_dir_tests
from tests.unit import test_loader as loader_tests
from tests.unit import test_sudoku_maze_datasets as sudoku_maze_tests
from tests.unit.test_arc_dataset import CONCEPT_DIR, _small_inputs
from tests.unit.test_sudoku_maze_datasets import GOOD_A, GOOD_Q, NUM_SUDOKU, _swap, write_csv

# The fixtures of the builders' unit modules, by name.
sources, tools = output_dir_tests.sources, output_dir_tests.tools
copy_dir = loader_tests.copy_dir
sudoku_csv, maze_csv = sudoku_maze_tests.sudoku_csv, sudoku_maze_tests.maze_csv


# ---------------------------------------------------------------------------------------------
# The ARC builder and assembler as commands
# ---------------------------------------------------------------------------------------------
def test_script_path_builds_small_dataset_and_fails_cleanly(tmp_path):
    """`python dataset/build_arc_dataset.py ...`: a valid build, a rebuild in place, then a bad one."""
    prefix = _small_inputs(tmp_path)
    out = tmp_path / "arc-small"
    cmd = [sys.executable, os.path.join(REPO_ROOT, "dataset", "build_arc_dataset.py"),
           "--input-file-prefix", prefix, "--output-dir", str(out), "--num-aug", "3"]
    for _ in range(2):  # the second run replaces the first build
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    train = load_metadata(str(out), "train")
    # 9 groups (3 tasks x 3 subsets) of 1 + 3 members; test puzzles reuse their train names.
    assert (train.total_groups, train.total_puzzles, train.num_puzzle_identifiers) == (9, 36, 1 + 36)
    assert load_metadata(str(out), "test").total_puzzles == 12
    with open(out / "test_puzzles.json") as f:
        assert sorted(json.load(f)) == ["evaluation0", "evaluation1", "evaluation2"]

    bad = subprocess.run(cmd[:-2] + ["--num-aug", "3", "--test-set-name", "nope"], capture_output=True, text=True)
    assert bad.returncode != 0 and "not one of --subsets" in bad.stderr
    assert load_metadata(str(out), "train").total_puzzles == 36  # the earlier build is untouched


def test_cli_default_uses_shipped_concept_files(tmp_path, monkeypatch):
    """`python -m dataset.assemble_arc_data` without --concept copies kaggle/concept, from any CWD."""
    monkeypatch.chdir(tmp_path)
    assemble_arc_data.main(["--output-dir", "combined"])
    for shipped, written in zip(assemble_arc_data.kaggle_paths(CONCEPT_DIR, "concept"),
                                assemble_arc_data.kaggle_paths(str(tmp_path / "combined"), "concept")):
        with open(shipped, "rb") as a, open(written, "rb") as b:
            assert a.read() == b.read()


# ---------------------------------------------------------------------------------------------
# The Sudoku and Maze builders as commands
# ---------------------------------------------------------------------------------------------
def test_script_path_and_module_invocation(sudoku_csv, maze_csv, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = tmp_path / "script"
    result = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "dataset", "build_sudoku_dataset.py"),
         "--source-dir", sudoku_csv, "--output-dir", str(out), "--num-aug", "1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert load_metadata(str(out), "train").total_puzzles == 2 * NUM_SUDOKU

    result = subprocess.run(
        [sys.executable, "-m", "dataset.build_maze_dataset", "--source-dir", maze_csv,
         "--output-dir", str(tmp_path / "m")],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert load_metadata(str(tmp_path / "m"), "test").total_puzzles == 5

    # A bad row from the command line: non-zero exit, the line named on stderr, no output.
    bad = tmp_path / "bad"
    write_csv(str(bad / "train.csv"), [("x", GOOD_Q, GOOD_A, "0"), ("x", GOOD_Q, _swap(GOOD_A, 0, 1), "0")])
    write_csv(str(bad / "test.csv"), [("x", GOOD_Q, GOOD_A, "0")])
    result = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "dataset", "build_sudoku_dataset.py"),
         "--source-dir", str(bad), "--output-dir", str(tmp_path / "never")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0 and "train.csv, line 3" in result.stderr and "Fix or remove" in result.stderr
    assert not (tmp_path / "never").exists()


# ---------------------------------------------------------------------------------------------
# A killed build
# ---------------------------------------------------------------------------------------------
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


def write_big_arc_source(directory) -> str:
    """60 tasks of 30x30 grids: with --num-aug 300 the build writes about 130 MB, long enough to be signalled."""
    rng = np.random.default_rng(0)
    pairs = {f"{i:08x}": [rng.integers(0, 10, (30, 30)).tolist() for _ in range(4)] for i in range(60)}
    challenges = {tid: {"train": [{"input": g, "output": g} for g in grids[:3]], "test": [{"input": grids[3]}]}
                  for tid, grids in pairs.items()}
    os.makedirs(directory, exist_ok=True)
    for kind, content in (("challenges", challenges), ("solutions", {t: [g[3]] for t, g in pairs.items()})):
        with open(os.path.join(directory, f"arc-agi_training_{kind}.json"), "w") as f:
            json.dump(content, f)
    return os.path.join(directory, "arc-agi")


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_issue23_c_a_signalled_arc_build_removes_its_temporaries_and_says_so(tmp_path, sig, status):
    """Issue 23 C: SIGTERM left ~0.5 GB of hidden temporaries, Ctrl-C printed a KeyboardInterrupt traceback. The
    build is frozen (SIGSTOP) as soon as its temporary exists, signalled, then let go: a bounded, race-free stop."""
    prefix, out = write_big_arc_source(tmp_path / "src"), tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    build = subprocess.Popen([sys.executable, "-m", "dataset.build_arc_dataset", "--input-file-prefix", prefix,
                              "--output-dir", str(out), "--subsets", "training", "--test-set-name", "training",
                              "--num-aug", "300"], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not [n for n in os.listdir(tmp_path) if n.startswith(".out.tmp-")]:
            assert build.poll() is None and time.monotonic() < deadline, "the build ended before it was signalled"
            time.sleep(0.002)
        os.kill(build.pid, signal.SIGSTOP)
        os.kill(build.pid, sig)
        os.kill(build.pid, signal.SIGCONT)
        _, stderr = build.communicate(timeout=60)
    finally:
        build.kill()
        build.wait()
    assert build.returncode == status, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    ours = [line for line in stderr.splitlines() if line.startswith("interrupted")]
    assert len(ours) == 1 and sig.name in ours[0], stderr[-3000:]
    assert sorted(os.listdir(tmp_path)) == ["src"], "temporaries left"


# ---------------------------------------------------------------------------------------------
# An exit with a loader still open
# ---------------------------------------------------------------------------------------------
EXIT_WITH_AN_OPEN_LOADER = """
import sys
from dataset.puzzle_dataset import PuzzleDataset, PuzzleDatasetConfig, make_dataloader
loader = make_dataloader(PuzzleDataset(PuzzleDatasetConfig(seed=0, dataset_paths=[sys.argv[1]], rank=0, num_replicas=1,
                         test_set_mode=False, global_batch_size=4, epochs_per_iter=1)), "cpu")
next(iter(loader))
cycle = {"loader": loader}
cycle["self"] = cycle  # only the cyclic collector would free the loader, and it does not run before exit
"""


def test_exit_with_a_loader_still_open_does_not_hang(copy_dir):
    """The worker ignores SIGTERM (so a signalled job can finish its step); at interpreter exit multiprocessing
    stops daemonic children with SIGTERM and waits: the loader must be shut down first, or exit waits forever."""
    result = subprocess.run([sys.executable, "-c", EXIT_WITH_AN_OPEN_LOADER, copy_dir], cwd=REPO_ROOT,
                            env=dict(os.environ, PYTHONPATH=REPO_ROOT), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
