"""Sudoku-Extreme and Maze-Hard builders, their shared CSV plumbing, and the offline generators.

No test touches the network: sources are CSVs written here or by the (seeded) generators, and the
hub download is monkeypatched. Solutions and paths are checked with small independent solvers. (The builders as
commands: tests/integration/test_datasets.py.)
"""
import csv
import json
import os
from collections import deque

import numpy as np
import pytest

from dataset import build_maze_dataset, build_sudoku_dataset, generate_maze, generate_sudoku
from dataset.common import load_metadata
from dataset.tasks import sudoku
from dataset.tasks.dihedral import dihedral_transform

FIELDS = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")
NUM_SUDOKU = 50
NUM_MAZES = 20
MAZE_CHARS = "# SGo"


# ----------------------------------------------------------------------------------------------
# Independent reference checks (deliberately simple, sharing no code with the generators)


def _sudoku_peers():
    peers = []
    for i in range(81):
        r, c = divmod(i, 9)
        same = {j for j in range(81) if j // 9 == r or j % 9 == c or (j // 27 == i // 27 and (j % 9) // 3 == c // 3)}
        peers.append(sorted(same - {i}))
    return peers


PEERS = _sudoku_peers()


def is_solution(grid):
    """Every row, column and box of the 81 digits is exactly {1..9}."""
    g = np.asarray(grid).reshape(9, 9)
    units = list(g) + list(g.T) + [g[r:r + 3, c:c + 3].ravel() for r in (0, 3, 6) for c in (0, 3, 6)]
    return all(sorted(u.tolist()) == list(range(1, 10)) for u in units)


def count_sudoku_solutions(puzzle, limit=2):
    """Plain recursive backtracking on the most constrained cell; counts up to `limit`."""
    grid = [int(v) for v in puzzle]

    def candidates(i):
        used = {grid[j] for j in PEERS[i]}
        return [d for d in range(1, 10) if d not in used]

    def solve():
        empties = [i for i in range(81) if grid[i] == 0]
        if not empties:
            return 1
        cell = min(empties, key=lambda i: len(candidates(i)))
        found = 0
        for d in candidates(cell):
            grid[cell] = d
            found += solve()
            grid[cell] = 0
            if found >= limit:
                break
        return found

    return solve()


def maze_bfs(grid, start):
    """Distances and shortest-path counts (capped at 2) over non-wall cells of a 2-D char grid."""
    rows, cols = grid.shape
    dist = {start: 0}
    count = {start: 1}
    queue = deque([start])
    while queue:
        r, c = queue.popleft()
        for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            if not (0 <= nr < rows and 0 <= nc < cols) or grid[nr, nc] == "#":
                continue
            if (nr, nc) not in dist:
                dist[nr, nc] = dist[r, c] + 1
                count[nr, nc] = count[r, c]
                queue.append((nr, nc))
            elif dist[nr, nc] == dist[r, c] + 1:
                count[nr, nc] = min(2, count[nr, nc] + count[r, c])
    return dist, count


def check_maze(question, answer):
    """The answer is the question plus a shortest S->G path marked 'o'; return (length, #shortest paths)."""
    q = np.array(list(question)).reshape(30, 30)
    a = np.array(list(answer)).reshape(30, 30)
    path = a == "o"
    assert (q[path] == " ").all(), "path cells must be open cells of the question"
    assert (a[~path] == q[~path]).all(), "answer must equal the question outside the path"
    assert (q == "S").sum() == 1 and (q == "G").sum() == 1 and not (q == "o").any()
    start, goal = tuple(np.argwhere(q == "S")[0]), tuple(np.argwhere(q == "G")[0])
    dist, count = maze_bfs(q, start)
    # The marked cells must themselves connect S to G in exactly len(path)+1 steps: a shortest path.
    on_path = np.where(path | (q == "S") | (q == "G"), " ", "#")
    path_dist, _ = maze_bfs(on_path, start)
    assert path_dist.get(goal) == dist[goal] == path.sum() + 1
    return dist[goal], count[goal]


# ----------------------------------------------------------------------------------------------
# Helpers


def load_split(out_dir, split):
    return {f: np.load(os.path.join(out_dir, split, f"all__{f}.npy")) for f in FIELDS}


def all_bytes(out_dir):
    """Every file of a built dataset, by relative path (for exact reproducibility checks)."""
    files = {}
    for root, _, names in os.walk(out_dir):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, out_dir)] = f.read()
    return files


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["source", "question", "answer", "rating"])
        writer.writerows(rows)


def run_main(main, argv):
    """Run a CLI main in-process; return the exit message ('' on success)."""
    try:
        main(argv)
    except SystemExit as e:
        assert e.code not in (0, None), "an error must give a non-zero exit"
        return str(e.code)
    return ""


@pytest.fixture(scope="module")
def sudoku_csv(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("sudoku") / "csv")
    generate_sudoku.main(["--output-dir", out, "--num-train", str(NUM_SUDOKU), "--num-test", "10", "--seed", "3"])
    return out


@pytest.fixture(scope="module")
def maze_csv(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("maze") / "csv")
    generate_maze.main(["--output-dir", out, "--num-train", str(NUM_MAZES), "--num-test", "5", "--seed", "3"])
    return out


# ----------------------------------------------------------------------------------------------
# Generators


def test_sudoku_generator_unique_solutions(sudoku_csv):
    train, test = read_csv(os.path.join(sudoku_csv, "train.csv")), read_csv(os.path.join(sudoku_csv, "test.csv"))
    assert len(train) == NUM_SUDOKU and len(test) == 10
    assert not {r["question"] for r in train} & {r["question"] for r in test}, "train and test must be disjoint"
    for row in train + test:
        puzzle = [0 if ch == "." else int(ch) for ch in row["question"]]
        answer = [int(ch) for ch in row["answer"]]
        assert is_solution(answer)
        assert all(p in (0, a) for p, a in zip(puzzle, answer))
        assert 45 <= puzzle.count(0) <= 55  # the default --min-blanks/--max-blanks
        assert count_sudoku_solutions(puzzle) == 1
        assert int(row["rating"]) >= 0


def test_sudoku_generator_filters_and_solver():
    rng = np.random.default_rng(0)
    rows = generate_sudoku.generate_rows(20, rng, 50, 50, 2, set(), "test")
    assert all(r[1].count(".") == 50 and r[3] >= 2 for r in rows)
    # The compiled counter agrees with the reference on a puzzle with many solutions.
    puzzle = np.array([int(c) for c in rows[0][2]])
    puzzle[:30] = 0
    assert generate_sudoku.count_solutions(puzzle, limit=2)[0] == min(2, count_sudoku_solutions(puzzle))
    contradictory = np.zeros(81, dtype=np.int64)
    contradictory[0] = contradictory[1] = 5
    assert generate_sudoku.count_solutions(contradictory)[0] == 0


def test_kernels_match_their_pure_python_fallback():
    """Without numba the same kernel source runs as plain Python (`py_func`); it must agree."""
    def plain(fn):
        return getattr(fn, "py_func", fn)

    rng = np.random.default_rng(5)
    order = generate_sudoku.CANONICAL_ORDER
    for _ in range(3):
        puzzle = generate_sudoku.make_puzzle(rng, 45, 50)[0]
        compiled, python = np.zeros(81, dtype=np.int64), np.zeros(81, dtype=np.int64)
        assert (generate_sudoku.search(puzzle, order, 2, compiled)
                == plain(generate_sudoku.search)(puzzle, order, 2, python))
        np.testing.assert_array_equal(compiled, python)
    choices = rng.random(generate_maze.LATTICE ** 2)
    grid = generate_maze.carve_tree(choices)
    np.testing.assert_array_equal(grid, plain(generate_maze.carve_tree)(choices))
    for a, b in zip(generate_maze.shortest_paths(grid, 0), plain(generate_maze.shortest_paths)(grid, 0)):
        np.testing.assert_array_equal(a, b)


def test_maze_generator_unique_shortest_paths(maze_csv):
    train, test = read_csv(os.path.join(maze_csv, "train.csv")), read_csv(os.path.join(maze_csv, "test.csv"))
    assert len(train) == NUM_MAZES and len(test) == 5
    assert not {r["question"] for r in train} & {r["question"] for r in test}
    for row in train + test:
        length, paths = check_maze(row["question"], row["answer"])
        assert paths == 1, "the shortest path must be unique"
        assert length >= 110 and int(row["rating"]) == length


def test_generators_are_seeded(tmp_path):
    def files(module, seed, name):
        out = str(tmp_path / name)
        module.main(["--output-dir", out, "--num-train", "5", "--num-test", "2", "--seed", str(seed)])
        return all_bytes(out)

    assert files(generate_sudoku, 1, "a") == files(generate_sudoku, 1, "b") != files(generate_sudoku, 2, "c")
    assert files(generate_maze, 1, "d") == files(generate_maze, 1, "e") != files(generate_maze, 2, "f")


# ----------------------------------------------------------------------------------------------
# Sudoku builder


def build_sudoku(source, out, *extra):
    message = run_main(build_sudoku_dataset.main, ["--source-dir", source, "--output-dir", out, *extra])
    assert message == "", message
    return out


def test_sudoku_build_format_and_validity(sudoku_csv, tmp_path):
    out = build_sudoku(sudoku_csv, str(tmp_path / "ds"), "--num-aug", "3")
    group = 4
    csv_rows = read_csv(os.path.join(sudoku_csv, "train.csv"))
    for split, puzzles, groups in (("train", NUM_SUDOKU * group, NUM_SUDOKU), ("test", 10, 10)):
        meta = load_metadata(out, split)
        assert ((meta.pad_id, meta.ignore_label_id, meta.blank_identifier_id, meta.vocab_size, meta.seq_len)
                == (0, 0, 0, 11, 81))
        assert ((meta.num_puzzle_identifiers, meta.total_puzzles, meta.total_groups, meta.sets)
                == (1, puzzles, groups, ["all"]))
        assert meta.mean_puzzle_examples == 1.0
        arrays = load_split(out, split)
        np.testing.assert_array_equal(arrays["puzzle_indices"], np.arange(puzzles + 1))
        np.testing.assert_array_equal(arrays["group_indices"], np.arange(groups + 1) * (puzzles // groups))
        assert not arrays["puzzle_identifiers"].any()
        assert arrays["inputs"].min() >= 1 and arrays["labels"].min() >= 2 and arrays["labels"].max() <= 10
        for inp, lab in zip(arrays["inputs"] - 1, arrays["labels"] - 1):  # tokens back to digits (blank 0)
            assert is_solution(lab)
            assert ((inp == 0) | (inp == lab)).all(), "clues must agree with the solution"
    with open(os.path.join(out, "identifiers.json")) as f:
        assert json.load(f) == ["<blank>"]

    train = load_split(out, "train")
    originals = np.array([[0 if ch == "." else int(ch) for ch in r["question"]] for r in csv_rows])
    np.testing.assert_array_equal(train["inputs"][::group] - 1, originals)  # each group starts with the original
    blanks = (train["inputs"] == 1).sum(axis=1).reshape(NUM_SUDOKU, group)
    assert (blanks == blanks[:, :1]).all(), "a shuffle keeps the number of blanks"
    assert (train["inputs"].reshape(NUM_SUDOKU, group, 81)[:, 1:] != train["inputs"][::group, None]).any(axis=2).all()


def test_sudoku_shuffles_preserve_validity():
    solution = np.array([int(c) for c in "534678912672195348198342567859761423426853791"
                                         "713924856961537284287419635345286179"])
    rng = np.random.default_rng(0)
    maps, sources = sudoku.random_shuffles(rng, 500)
    assert (maps[:, 0] == 0).all() and (np.sort(maps[:, 1:], axis=1) == np.arange(1, 10)).all()
    assert (np.sort(sources, axis=1) == np.arange(81)).all(), "cells are permuted, none lost"
    shuffled = sudoku.apply_shuffles(np.tile(solution, (500, 1)), maps, sources)
    assert sudoku.is_valid_solution(shuffled).all()
    assert len({s.tobytes() for s in shuffled}) == 500
    # A transpose shows as row 0 of the output drawn from one column of the input (about half the time).
    transposed = (sources[:, :9] % 9 == sources[:, :1] % 9).all(axis=1)
    assert 0.4 < transposed.mean() < 0.6


def test_sudoku_build_seeded(sudoku_csv, tmp_path):
    args = ("--num-aug", "2", "--subsample-size", "20", "--test-subsample-size", "5")
    a = all_bytes(build_sudoku(sudoku_csv, str(tmp_path / "a"), *args, "--seed", "7"))
    b = all_bytes(build_sudoku(sudoku_csv, str(tmp_path / "b"), *args, "--seed", "7"))
    c = all_bytes(build_sudoku(sudoku_csv, str(tmp_path / "c"), *args, "--seed", "8"))
    assert a == b
    assert a["train/all__inputs.npy"] != c["train/all__inputs.npy"]
    # With no subsets and no augmentation nothing is random: the seed does not matter.
    d = all_bytes(build_sudoku(sudoku_csv, str(tmp_path / "d"), "--seed", "1"))
    e = all_bytes(build_sudoku(sudoku_csv, str(tmp_path / "e"), "--seed", "2"))
    assert d == e


def test_sudoku_subsets_and_difficulty(sudoku_csv, tmp_path):
    out = build_sudoku(sudoku_csv, str(tmp_path / "sub"), "--subsample-size", "12", "--test-subsample-size", "4")
    assert load_metadata(out, "train").total_puzzles == 12 and load_metadata(out, "test").total_puzzles == 4

    ratings = {split: [int(r["rating"]) for r in read_csv(os.path.join(sudoku_csv, f"{split}.csv"))]
               for split in ("train", "test")}
    threshold = 1
    out = build_sudoku(sudoku_csv, str(tmp_path / "hard"), "--min-difficulty", str(threshold))
    for split in ("train", "test"):
        assert load_metadata(out, split).total_puzzles == sum(r >= threshold for r in ratings[split])
    message = run_main(build_sudoku_dataset.main, ["--source-dir", sudoku_csv, "--output-dir", str(tmp_path / "none"),
                                                   "--min-difficulty", "1000000"])
    assert "--min-difficulty" in message and not (tmp_path / "none").exists()


GOOD_Q = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79"
GOOD_A = "534678912672195348198342567859761423426853791713924856961537284287419635345286179"


def _swap(s, i, j):
    chars = list(s)
    chars[i], chars[j] = chars[j], chars[i]
    return "".join(chars)


@pytest.mark.parametrize("bad_row, expected", [
    (("x", GOOD_Q[:-1], GOOD_A, "0"), "question has 80 characters, expected 81"),
    (("x", GOOD_Q, GOOD_A + "1", "0"), "answer has 82 characters"),
    (("x", GOOD_Q.replace(".", "x", 1), GOOD_A, "0"), "question contains ['x']"),
    (("x", GOOD_Q, GOOD_A.replace("5", "0", 1), "0"), "answer contains ['0']"),
    (("x", GOOD_Q, _swap(GOOD_A, 0, 1), "0"), "not a valid Sudoku solution"),
    (("x", "." * 81, _swap(GOOD_A, 0, 1), "0"), "not a valid Sudoku solution"),
    (("x", "1" + GOOD_Q[1:], GOOD_A, "0"), "contradicts a clue"),
    (("x", GOOD_Q, GOOD_A, "hard"), "rating 'hard' is not a number"),
    (("x", GOOD_Q), "has 2 fields"),
])
def test_sudoku_malformed_rows(tmp_path, bad_row, expected):
    source = str(tmp_path / "src")
    good = ("x", GOOD_Q, GOOD_A, "3")
    write_csv(os.path.join(source, "train.csv"), [good, good, bad_row, good])
    write_csv(os.path.join(source, "test.csv"), [good])
    out = tmp_path / "out"
    message = run_main(build_sudoku_dataset.main, ["--source-dir", source, "--output-dir", str(out)])
    assert "train.csv, line 4" in message and expected in message, message
    assert not out.exists()
    assert os.listdir(tmp_path) == ["src"], "no temp directory may be left behind"


def test_sudoku_bad_row_reported_even_when_not_selected(tmp_path):
    """The whole file is checked before --min-difficulty / --subsample-size pick rows from it."""
    source = str(tmp_path / "src")
    good, bad = ("x", GOOD_Q, GOOD_A, "9"), ("x", GOOD_Q, _swap(GOOD_A, 0, 1), "0")
    write_csv(os.path.join(source, "train.csv"), [good, good, good, bad])
    write_csv(os.path.join(source, "test.csv"), [good])
    message = run_main(build_sudoku_dataset.main, ["--source-dir", source, "--output-dir", str(tmp_path / "out"),
                                                   "--min-difficulty", "5", "--subsample-size", "1"])
    assert "train.csv, line 5" in message and not (tmp_path / "out").exists()


def test_sudoku_missing_source_and_foreign_output(tmp_path, sudoku_csv):
    message = run_main(build_sudoku_dataset.main, ["--source-dir", str(tmp_path), "--output-dir", str(tmp_path / "o")])
    assert "has no train.csv" in message and "generate_sudoku.py" in message
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    message = run_main(build_sudoku_dataset.main, ["--source-dir", sudoku_csv, "--output-dir", str(foreign)])
    assert "notes.txt" in message and (foreign / "notes.txt").read_text() == "keep me"
    # A previous build, on the other hand, is replaced.
    out = build_sudoku(sudoku_csv, str(tmp_path / "again"), "--subsample-size", "3")
    build_sudoku(sudoku_csv, out, "--subsample-size", "5")
    assert load_metadata(out, "train").total_puzzles == 5
    assert sorted(os.listdir(tmp_path)) == ["again", "foreign"]


@pytest.mark.parametrize("module", [build_sudoku_dataset, build_maze_dataset])
@pytest.mark.parametrize("error_kind", ["offline", "connection"])
def test_hub_failure_names_source_dir(monkeypatch, tmp_path, module, error_kind):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    from huggingface_hub.errors import LocalEntryNotFoundError

    def fail(*args, **kwargs):
        if error_kind == "offline":
            raise LocalEntryNotFoundError("cannot reach the hub and the file is not cached")
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fail)
    out = tmp_path / "out"
    message = run_main(module.main, ["--output-dir", str(out)])
    assert "--source-dir" in message and "generate_" in message and "train.csv" in message, message
    assert not out.exists()


def test_hub_download_used_by_default(monkeypatch, tmp_path, sudoku_csv):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    calls = []

    def fake_download(repo_id, filename, repo_type):
        calls.append((repo_id, filename, repo_type))
        return os.path.join(sudoku_csv, filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    out = str(tmp_path / "hub")
    assert run_main(build_sudoku_dataset.main, ["--output-dir", out, "--source-repo", "me/sudoku"]) == ""
    assert calls == [("me/sudoku", "train.csv", "dataset"), ("me/sudoku", "test.csv", "dataset")]
    assert load_metadata(out, "train").total_puzzles == NUM_SUDOKU


def test_hub_unexpected_error_propagates(monkeypatch, tmp_path):
    """Only network/hub errors become the offline message; a bug must not be disguised as one."""
    huggingface_hub = pytest.importorskip("huggingface_hub")

    def broken(*args, **kwargs):
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", broken)
    with pytest.raises(ZeroDivisionError):
        build_sudoku_dataset.main(["--output-dir", str(tmp_path / "out")])


# ----------------------------------------------------------------------------------------------
# Maze builder


def decode_maze(tokens):
    return "".join(MAZE_CHARS[t - 1] for t in tokens)


def test_maze_build_with_dihedral_aug(maze_csv, tmp_path):
    out = str(tmp_path / "maze")
    assert run_main(build_maze_dataset.main, ["--source-dir", maze_csv, "--output-dir", out, "--aug"]) == ""
    meta = load_metadata(out, "train")
    assert ((meta.vocab_size, meta.seq_len, meta.pad_id, meta.ignore_label_id, meta.num_puzzle_identifiers)
            == (6, 900, 0, 0, 1))
    assert (meta.total_puzzles, meta.total_groups) == (NUM_MAZES * 8, NUM_MAZES)
    train = load_split(out, "train")
    np.testing.assert_array_equal(train["group_indices"], np.arange(NUM_MAZES + 1) * 8)
    for inp, lab in zip(train["inputs"], train["labels"]):
        length, paths = check_maze(decode_maze(inp), decode_maze(lab))
        assert paths == 1 and length >= 110
    # Member t of a group is dihedral transform t of the original, for inputs and labels alike.
    for field in ("inputs", "labels"):
        grids = train[field].reshape(NUM_MAZES, 8, 30, 30)
        for t in range(8):
            np.testing.assert_array_equal(grids[:, t], dihedral_transform(grids[:, 0], t))
    rows = read_csv(os.path.join(maze_csv, "train.csv"))
    assert [decode_maze(x) for x in train["inputs"][::8]] == [r["question"] for r in rows]

    test = load_split(out, "test")
    assert load_metadata(out, "test").total_puzzles == 5 and test["group_indices"].tolist() == list(range(6))
    for inp, lab in zip(test["inputs"], test["labels"]):
        check_maze(decode_maze(inp), decode_maze(lab))


def test_maze_build_subsets_seeded(maze_csv, tmp_path):
    def build(name, seed):
        out = str(tmp_path / name)
        argv = ["--source-dir", maze_csv, "--output-dir", out, "--subsample-size", "6", "--test-subsample-size", "2",
                "--seed", str(seed)]
        assert run_main(build_maze_dataset.main, argv) == ""
        return all_bytes(out)

    a, b, c = build("a", 0), build("b", 0), build("c", 5)
    assert a == b and a != c
    assert np.load(os.path.join(tmp_path, "a", "train", "all__inputs.npy")).shape == (6, 900)


def _maze_rows(maze_csv):
    row = read_csv(os.path.join(maze_csv, "train.csv"))[0]
    return row["question"], row["answer"]


@pytest.mark.parametrize("kind, expected", [
    ("short", "question has 899 characters, expected 900"),
    ("bad_char", "question contains ['x']"),
    ("path_in_question", "question contains ['o']"),
    ("two_starts", "exactly one 'S'"),
    ("no_goal", "exactly one 'G'"),
    ("path_on_wall", "path cell 'o' where the question has no open cell"),
    ("label_differs", "differs from the question"),
])
def test_maze_malformed_rows(maze_csv, tmp_path, kind, expected):
    q, a = _maze_rows(maze_csv)
    wall = q.index("#")
    open_cell = q.index(" ")
    edits = {
        "short": (q[:-1], a),
        "bad_char": (q.replace(" ", "x", 1), a),
        "path_in_question": (a, a),
        "two_starts": (q[:open_cell] + "S" + q[open_cell + 1:], a[:open_cell] + "S" + a[open_cell + 1:]),
        "no_goal": (q.replace("G", " "), a.replace("G", " ")),
        "path_on_wall": (q, a[:wall] + "o" + a[wall + 1:]),
        "label_differs": (q, a[:wall] + " " + a[wall + 1:]),
    }
    good = ("x", q, a, "1")
    source = str(tmp_path / "src")
    write_csv(os.path.join(source, "train.csv"), [good])
    write_csv(os.path.join(source, "test.csv"), [good, good, ("x", *edits[kind], "1")])
    out = tmp_path / "out"
    message = run_main(build_maze_dataset.main, ["--source-dir", source, "--output-dir", str(out)])
    assert "test.csv, line 4" in message and expected in message, message
    assert not out.exists() and os.listdir(tmp_path) == ["src"]


# ----------------------------------------------------------------------------------------------
# Offline data on first use (`generate_if_missing`): each kind's own augmentation key


def test_generated_dataset_augmentation_keys(tmp_path):
    from dataset.generated import build_generated_dataset
    from training.config import GeneratedDataConfig
    from utils.errors import ConfigError

    out = str(tmp_path / "maze")
    build_generated_dataset(out, "maze", num_train=2, num_test=1, aug=True, min_path_length=10)
    assert (load_metadata(out, "train").total_puzzles, load_metadata(out, "train").total_groups) == (16, 2)
    out = str(tmp_path / "sudoku")
    build_generated_dataset(out, "sudoku", num_train=3, num_test=1, num_aug=2, blanks=20)
    assert (load_metadata(out, "train").total_puzzles, load_metadata(out, "train").total_groups) == (9, 3)

    with pytest.raises(ConfigError, match="aug=True"):
        build_generated_dataset(str(tmp_path / "never"), "maze", num_train=2, num_test=1, num_aug=8)
    with pytest.raises(ConfigError, match="num_aug"):
        build_generated_dataset(str(tmp_path / "never"), "sudoku", num_train=2, num_test=1, aug=True)
    assert not (tmp_path / "never").exists()
    with pytest.raises(ValueError, match="aug=true"):
        GeneratedDataConfig(kind="maze", num_train=2, num_test=1, num_aug=8)
    with pytest.raises(ValueError, match="num_aug"):
        GeneratedDataConfig(kind="sudoku", num_train=2, num_test=1, aug=True)
    assert GeneratedDataConfig(kind="maze", num_train=2, num_test=1, aug=True).aug
