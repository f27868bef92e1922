"""Exact-behaviour tests for the on-disk format (dataset/common.py) and PuzzleDataset. (An exit with a loader still
open: tests/integration/test_datasets.py.)"""
import json
import os

import numpy as np
import pytest
import torch

from dataset.build_copy_dataset import write_copy_task
from dataset.common import (
    IGNORE_LABEL_ID,
    PuzzleDatasetMetadata,
    load_metadata,
    offsets,
    write_identifiers,
    write_set,
    write_split,
)
from dataset.puzzle_dataset import PuzzleDataset, PuzzleDatasetConfig, make_dataloader

SEQ_LEN = 6
VOCAB = 9


def make_config(paths, batch=8, test=False, seed=0, epochs=1, rank=0, replicas=1):
    return PuzzleDatasetConfig(
        seed=seed, dataset_paths=[str(p) for p in paths], global_batch_size=batch,
        test_set_mode=test, epochs_per_iter=epochs, rank=rank, num_replicas=replicas,
    )


def collect(dataset):
    """All yielded batches as (set_name, {k: numpy}, effective size)."""
    return [(name, {k: v.numpy().copy() for k, v in batch.items()}, eff) for name, batch, eff in dataset]


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for (na, ba, ea), (nb, bb, eb) in zip(a, b):
        assert na == nb and ea == eb
        for k in ("inputs", "labels", "puzzle_identifiers"):
            np.testing.assert_array_equal(ba[k], bb[k])


def row_index(inputs):
    """Map each row's bytes to its example index (rows are unique in these tests)."""
    table = {row.tobytes(): i for i, row in enumerate(np.asarray(inputs, dtype=np.int32))}
    assert len(table) == len(inputs), "test data must have unique rows"
    return table


def reference_train_batches(seed, iters, num_groups, puzzle_indices, group_indices, batch, epochs):
    """Straight-line restatement of the train sampling in docs/loader.md: list of (examples, puzzles)."""
    rng = np.random.Generator(np.random.Philox(seed=seed + iters))
    order = np.concatenate([rng.permutation(num_groups) for _ in range(epochs)])
    out, pos = [], 0
    while pos < len(order):
        examples, puzzles = [], []
        while pos < len(order) and len(examples) < batch:
            g = order[pos]
            pos += 1
            p = int(rng.integers(group_indices[g], group_indices[g + 1]))
            size = int(puzzle_indices[p + 1] - puzzle_indices[p])
            take = min(size, batch - len(examples))
            examples += list(puzzle_indices[p] + rng.choice(size, take, replace=False))
            puzzles += [p] * take
        if len(examples) < batch:
            break
        out.append((np.array(examples), np.array(puzzles)))
    return out


@pytest.fixture
def copy_dir(tmp_path):
    # 20 train puzzles x 3 examples in groups of 2 (10 groups); 7 test puzzles x 3 examples.
    return write_copy_task(
        str(tmp_path / "copy"), num_train_puzzles=20, num_test_puzzles=7, seq_len=SEQ_LEN, vocab_size=VOCAB,
        examples_per_puzzle=3, augmentations_per_group=2, seed=1, num_puzzle_identifiers=21,
    )


# ---- format ---------------------------------------------------------------------------

def test_copy_task_files_and_metadata(copy_dir):
    meta = load_metadata(copy_dir, "train")
    assert meta.model_dump() == {
        "pad_id": 0, "ignore_label_id": 0, "blank_identifier_id": 0, "vocab_size": VOCAB, "seq_len": SEQ_LEN,
        "num_puzzle_identifiers": 21, "total_groups": 10, "mean_puzzle_examples": 3.0, "total_puzzles": 20,
        "sets": ["all"],
    }
    assert sorted(os.listdir(os.path.join(copy_dir, "train"))) == sorted(
        [f"all__{f}.npy" for f in ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")]
        + ["dataset.json"]
    )
    train_dir = os.path.join(copy_dir, "train")
    np.testing.assert_array_equal(np.load(os.path.join(train_dir, "all__group_indices.npy")), np.arange(0, 21, 2))
    np.testing.assert_array_equal(np.load(os.path.join(train_dir, "all__puzzle_indices.npy")), np.arange(0, 61, 3))
    np.testing.assert_array_equal(np.load(os.path.join(train_dir, "all__puzzle_identifiers.npy")), np.arange(1, 21))
    with open(os.path.join(copy_dir, "identifiers.json")) as f:
        assert json.load(f) == ["<blank>"] + [f"copy{i}" for i in range(1, 21)]


def test_missing_dataset_dir_raises_helpful_error(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="one of the builders in dataset/") as exc:
        PuzzleDataset(make_config([missing]))
    assert missing in str(exc.value)


def test_missing_split_raises_helpful_error(copy_dir):
    with pytest.raises(FileNotFoundError, match="dataset.json") as exc:
        load_metadata(copy_dir, "validation")
    assert "build it with one of the builders" in str(exc.value)


def test_malformed_metadata_raises_value_error(copy_dir):
    path = os.path.join(copy_dir, "train", "dataset.json")
    with open(path, "w") as f:
        f.write("{not json")
    with pytest.raises(ValueError, match="not valid JSON") as exc:
        load_metadata(copy_dir, "train")
    assert path in str(exc.value)
    with open(path, "w") as f:
        json.dump({"pad_id": 0}, f)
    with pytest.raises(ValueError, match="seq_len"):
        load_metadata(copy_dir, "train")


def test_write_split_rejects_bad_arrays(tmp_path):
    meta = PuzzleDatasetMetadata(
        pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=4, seq_len=2, num_puzzle_identifiers=1,
        total_groups=1, mean_puzzle_examples=1.0, total_puzzles=2, sets=["all"],
    )
    good = {
        "inputs": np.ones((2, 2), np.uint8), "labels": np.ones((2, 2), np.uint8),
        "puzzle_identifiers": np.zeros(2, np.int32), "puzzle_indices": offsets([1, 1]), "group_indices": offsets([2]),
    }
    with pytest.raises(ValueError, match="int32"):
        write_split(str(tmp_path), "train", "all", {**good, "puzzle_indices": np.array([0, 1, 2])}, meta)
    with pytest.raises(ValueError, match="end at num_examples=2"):
        write_split(str(tmp_path), "train", "all", {**good, "puzzle_indices": offsets([1, 2])}, meta)
    with pytest.raises(ValueError, match="missing \\['labels'\\]"):
        write_split(str(tmp_path), "train", "all", {k: v for k, v in good.items() if k != "labels"}, meta)
    with pytest.raises(ValueError, match="not in metadata.sets"):
        write_split(str(tmp_path), "train", "other", good, meta)
    assert not os.path.exists(tmp_path / "train")  # nothing written on rejection
    write_split(str(tmp_path), "train", "all", good, meta)
    assert sorted(os.listdir(tmp_path / "train"))[-1] == "dataset.json"
    assert not [n for n in os.listdir(tmp_path / "train") if ".tmp" in n]
    with pytest.raises(ValueError, match="<blank>"):
        write_identifiers(str(tmp_path), ["a"])


# ---- train mode -----------------------------------------------------------------------

def test_train_batch_shapes_and_dtypes(copy_dir):
    batches = collect(PuzzleDataset(make_config([copy_dir], batch=8)))
    # Each batch of 8 uses 3 groups (3 + 3 + 2 examples): 10 groups -> 3 full batches, 1 group dropped.
    assert len(batches) == 3
    for name, batch, eff in batches:
        assert name == "all" and eff == 8
        assert batch["inputs"].shape == (8, SEQ_LEN) and batch["inputs"].dtype == np.int32
        assert batch["labels"].shape == (8, SEQ_LEN) and batch["labels"].dtype == np.int32
        assert batch["puzzle_identifiers"].shape == (8,) and batch["puzzle_identifiers"].dtype == np.int32
    _, batch, _ = next(iter(PuzzleDataset(make_config([copy_dir], batch=8))))
    assert all(t.dtype == torch.int32 for t in batch.values())


def test_train_batches_match_spec_sampling(copy_dir):
    """Every example comes from the puzzle the seeded group order picks, in spec order."""
    ds = PuzzleDataset(make_config([copy_dir], batch=8, seed=5, epochs=2))
    batches = collect(ds)
    inputs = np.load(os.path.join(copy_dir, "train", "all__inputs.npy"))
    pidx = np.load(os.path.join(copy_dir, "train", "all__puzzle_indices.npy"))
    gidx = np.load(os.path.join(copy_dir, "train", "all__group_indices.npy"))
    ids = np.load(os.path.join(copy_dir, "train", "all__puzzle_identifiers.npy"))
    expected = reference_train_batches(5, 1, 10, pidx, gidx, 8, 2)
    # A batch of 8 takes 3 + 3 + 2 examples from 3 groups (the rest of a cut puzzle is not
    # carried over), so 20 groups give 6 full batches and 2 leftover groups are dropped.
    assert len(batches) == len(expected) == 6
    lookup = row_index(inputs)
    for (_, batch, _), (ex, pz) in zip(batches, expected):
        got_examples = np.array([lookup[row.tobytes()] for row in batch["inputs"]])
        np.testing.assert_array_equal(got_examples, ex)
        np.testing.assert_array_equal(batch["puzzle_identifiers"], ids[pz])
        # The identifier of each example is that of the puzzle whose rows contain it.
        np.testing.assert_array_equal(batch["puzzle_identifiers"],
                                      ids[np.searchsorted(pidx, got_examples, side="right") - 1])
        np.testing.assert_array_equal(batch["labels"], inputs[ex])  # copy task
    assert ds.state_dict() == {"iters": 1, "skip_batches": 0}


def test_train_batch_packs_partial_puzzle_to_fill(tmp_path):
    """A puzzle larger than the remaining room contributes only that many distinct examples."""
    inputs = np.arange(1, 1 + 10 * 2).reshape(10, 2).astype(np.int32)
    write_set(str(tmp_path), "train", inputs, inputs, puzzle_sizes=[5, 5], group_sizes=[1, 1],
              puzzle_identifiers=[1, 2], vocab_size=30, num_puzzle_identifiers=3)
    batches = collect(PuzzleDataset(make_config([tmp_path], batch=7, seed=3)))
    assert len(batches) == 1  # 5 + min(5, 2) = 7; the order is then exhausted
    ids = batches[0][1]["puzzle_identifiers"]
    first = ids[0]
    np.testing.assert_array_equal(ids, [first] * 5 + [3 - first] * 2)
    rows = batches[0][1]["inputs"][:, 0]
    assert len(set(rows.tolist())) == 7


def test_train_reproducible_for_equal_seeds_and_differs_otherwise(copy_dir):
    a = collect(PuzzleDataset(make_config([copy_dir], seed=7)))
    b = collect(PuzzleDataset(make_config([copy_dir], seed=7)))
    c = collect(PuzzleDataset(make_config([copy_dir], seed=8)))
    assert_same_batches(a, b)
    assert not np.array_equal(np.concatenate([x[1]["inputs"] for x in a]), np.concatenate([x[1]["inputs"] for x in c]))


def test_second_pass_uses_next_seed_and_state_dict_restores_it(copy_dir):
    ds = PuzzleDataset(make_config([copy_dir], seed=7))
    first = collect(ds)
    second = collect(ds)
    assert ds.state_dict() == {"iters": 2, "skip_batches": 0}
    # The second pass equals a fresh dataset whose seed is one higher.
    assert_same_batches(second, collect(PuzzleDataset(make_config([copy_dir], seed=8))))
    assert not np.array_equal(first[0][1]["inputs"], second[0][1]["inputs"])
    restored = PuzzleDataset(make_config([copy_dir], seed=7))
    restored.load_state_dict({"iters": 1})
    assert_same_batches(collect(restored), second)
    with pytest.raises(ValueError, match="iters"):
        restored.load_state_dict({})


def test_skip_batches_resumes_mid_iteration(copy_dir):
    full = collect(PuzzleDataset(make_config([copy_dir], seed=5)))
    assert len(full) >= 3
    resumed = PuzzleDataset(make_config([copy_dir], seed=5))
    resumed.load_state_dict({"iters": 0, "skip_batches": 2})
    assert_same_batches(collect(resumed), full[2:])
    # Skipping applies once: the following pass is the ordinary next iteration.
    assert resumed.state_dict() == {"iters": 1, "skip_batches": 0}


def test_two_replicas_concatenate_to_global_train_batch(copy_dir):
    whole = collect(PuzzleDataset(make_config([copy_dir], batch=8, seed=2)))
    r0 = collect(PuzzleDataset(make_config([copy_dir], batch=8, seed=2, rank=0, replicas=2)))
    r1 = collect(PuzzleDataset(make_config([copy_dir], batch=8, seed=2, rank=1, replicas=2)))
    assert len(whole) == len(r0) == len(r1) == 3
    for (_, w, we), (_, a, ae), (_, b, be) in zip(whole, r0, r1):
        assert we == ae == be == 8
        assert a["inputs"].shape == (4, SEQ_LEN)
        for k in w:
            np.testing.assert_array_equal(np.concatenate([a[k], b[k]]), w[k])


def test_batch_not_divisible_by_replicas_raises(copy_dir):
    with pytest.raises(ValueError, match="multiple of num_replicas=3"):
        PuzzleDataset(make_config([copy_dir], batch=8, replicas=3))


# ---- collate --------------------------------------------------------------------------

def _ignore_label_dataset(tmp_path, ignore_label_id):
    inputs = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8)
    labels = np.array([[0, 2, 0], [7, 0, 8]], dtype=np.uint8)
    write_set(str(tmp_path), "test", inputs, labels, puzzle_sizes=[2], group_sizes=[1], puzzle_identifiers=[0],
              vocab_size=9, num_puzzle_identifiers=1, ignore_label_id=ignore_label_id)
    return collect(PuzzleDataset(make_config([tmp_path], batch=2, test=True), split="test"))


def test_ignore_label_is_mapped_to_minus_100(tmp_path):
    (_, batch, _), = _ignore_label_dataset(tmp_path, ignore_label_id=0)
    np.testing.assert_array_equal(batch["labels"], [[IGNORE_LABEL_ID, 2, IGNORE_LABEL_ID], [7, IGNORE_LABEL_ID, 8]])
    np.testing.assert_array_equal(batch["inputs"], [[1, 2, 3], [4, 5, 6]])


def test_no_ignore_label_keeps_labels(tmp_path):
    (_, batch, _), = _ignore_label_dataset(tmp_path, ignore_label_id=None)
    np.testing.assert_array_equal(batch["labels"], [[0, 2, 0], [7, 0, 8]])


# ---- test mode ------------------------------------------------------------------------

@pytest.fixture
def uneven_dir(tmp_path):
    """Test split with puzzles of 1..4 examples: 10 examples, identifiers 11..14, pad 5, blank 9."""
    inputs = (np.arange(10 * 3).reshape(10, 3) % 4 + 1).astype(np.uint8)
    inputs[:, 0] = np.arange(10)  # unique rows
    write_set(str(tmp_path), "test", inputs, inputs + 1, puzzle_sizes=[1, 2, 3, 4], group_sizes=[2, 2],
              puzzle_identifiers=[11, 12, 13, 14], vocab_size=16, num_puzzle_identifiers=15,
              pad_id=5, ignore_label_id=None, blank_identifier_id=9)
    return str(tmp_path)


def test_test_mode_pads_short_final_batch(uneven_dir):
    batches = collect(PuzzleDataset(make_config([uneven_dir], batch=4, test=True), split="test"))
    assert [eff for _, _, eff in batches] == [4, 4, 2]
    last = batches[-1][1]
    inputs = np.load(os.path.join(uneven_dir, "test", "all__inputs.npy"))
    np.testing.assert_array_equal(last["inputs"][:2], inputs[8:10])
    np.testing.assert_array_equal(last["inputs"][2:], np.full((2, 3), 5))
    np.testing.assert_array_equal(last["labels"][2:], np.full((2, 3), IGNORE_LABEL_ID))
    np.testing.assert_array_equal(last["puzzle_identifiers"], [14, 14, 9, 9])


def test_test_mode_covers_every_example_once_with_its_identifier(uneven_dir):
    batches = collect(PuzzleDataset(make_config([uneven_dir], batch=3, test=True), split="test"))
    real = [(b, eff) for _, b, eff in batches]
    inputs = np.concatenate([b["inputs"][:eff] for b, eff in real])
    ids = np.concatenate([b["puzzle_identifiers"][:eff] for b, eff in real])
    np.testing.assert_array_equal(inputs, np.load(os.path.join(uneven_dir, "test", "all__inputs.npy")))
    np.testing.assert_array_equal(ids, [11, 12, 12, 13, 13, 13, 14, 14, 14, 14])


def test_two_replicas_concatenate_to_global_test_batch(uneven_dir):
    cfg = dict(batch=4, test=True)
    whole = collect(PuzzleDataset(make_config([uneven_dir], **cfg), split="test"))
    r0 = collect(PuzzleDataset(make_config([uneven_dir], rank=0, replicas=2, **cfg), split="test"))
    r1 = collect(PuzzleDataset(make_config([uneven_dir], rank=1, replicas=2, **cfg), split="test"))
    assert len(whole) == len(r0) == len(r1) == 3
    for (_, w, we), (_, a, ae), (_, b, be) in zip(whole, r0, r1):
        assert we == ae == be
        for k in w:
            np.testing.assert_array_equal(np.concatenate([a[k], b[k]])[:we], w[k][:we])
    # The last global batch has 2 examples: rank 1 gets only padding.
    np.testing.assert_array_equal(r1[-1][1]["puzzle_identifiers"], [9, 9])
    np.testing.assert_array_equal(r1[-1][1]["inputs"], np.full((2, 3), 5))


# ---- merged paths ---------------------------------------------------------------------

def test_merged_paths_expose_numbered_sets_and_sum_totals(tmp_path):
    a = write_copy_task(str(tmp_path / "a"), 4, 3, SEQ_LEN, VOCAB, examples_per_puzzle=1, seed=1,
                        num_puzzle_identifiers=5)
    b = write_copy_task(str(tmp_path / "b"), 6, 2, SEQ_LEN, VOCAB, examples_per_puzzle=4, augmentations_per_group=3,
                        seed=2, num_puzzle_identifiers=7)
    ds = PuzzleDataset(make_config([a, b], batch=2, test=True), split="train")
    meta = ds.metadata
    assert meta.sets == ["all", "all1"]
    assert (meta.total_puzzles, meta.total_groups, meta.num_puzzle_identifiers) == (10, 6, 12)
    assert meta.mean_puzzle_examples == pytest.approx((4 * 1.0 + 6 * 4.0) / 10)
    batches = collect(ds)
    assert [n for n, _, _ in batches] == ["all"] * 2 + ["all1"] * 12
    got_b = np.concatenate([x["inputs"] for n, x, _ in batches if n == "all1"])
    np.testing.assert_array_equal(got_b, np.load(os.path.join(b, "train", "all__inputs.npy")))
    train = collect(PuzzleDataset(make_config([a, b], batch=2), split="train"))
    # "all": 4 one-example groups -> 2 batches; "all1": 2 groups, each filling a batch of 2 from one puzzle.
    assert [n for n, _, _ in train] == ["all"] * 2 + ["all1"] * 2
    assert ds.state_dict() == {"iters": 0, "skip_batches": 0} and train is not None


def test_merged_paths_with_different_seq_len_raise(tmp_path):
    a = write_copy_task(str(tmp_path / "a"), 2, 1, SEQ_LEN, VOCAB)
    b = write_copy_task(str(tmp_path / "b"), 2, 1, SEQ_LEN + 1, VOCAB)
    with pytest.raises(ValueError, match="'seq_len'") as exc:
        PuzzleDataset(make_config([a, b]))
    assert a in str(exc.value) and b in str(exc.value)


# ---- DataLoader -----------------------------------------------------------------------

def test_dataloader_worker_yields_same_batches(copy_dir):
    direct = collect(PuzzleDataset(make_config([copy_dir], batch=4, seed=3, epochs=2)))
    loader = make_dataloader(PuzzleDataset(make_config([copy_dir], batch=4, seed=3, epochs=2)), "cpu")
    assert loader.num_workers == 1 and loader.prefetch_factor == 8 and loader.persistent_workers
    assert_same_batches(collect(loader), direct)
    in_process = make_dataloader(PuzzleDataset(make_config([copy_dir], batch=4, seed=3, epochs=2)), "cpu",
                                 num_workers=0)
    assert_same_batches(collect(in_process), direct)


def test_a_worker_of_another_pool_loads_in_process(copy_dir, monkeypatch):
    """Inside a joblib (loky) worker, as under hydra/launcher=joblib, torch's loader worker cannot start ('Process'
    object has no attribute 'env'): the loader iterates in the job's process, with the same batches."""
    import multiprocessing

    monkeypatch.setattr(multiprocessing, "get_start_method", lambda allow_none=False: "loky")
    direct = collect(PuzzleDataset(make_config([copy_dir], batch=4, seed=3, epochs=2)))
    loader = make_dataloader(PuzzleDataset(make_config([copy_dir], batch=4, seed=3, epochs=2)), "cpu")
    assert loader.num_workers == 0
    assert_same_batches(collect(loader), direct)


def test_more_than_one_worker_is_refused(copy_dir):
    loader = torch.utils.data.DataLoader(PuzzleDataset(make_config([copy_dir])), batch_size=None, num_workers=2)
    batches = iter(loader)
    with pytest.raises(RuntimeError, match="at most one DataLoader worker"):
        next(batches)
    batches._shutdown_workers()  # else the workers outlive the test, keeping a core busy for the tests after it
    with pytest.raises(ValueError, match="num_workers must be 0 or 1"):
        make_dataloader(PuzzleDataset(make_config([copy_dir])), "cpu", num_workers=2)


def test_write_identifiers_streams_json_dump_bytes(tmp_path):
    names = ["<blank>", "a", "b|||t1|||0123456789", "é\"\\"]
    write_identifiers(str(tmp_path), iter(names))  # any iterable: the ARC builder streams a million names
    with open(tmp_path / "identifiers.json") as f:
        assert f.read() == json.dumps(names)
    with pytest.raises(ValueError, match="strings"):
        write_identifiers(str(tmp_path), ["<blank>", 3])
    with open(tmp_path / "identifiers.json") as f:
        assert json.load(f) == names  # a rejected write leaves the earlier file
    assert not [n for n in os.listdir(tmp_path) if ".tmp" in n]


@pytest.mark.parametrize("batch, replicas", [(4, 1), (5, 1), (6, 2), (21, 3)])
def test_num_test_batches_is_what_the_test_split_yields(copy_dir, batch, replicas):
    dataset = PuzzleDataset(make_config([copy_dir, copy_dir], batch=batch, test=True, replicas=replicas), "test")
    assert dataset.num_test_batches() == len(collect(dataset))


@pytest.mark.parametrize("replicas", [1, 2])
def test_issue23_c_an_evaluation_batch_is_never_larger_than_the_test_set(uneven_dir, replicas):
    """Issue 23 C: global_batch_size=100000 padded the one test batch to 100000 rows (16 GB); it is cut to the
    test set's 10 examples (per rank: its share, rounded up), every example still yielded once."""
    whole = collect(PuzzleDataset(make_config([uneven_dir], batch=4, test=True), split="test"))
    for rank in range(replicas):
        dataset = PuzzleDataset(make_config([uneven_dir], batch=100000, test=True, rank=rank, replicas=replicas),
                                split="test")
        assert dataset.local_batch_size == -(-10 // replicas)
        batches = collect(dataset)
        assert [eff for _, _, eff in batches] == [10] and dataset.num_test_batches() == 1
        assert batches[0][1]["inputs"].shape == (dataset.local_batch_size, 3)
        if replicas == 1:
            inputs = np.concatenate([b["inputs"][:eff] for _, b, eff in whole])
            np.testing.assert_array_equal(batches[0][1]["inputs"], inputs)
