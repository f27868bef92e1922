"""Datasets are validated when they are opened (dataset/puzzle_dataset.py): bad contents raise DatasetError
naming the file and the builder that rebuilds it, in the constructor, so that training stops before its run
directory exists; a missing dataset names the builder of its task."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

from dataset import build_sudoku_dataset
from dataset.build_copy_dataset import write_copy_task
from dataset.common import load_metadata, write_json, write_set
from dataset.puzzle_dataset import PuzzleDataset, PuzzleDatasetConfig
from tests.helpers import TINY_ARCH, compose_config, cpu_context
from tests.unit import test_dataset_output_dir as output_dir_tests
from tests.unit.test_dataset_output_dir import run_tool
from training.config import parse_config
from utils.errors import DatasetError

SEQ, VOCAB, NUM_IDS = 8, 6, 9

sources = output_dir_tests.sources  # the builders' source files (a fixture), by name


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


@pytest.mark.parametrize("path, expected", [
    ("data/arc1concept-aug-1000", "dataset.assemble_arc_data --output-dir kaggle/combined` and then `python -m "
     "dataset.build_arc_dataset --input-file-prefix kaggle/combined/arc-agi --output-dir data/arc1concept-aug-1000 "
     "--subsets training evaluation concept --test-set-name evaluation`"),
    ("data/arc2concept-aug-1000", "--subsets training2 evaluation2 concept --test-set-name evaluation2"),
    ("data/maze-30x30-hard-1k", "python dataset/build_maze_dataset.py --output-dir data/maze-30x30-hard-1k"),
    ("data/sudoku-extreme-1k-aug-1000", "python dataset/build_sudoku_dataset.py --output-dir data/sudoku-extreme"),
    ("data/my set", "one of the builders in dataset/"),
])
def test_a_missing_dataset_names_the_builder_of_its_task(tmp_path, path, expected):
    """A bare `python pretrain.py` names the ARC dataset: the hint must be the ARC commands, not Sudoku's."""
    from dataset.common import DatasetNotFoundError
    with pytest.raises(DatasetNotFoundError) as err:
        load_metadata(str(tmp_path / path), "train")
    assert expected.replace("data/", str(tmp_path) + "/data/") in str(err.value) or expected in str(err.value)
