"""The CPU path a run takes: thread count from affinity / cgroup / OMP_NUM_THREADS / num_threads, and the
dtype of forward_dtype=auto from the bf16 units (mocked here, so every branch runs on any machine)."""
import pytest
import torch

from dataset.common import PuzzleDatasetMetadata
from models.arch import ArchConfig
from models.weights import build_model, forward_dtype_choice
from tests.helpers import compose_config
from training.config import PretrainConfig
from utils import cpu
from utils.errors import ConfigError

AVX512_BF16_FLAGS = {"fpu", "sse2", "avx512f", "avx512_bf16"}
AMX_FLAGS = AVX512_BF16_FLAGS | {"amx_bf16", "amx_tile"}
NO_BF16_FLAGS = {"fpu", "sse2", "avx2", "avx512f"}


@pytest.fixture
def flags(monkeypatch):
    """Set the CPU flags the code sees; oneDNN's own bf16 check is taken as yes unless a test says no."""
    def set_flags(values: set[str], onednn: bool = True):
        monkeypatch.setattr(cpu, "cpu_flags", lambda: set(values))
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn)
    return set_flags


def test_bf16_units_named_from_the_cpu_flags(flags):
    flags(AMX_FLAGS)
    assert cpu.bf16_units() == "AMX-BF16"
    flags(AVX512_BF16_FLAGS)
    assert cpu.bf16_units() == "AVX512-BF16"
    flags(NO_BF16_FLAGS)
    assert cpu.bf16_units() is None
    flags(AMX_FLAGS, onednn=False)  # the flag alone is not enough: oneDNN must be able to use it
    assert cpu.bf16_units() is None


def test_auto_is_bfloat16_only_on_a_cpu_with_bf16_units(flags):
    flags(AVX512_BF16_FLAGS)
    choice = cpu.resolve_forward_dtype("auto", torch.device("cpu"))
    assert (choice.value, choice.describe()) == ("bfloat16", "bfloat16 (auto: CPU with AVX512-BF16)")
    flags(NO_BF16_FLAGS)
    choice = cpu.resolve_forward_dtype("auto", torch.device("cpu"))
    assert (choice.value, choice.describe()) == ("float32", "float32 (auto: CPU without bf16 units)")
    assert cpu.resolve_forward_dtype("auto", torch.device("mps")).value == "float32"
    # An explicit dtype is never changed, whatever the machine (the published configs keep bfloat16).
    assert cpu.resolve_forward_dtype("bfloat16", torch.device("cpu")).value == "bfloat16"
    assert cpu.resolve_forward_dtype("float32", torch.device("cpu")).reason == "as configured"


def test_auto_on_cuda_follows_bf16_support(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert cpu.resolve_forward_dtype("auto", torch.device("cuda", 0)).value == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert cpu.resolve_forward_dtype("auto", torch.device("cuda", 0)).value == "float32"


@pytest.mark.parametrize("machine, dtype", [(AVX512_BF16_FLAGS, torch.bfloat16), (NO_BF16_FLAGS, torch.float32)])
def test_a_model_built_with_auto_runs_in_the_chosen_dtype(flags, machine, dtype):
    flags(machine)
    config = PretrainConfig(**compose_config(["data_paths=[unused]", "arch.hidden_size=16", "arch.num_heads=2",
                                              "arch.L_layers=1", "arch.forward_dtype=auto"]))
    metadata = PuzzleDatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=4, seq_len=4,
                                     num_puzzle_identifiers=1, total_groups=1, mean_puzzle_examples=1, total_puzzles=1,
                                     sets=["all"])
    head = build_model(config.arch, metadata, 2, torch.device("cpu"))
    assert head.model.inner.forward_dtype == dtype
    assert config.arch.model_keys["forward_dtype"] == "auto"  # the config (and all_config.yaml) keeps what was asked


def test_forward_dtype_choice_names_the_default():
    arch = ArchConfig(name="recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1",
                      loss={"name": "losses@ACTLossHead"})
    assert forward_dtype_choice(arch, torch.device("cpu")).describe() == "bfloat16 (default)"


def test_unresolved_auto_is_refused_by_the_model_config():
    from models.recursive_reasoning.config import TRMConfig
    config = TRMConfig(batch_size=1, seq_len=4, vocab_size=4, num_puzzle_identifiers=1, H_cycles=1, L_cycles=1,
                       L_layers=1, hidden_size=16, expansion=2, num_heads=2, pos_encodings="none",
                       halt_max_steps=1, halt_exploration_prob=0.0, forward_dtype="auto")
    with pytest.raises(ValueError, match="resolved for a device"):
        _ = config.dtype


def test_threads_from_the_key_then_the_environment_then_the_cpus(monkeypatch):
    monkeypatch.setattr(cpu.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(cpu, "cgroup_cpu_limit", lambda: None)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpu.choose_threads(2).describe() == "2 threads (num_threads)"
    assert cpu.choose_threads(None).describe() == "3 threads (OMP_NUM_THREADS)"
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert cpu.choose_threads(None).describe() == "4 threads (CPU affinity 4)"
    # torchrun: the CPUs are shared among the processes of this machine.
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert cpu.choose_threads(None).describe() == "2 threads (CPU affinity 4 / 2 processes)"
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert cpu.choose_threads(None).value == 1


def test_a_cgroup_quota_below_the_affinity_mask_wins(monkeypatch):
    monkeypatch.setattr(cpu.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setattr(cpu, "cgroup_cpu_limit", lambda: 1.5)
    assert cpu.available_cpus() == (2, "cgroup CPU quota")
    monkeypatch.setattr(cpu, "cgroup_cpu_limit", lambda: 32.0)
    assert cpu.available_cpus() == (16, "CPU affinity")


def test_cgroup_files_are_read(monkeypatch, tmp_path):
    v2 = tmp_path / "cpu.max"
    monkeypatch.setattr(cpu, "_CGROUP_V2_MAX", str(v2))
    monkeypatch.setattr(cpu, "_CGROUP_V1", (str(tmp_path / "quota"), str(tmp_path / "period")))
    assert cpu.cgroup_cpu_limit() is None  # neither version present
    v2.write_text("150000 100000\n")
    assert cpu.cgroup_cpu_limit() == 1.5
    v2.write_text("max 100000\n")
    assert cpu.cgroup_cpu_limit() is None
    v2.unlink()
    (tmp_path / "quota").write_text("-1\n")
    (tmp_path / "period").write_text("100000\n")
    assert cpu.cgroup_cpu_limit() is None
    (tmp_path / "quota").write_text("200000\n")
    assert cpu.cgroup_cpu_limit() == 2.0


@pytest.mark.parametrize("value", [0, -1, "two"])
def test_num_threads_is_validated(value):
    with pytest.raises((ConfigError, ValueError)):
        PretrainConfig(**compose_config(["data_paths=[unused]", f"num_threads={value}"]))


def test_an_unknown_forward_dtype_is_refused():
    from training.config import parse_config
    with pytest.raises(ConfigError, match="forward_dtype"):
        parse_config(compose_config(["data_paths=[unused]", "arch.forward_dtype=bf16"]))


def test_apply_threads_sets_the_intra_op_pool():
    before = torch.get_num_threads()
    try:
        cpu.apply_threads(cpu.Choice(1, "num_threads", "thread"))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_training_config_is_checked_without_importing_torch():
    """Key checks (and `pretrain.py --help`) stay fast: the config and its help texts import no torch."""
    import subprocess
    import sys

    from tests.helpers import REPO_ROOT
    code = "import sys, training.config; assert 'torch' not in sys.modules, 'training.config imported torch'"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
