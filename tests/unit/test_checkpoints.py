"""Training states and weights read back (rundir/states.py, models/weights.py, utils/atomic.py).

A state saved by one number of processes resumes on another: the loader's position counts global batches, and the
ACT carry is re-sliced to the new ranks. Every bad file or path is a clear error that gives no unsafe advice, and a
full disk is one line naming the path and the bytes. (Whole runs that resume: tests/integration/test_resume.py.)"""
import os
import pickle

import numpy as np
import pytest
import torch

from dataset.puzzle_dataset import PuzzleDataset, PuzzleDatasetConfig
from rundir.states import load_rank_state, save_file_synced
from tests.helpers import TINY_ARCH, compose_config
from training.checkpointing import batch_sequence
from training.config import parse_config
from utils.errors import CheckpointError, ConfigError

# ---------------------------------------------------------------------------------------------
# Resuming on another number of processes
# ---------------------------------------------------------------------------------------------
STEPS_PER_EPOCH = 4  # copy_task: 64 puzzles (one example each) / global batch 16


def global_dataset(data: str, rank: int = 0, num_replicas: int = 1) -> PuzzleDataset:
    return PuzzleDataset(PuzzleDatasetConfig(seed=0, dataset_paths=[data], rank=rank, num_replicas=num_replicas,
                                             test_set_mode=False, global_batch_size=16, epochs_per_iter=2),
                         split="train")


def ids_of(batches) -> list[list[int]]:
    return [batch["puzzle_identifiers"].tolist() for _, batch, _ in batches]


def test_global_batches_do_not_depend_on_the_number_of_processes(copy_task):
    """The loader position counts global batches: 2 ranks for 3 batches, then 1 rank, is the 1-rank sequence."""
    straight = ids_of(global_dataset(copy_task))
    first = [ids_of(global_dataset(copy_task, rank, 2))[:3] for rank in range(2)]
    rest = global_dataset(copy_task)
    rest.load_state_dict({"iters": 0, "skip_batches": 3})
    resumed = [first[0][k] + first[1][k] for k in range(3)] + ids_of(rest)
    assert resumed == straight and len(straight) == 2 * STEPS_PER_EPOCH


def write_rank_files(state_dir, world_size: int, local: int) -> torch.Tensor:
    """Carries whose rows are their global slot numbers: rank r holds slots r*local .. (r+1)*local-1."""
    os.makedirs(state_dir, exist_ok=True)
    slots = torch.arange(world_size * local)
    for rank in range(world_size):
        part = slots[rank * local:(rank + 1) * local]
        carry = {"inner_carry": {"z_H": part.float().view(-1, 1, 1).expand(-1, 3, 2).clone()},
                 "steps": part.int(), "halted": part % 3 == 0,
                 "current_data": {"inputs": part.view(-1, 1).repeat(1, 4)}}
        save_file_synced({"rng": {"rank": rank}, "carry": carry}, os.path.join(state_dir, f"rank{rank}.pt"))
    return slots


@pytest.mark.parametrize("saved, now", [(2, 1), (1, 2), (2, 4), (4, 2), (3, 2), (2, 3)])
def test_carry_is_re_sliced_to_the_new_ranks(tmp_path, saved, now):
    slots = write_rank_files(tmp_path, saved, local=12 // saved)
    pieces = [load_rank_state(str(tmp_path), rank, now, saved) for rank in range(now)]
    for rank, piece in enumerate(pieces):
        own = slots[rank * (12 // now):(rank + 1) * (12 // now)]
        assert torch.equal(piece["carry"]["steps"], own.int())
        assert torch.equal(piece["carry"]["halted"], own % 3 == 0)
        assert torch.equal(piece["carry"]["inner_carry"]["z_H"][:, 0, 0], own.float())
        assert torch.equal(piece["carry"]["current_data"]["inputs"][:, 0], own)
        # RNG streams are per process: a rank that was saved keeps its own, a new rank gets none (seeded anew).
        assert piece["rng"] == ({"rank": rank} if rank < saved else None)


def test_a_global_batch_the_new_ranks_cannot_share_is_refused(tmp_path):
    write_rank_files(tmp_path, 2, local=3)
    with pytest.raises(CheckpointError, match="global batch of 6, which 4 processes cannot share"):
        load_rank_state(str(tmp_path), 0, 4, 2)


def test_a_missing_rank_file_is_named(tmp_path):
    write_rank_files(tmp_path, 2, local=3)
    os.remove(tmp_path / "rank1.pt")
    with pytest.raises(CheckpointError, match="incomplete: rank1.pt is missing"):
        load_rank_state(str(tmp_path), 0, 1, 2)


# ---------------------------------------------------------------------------------------------
# Bad files and paths: messages that say what is wrong, never unsafe advice
# ---------------------------------------------------------------------------------------------
def test_resume_from_a_run_directory_says_to_name_a_state(tmp_path):
    from rundir.states import load_train_state
    from utils.errors import CheckpointError
    (tmp_path / "train_state_step_4").mkdir()
    (tmp_path / "step_4").write_bytes(b"")
    with pytest.raises(CheckpointError) as err:
        load_train_state(str(tmp_path))
    message = str(err.value)
    assert "fewer processes" not in message
    assert "is a run directory" in message and "train_state_step_4" in message and "resume=auto" in message


def test_random_file_as_checkpoint_gives_no_unsafe_advice(tmp_path):
    from rundir.states import safe_load
    from utils.errors import CheckpointError
    path = tmp_path / "notes.txt"
    path.write_text("these are not weights\n")
    with pytest.raises(CheckpointError) as err:
        safe_load(str(path))
    message = str(err.value)
    assert str(path) in message and "not a PyTorch checkpoint" in message
    assert "weights_only" not in message and "earlier one" not in message


def _tiny_config(copy_task, tmp_path, *overrides, arch=None):
    arch = TINY_ARCH if arch is None else arch
    return parse_config(compose_config([f"data_paths=[{copy_task}]", "evaluators=[]", *arch, "global_batch_size=16",
                                        "epochs=1", "eval_interval=1", "wandb_mode=disabled", "num_workers=0",
                                        f"+checkpoint_path={tmp_path / 'run'}", *overrides]))


def _saved_head(copy_task, tmp_path, *overrides) -> str:
    import torch

    from tests.helpers import build_head, train_metadata
    config = _tiny_config(copy_task, tmp_path, *overrides)
    path = tmp_path / f"weights{len(overrides)}.pt"
    torch.save(build_head(config, train_metadata(config)).state_dict(), path)
    return str(path)


def test_load_checkpoint_of_another_width_is_named_not_crashed(copy_task, tmp_path):
    from tests.helpers import cpu_context, train_metadata
    from training.state import init_train_state
    from utils.errors import CheckpointError
    narrow = _saved_head(copy_task, tmp_path)  # hidden 32
    config = _tiny_config(copy_task, tmp_path, "arch.hidden_size=64", f"+load_checkpoint={narrow}")
    with pytest.raises(CheckpointError, match=r"does not fit this model.*puzzle_emb.weights.*\(65, 32\).*\(65, 64\)"):
        init_train_state(config, train_metadata(config), cpu_context())


def test_load_checkpoint_of_another_variant_is_named(copy_task, tmp_path):
    from tests.helpers import cpu_context, train_metadata
    from training.state import init_train_state
    from utils.errors import CheckpointError
    trm = _saved_head(copy_task, tmp_path)
    hrm = ["arch=hrm", "arch.hidden_size=32", "arch.num_heads=2", "arch.H_layers=1", "arch.L_layers=1",
           "arch.forward_dtype=float32"]
    config = _tiny_config(copy_task, tmp_path, f"+load_checkpoint={trm}", arch=hrm)
    with pytest.raises(CheckpointError, match=r"load_checkpoint .* does not fit this model.*H_level"):
        init_train_state(config, train_metadata(config), cpu_context())


# ---------------------------------------------------------------------------------------------
# A full disk
# ---------------------------------------------------------------------------------------------
def test_disk_full_is_one_clear_line_and_leaves_nothing_behind(tmp_path):
    import errno

    from utils.atomic import write_atomically
    from utils.errors import DiskFullError, UserFacingError
    target = tmp_path / "step_7"

    def write_until_full(f):
        f.write(b"x" * 4096)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskFullError) as err:
        write_atomically(str(target), write_until_full)
    message = str(err.value)
    assert isinstance(err.value, UserFacingError) and "\n" not in message
    assert str(target) in message and "No space left" in message and "4096 bytes" in message
    assert list(tmp_path.iterdir()) == []  # no partial file, no temporary


def _torch_disk_full(written: bytes = b"PK" * 100):
    """What torch.save raises on a full disk: its zip writer's RuntimeError, chained from the OSError."""
    def save(obj, f):
        f.write(written)
        try:
            raise OSError(28, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None
    return save


def _raising(error: BaseException):
    def write(f):
        f.write(b"x" * 100)
        raise error
    return write


def _chained_torch_error(f):
    _torch_disk_full()(None, f)


@pytest.mark.parametrize("write, words", [
    (_raising(OSError(28, "No space left on device")), "No space left on the device"),
    (_raising(OSError("510300 requested and 176000 written")), "No space left on the device"),  # numpy: no errno
    (_chained_torch_error, "No space left on the device"),
    (_raising(RuntimeError("[enforce fail at inline_container.cc:319] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")), "No space left on the device"),
    (_raising(OSError(30, "Read-only file system")), "read-only"),
    (_raising(PermissionError(13, "Permission denied")), "permission denied"),
    (_raising(OSError(5, "Input/output error")), "Input/output error"),
    (_raising(OSError("stale file handle")), "stale file handle"),
], ids=["ENOSPC", "numpy-short-write", "torch-chained", "torch-unchained", "EROFS", "EACCES", "EIO", "no-errno"])
def test_issue23_b_every_write_failure_is_one_line_naming_the_path(tmp_path, write, words):
    """Issue 23 B: a failed write was a raw OSError or torch's RuntimeError (a numpy short write has no errno)."""
    from utils.atomic import write_atomically
    from utils.errors import UserFacingError, WriteError
    target = tmp_path / "step_7"
    with pytest.raises(WriteError) as err:
        write_atomically(str(target), write)
    message = str(err.value)
    assert isinstance(err.value, UserFacingError) and "\n" not in message
    assert str(target) in message and words in message
    assert list(tmp_path.iterdir()) == []  # no partial file, no temporary


def test_issue23_b_other_errors_of_a_writer_pass_through(tmp_path):
    from utils.atomic import write_atomically
    with pytest.raises(ValueError, match="not a write failure"):
        write_atomically(str(tmp_path / "x"), _raising(ValueError("not a write failure")))
    with pytest.raises(RuntimeError, match="CUDA error"):
        write_atomically(str(tmp_path / "x"), _raising(RuntimeError("CUDA error: device-side assert")))
    assert list(tmp_path.iterdir()) == []


def _saving_state(copy_task, tmp_path):
    from tests.helpers import cpu_context, train_metadata
    from training.state import init_train_state
    config = _tiny_config(copy_task, tmp_path)
    metadata = train_metadata(config)
    return config, init_train_state(config, metadata, cpu_context()), metadata


@pytest.mark.parametrize("failing", ["rank0.pt", "step_", "state.pt"])
def test_issue23_b_disk_full_inside_torch_save_leaves_no_partial_training_state(copy_task, tmp_path, monkeypatch,
                                                                               failing):
    """Issue 23 B: torch.save on a full disk raised a chained RuntimeError and left train_state_step_N.tmp/."""
    from tests.helpers import cpu_context
    from training.checkpointing import save_checkpoint
    from utils.errors import DiskFullError
    config, state, metadata = _saving_state(copy_task, tmp_path)
    real_save = torch.save

    def save(obj, f):
        name = os.path.basename(f.name)
        (_torch_disk_full() if name.startswith(failing) else real_save)(obj, f)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(DiskFullError) as err:
        save_checkpoint(config, state, metadata, cpu_context())
    message = str(err.value)
    assert "\n" not in message and config.checkpoint_path in message and "No space left" in message
    left = os.listdir(config.checkpoint_path) if os.path.isdir(config.checkpoint_path) else []
    assert not [name for name in left if ".tmp" in name or name.startswith("train_state_step")], left


def test_issue23_b_disk_full_while_copying_the_model_sources_leaves_no_partial_copy(copy_task, tmp_path,
                                                                                     monkeypatch):
    """Issue 23 B: shutil.copy of the model sources on a full disk was a raw OSError and left half a file."""
    import shutil

    from training.checkpointing import save_code_and_config
    from utils.errors import DiskFullError
    config = _tiny_config(copy_task, tmp_path)

    def copy_until_full(src, dst, *args, **kwargs):
        dst.write(src.read(100))
        raise OSError(28, "No space left on device")

    def copyfile_until_full(src, dst, **kwargs):  # what shutil.copy calls
        with open(src, "rb") as f_src, open(dst, "wb") as f_dst:
            copy_until_full(f_src, f_dst)

    monkeypatch.setattr(shutil, "copyfileobj", copy_until_full)
    monkeypatch.setattr(shutil, "copyfile", copyfile_until_full)
    with pytest.raises(DiskFullError) as err:
        save_code_and_config(config)
    assert "\n" not in str(err.value) and config.checkpoint_path in str(err.value)
    assert os.listdir(config.checkpoint_path) == []  # no half-copied source, no temporary


@pytest.mark.parametrize("text, line", [("lr: 1\narch: [unclosed\nseed: 0\n", None),
                                        ("lr: 1\narch: !!python/object:os.system {}\n", 2)])
def test_issue23_d_unreadable_training_config_is_one_line_naming_file_and_line(tmp_path, text, line):
    """Issue 23 D: a YAML syntax error or a tag safe_load refuses was a long yaml traceback."""
    from training.trained import read_training_config
    path = tmp_path / "all_config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        read_training_config(str(path))
    message = str(err.value)
    assert "\n" not in message and str(path) in message and ", line " in message
    if line is not None:
        assert f", line {line}:" in message


def test_issue23_d_resume_auto_falls_back_to_the_newest_complete_state(tmp_path, capsys):
    """Issue 23 D: the newest state lacking rank0.pt stopped resume=auto; it continues the newest complete one."""
    from training.checkpointing import find_resume_dir
    for step, ranks in ((2, (0, 1)), (4, (0, 1)), (6, (1,))):
        state_dir = tmp_path / f"train_state_step_{step}"
        state_dir.mkdir()
        save_file_synced({"world_size": 2}, str(state_dir / "state.pt"))
        for rank in ranks:
            save_file_synced({"rng": None}, str(state_dir / f"rank{rank}.pt"))
    (tmp_path / "train_state_step_8").mkdir()  # no state.pt at all
    config = parse_config(compose_config(["data_paths=[unused]", "+resume=auto", f"+checkpoint_path={tmp_path}"]))
    assert find_resume_dir(config) == str(tmp_path / "train_state_step_4")
    out = capsys.readouterr().out
    assert "train_state_step_6 (missing rank0.pt)" in out and "train_state_step_8 (missing state.pt)" in out


def test_a_changed_eval_interval_is_named_by_its_config_key():
    saved = batch_sequence({"seed": 0, "global_batch_size": 16, "eval_interval": 2, "epochs": 4})
    now = batch_sequence({"seed": 0, "global_batch_size": 16, "eval_interval": 1, "epochs": 4})
    changed = [k for k in saved if saved[k] != now[k]]
    assert changed == ["eval_interval"]


# ---------------------------------------------------------------------------------------------
# The best checkpoint: weights and record as one unit
# ---------------------------------------------------------------------------------------------
class Killed(BaseException):
    """A SIGKILL at a rename: nothing after it runs."""


def weights_at(step: int) -> torch.nn.Module:
    model = torch.nn.Linear(1, 1, bias=False)
    model.weight.data.fill_(step)
    return model


def test_a_kill_while_saving_the_best_never_pairs_a_record_with_other_weights(tmp_path, monkeypatch):
    """Killed before each rename of a new best in turn: the record read names the step of the weights there."""
    from types import SimpleNamespace

    from rundir.layout import BEST_WEIGHTS
    from training.best import best_on_resume, update_best
    from training.trained import checkpoint_step
    real_replace = os.replace
    for kill_at in range(10):
        run_dir = tmp_path / str(kill_at)
        run_dir.mkdir()
        config = SimpleNamespace(checkpoint_path=str(run_dir), checkpoint_best_metric="m", checkpoint_best_mode="max")
        best = update_best(config, {"m": 0.5}, 6, weights_at(6), None)
        renames = []

        def replace(src, dst, renames=renames, kill_at=kill_at):
            renames.append(dst)
            if len(renames) > kill_at:
                raise Killed
            real_replace(src, dst)

        with monkeypatch.context() as patch:
            patch.setattr(os, "replace", replace)
            try:
                update_best(config, {"m": 0.9}, 12, weights_at(12), best)
                completed = True
            except Killed:
                completed = False
        weights = torch.load(run_dir / BEST_WEIGHTS, weights_only=True)["weight"].item()
        assert checkpoint_step(str(run_dir / BEST_WEIGHTS)) == weights, f"killed at rename {kill_at}"
        assert best_on_resume(str(run_dir), 100)["step"] == weights, f"killed at rename {kill_at}"
        if completed:
            assert weights == 12
            break


def test_a_step_best_changed_by_hand_is_refused(tmp_path):
    from types import SimpleNamespace

    from rundir.best import read_best
    from rundir.layout import BEST_WEIGHTS
    from training.best import update_best
    config = SimpleNamespace(checkpoint_path=str(tmp_path), checkpoint_best_metric="m", checkpoint_best_mode="max")
    update_best(config, {"m": 0.5}, 6, weights_at(6), None)
    assert read_best(str(tmp_path))["step"] == 6
    torch.save(weights_at(99).state_dict(), tmp_path / BEST_WEIGHTS)
    with pytest.raises(CheckpointError, match=r"step_best is not the weights that .*best\.json records \(step 6\)"):
        read_best(str(tmp_path))


# ---------------------------------------------------------------------------------------------
# evaluate.py on a run directory while its training prunes (checkpoint_keep_last=1)
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def pruned_run(copy_task, tmp_path):
    """A run directory with step_3, and `prune()`: training saves step_4 and removes step_3, as keep_last=1 does."""
    import yaml

    from rundir.layout import CONFIG_FILE, weights_path
    from tests.helpers import build_head, train_metadata
    config = parse_config(compose_config([f"data_paths=[{copy_task}]", *TINY_ARCH, "global_batch_size=16"]))
    with open(tmp_path / CONFIG_FILE, "w") as f:
        yaml.safe_dump(config.model_dump(), f)
    weights = build_head(config, train_metadata(config)).state_dict()
    torch.save(weights, weights_path(str(tmp_path), 3))

    def prune():
        torch.save(weights, weights_path(str(tmp_path), 4))
        os.remove(weights_path(str(tmp_path), 3))

    return str(tmp_path), prune


def test_the_newest_weights_pruned_after_the_listing_are_listed_again(pruned_run, monkeypatch):
    import training.trained
    from training.trained import load_trained, open_checkpoint
    run_dir, prune = pruned_run
    real_listing = training.trained.weight_steps

    def listing_then_prune(path):
        steps = real_listing(path)
        if steps == [3]:
            prune()  # between the listing and the read
        return steps

    monkeypatch.setattr(training.trained, "weight_steps", listing_then_prune)
    checkpoint = open_checkpoint(run_dir)
    assert (os.path.basename(checkpoint.weights), checkpoint.step) == ("step_4", 4)
    load_trained(checkpoint, torch.device("cpu"))


def test_weights_pruned_after_opening_the_checkpoint_still_load(pruned_run):
    from training.trained import load_trained, open_checkpoint
    run_dir, prune = pruned_run
    checkpoint = open_checkpoint(run_dir)
    prune()  # while evaluate.py builds its data
    load_trained(checkpoint, torch.device("cpu"))


def test_weights_pruned_at_every_listing_are_said_to_be_pruned(pruned_run, monkeypatch):
    import training.trained
    from training.trained import open_checkpoint
    run_dir, prune = pruned_run
    prune()
    monkeypatch.setattr(training.trained, "weight_steps", lambda path: [3])  # always a listing from before
    with pytest.raises(CheckpointError, match=r"newest weights of .* were pruned before they could be read, 3 times"):
        open_checkpoint(run_dir)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this-must-never-run",))


def _unreadable_files(tmp_path):
    """Random bytes, a plain pickle that would run code, a torch.save'd zip holding such an object, a truncated one."""
    files = {"random": tmp_path / "random.bin", "pickle": tmp_path / "evil.pkl", "zip": tmp_path / "evil.pt",
             "truncated": tmp_path / "step_3"}
    files["random"].write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)))
    with open(files["pickle"], "wb") as f:
        pickle.dump(_RunsCode(), f)
    torch.save({"x": _RunsCode()}, files["zip"])
    torch.save({"w": torch.zeros(64)}, files["truncated"])
    files["truncated"].write_bytes(files["truncated"].read_bytes()[:300])
    return files


TORCH_ADVICE = ("weights_only", "_use_new_zipfile_serialization", "torch.serialization", "torch.save", "torch.load",
                "file an issue", "Re-running", "pytorch.org")


@pytest.mark.parametrize("kind", ["random", "pickle", "zip", "truncated"])
@pytest.mark.parametrize("mmap", [False, True])
def test_issue23_e_unreadable_checkpoint_passes_no_torch_advice(tmp_path, kind, mmap, recwarn):
    from rundir.states import safe_load
    from utils.errors import CheckpointError
    path = _unreadable_files(tmp_path)[kind]
    with pytest.raises(CheckpointError) as err:
        safe_load(str(path), mmap=mmap)
    message = str(err.value)
    assert str(path) in message and "\n" not in message and len(message) < 300 + len(str(path))
    assert not [advice for advice in TORCH_ADVICE if advice in message], message
    assert not [str(w.message) for w in recwarn if "pickle protocol" in str(w.message)]


def test_issue23_e_every_torch_load_goes_through_safe_load():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    offenders = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "tests"]
        for name in files:
            path = os.path.join(folder, name)
            if name.endswith(".py") and path != os.path.join(root, "rundir", "states.py"):
                with open(path) as f:
                    if "torch.load(" in f.read():
                        offenders.append(os.path.relpath(path, root))
    assert not offenders, f"torch.load outside rundir/states.safe_load: {offenders}"


@pytest.mark.parametrize("overrides, named", [(["arch.hidden_size=64"], ["arch.hidden_size: checkpoint 32, now 64"]),
                                              (["arch.expansion=4", "arch.L_layers=2"],
                                               ["arch.L_layers: checkpoint 1, now 2", "arch.expansion: checkpoint 2, "
                                                "now 4"])])
def test_issue23_e_resume_with_another_arch_key_names_the_key(copy_task, tmp_path, overrides, named):
    """Issue 23 E: resuming with arch.hidden_size changed dumped a 15-line state-dict diff."""
    from tests.helpers import cpu_context, train_metadata
    from training.checkpointing import restore_training_state, save_checkpoint
    from training.state import init_train_state
    config = _tiny_config(copy_task, tmp_path)
    metadata = train_metadata(config)
    state_dir = save_checkpoint(config, init_train_state(config, metadata, cpu_context()), metadata, cpu_context())
    changed = _tiny_config(copy_task, tmp_path, *overrides, f"+resume={state_dir}")
    with pytest.raises(CheckpointError) as err:
        restore_training_state(changed, init_train_state(changed, metadata, cpu_context()), metadata, state_dir,
                               cpu_context())
    message = str(err.value)
    assert "\n" not in message and state_dir in message and all(n in message for n in named), message
    assert "size mismatch" not in message, message
