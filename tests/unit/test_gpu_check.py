"""The GPU check (benchmarks/gpu_check.py, benchmarks/gpu/): its MFU's FLOP count, how it runs, its
steps and report. (The dry run end to end: tests/integration/test_gpu_check.py.)"""
import json
import os
import sys

import pytest
import torch
import yaml
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import gpu_check, train_step
from benchmarks.gpu import bench, flops, orchestrate, shapes
from models.recursive_reasoning.config import TRMConfig
from tests.helpers import REPO_ROOT

# ----------------------------------------------------------------------------- FLOPs by hand


def test_flops_by_hand_tiny_config():
    # hidden 8, 2 heads of 4, expansion 2: SwiGLU inner round(2*8*2/3) = 11, rounded up to 256.
    # seq 6 + prefix 2 = 8 positions, batch 3: 24 tokens; vocab 5; H_cycles 2, L_cycles 3, L_layers 1.
    arch = dict(hidden_size=8, num_heads=2, expansion=2, L_layers=1, H_cycles=2, L_cycles=3, puzzle_emb_ndim=8,
                puzzle_emb_len=2, pos_encodings="rope", vocab_size=5)
    tokens, inner = 3 * 8, 256
    qkv = 2 * tokens * 8 * (3 * 8)
    o_proj = 2 * tokens * 8 * 8
    scores_and_values = 2 * (2 * 3 * 2 * 8 * 8 * 4)  # Q K^T and A V: 2*B*h*S*S*d_h each
    swiglu = 2 * tokens * 8 * (2 * inner) + 2 * tokens * inner * 8
    block = qkv + o_proj + scores_and_values + swiglu
    heads = 2 * tokens * 8 * 5 + 2 * 3 * 8 * 2  # lm_head on all 8 positions, q_head on position 0
    no_grad = (2 - 1) * (3 + 1) * block  # the first H cycle: 4 network applications, forward only
    with_grad = (3 + 1) * block + heads  # the last H cycle and the heads: forward + backward (2x)
    assert flops.model_flops_per_step(arch, batch=3, seq_len=6) == no_grad + 3 * with_grad == 5_019_552


def test_flops_by_hand_arc_shape():
    # The figure the GPU check divides by the step time: ARC (16 + 900 positions), hidden 512, 8 heads,
    # SwiGLU inner 1536, vocab 12, H_cycles 3, L_cycles 4, L_layers 2, batch 256.
    batch, length, d, inner = 256, 916, 512, 1536
    tokens = batch * length
    block = (2 * tokens * d * 3 * d + 2 * tokens * d * d + 2 * (2 * batch * 8 * length * length * 64)
             + 2 * tokens * d * 2 * inner + 2 * tokens * inner * d)
    heads = 2 * tokens * d * 12 + 2 * batch * d * 2
    expected = 2 * 5 * 2 * block + 3 * (5 * 2 * block + heads)
    config = shapes.benchmark_config(shapes.ARC_SHAPE, "plain", batch)
    assert flops.model_flops_per_step(config, batch, 900) == expected
    assert 101e12 < expected < 103e12

    # LMA: 128 latent tokens of width 512 (8 heads), chunks of C' = 916*512/128 = 3664 numbers.
    lma = shapes.benchmark_config(shapes.ARC_SHAPE, "lma", batch)
    rows, chunk, latent = batch * 128, 3664, batch * 128
    latent_block = (2 * latent * d * 3 * d + 2 * latent * d * d + 2 * (2 * batch * 8 * 128 * 128 * 64)
                    + 2 * latent * d * 2 * inner + 2 * latent * inner * d)
    encode = 2 * rows * chunk * d + 2 * rows * d * d + 2 * rows * chunk * d
    decode = 2 * rows * d * chunk
    assert flops.model_flops_per_step(lma, batch, 900) == (
        2 * 5 * 2 * latent_block + 3 * (5 * 2 * latent_block + encode + decode + heads))


def test_flops_from_the_arch_yaml():
    with open(os.path.join(REPO_ROOT, "config", "arch", "trm.yaml")) as f:
        arch = yaml.safe_load(f)
    arch["puzzle_emb_ndim"] = arch["hidden_size"]  # the file's ${.hidden_size}
    arch["L_cycles"] = 4
    config = shapes.benchmark_config(shapes.ARC_SHAPE, "plain", 8)
    assert flops.model_flops_per_step(arch, 8, 900, vocab_size=12) == flops.model_flops_per_step(config, 8, 900)
    with pytest.raises(ValueError, match="vocab_size"):
        flops.model_flops_per_step(arch, 8, 900)
    with pytest.raises(ValueError, match="counts TRM"):
        flops.model_flops_per_step(dict(arch, name="recursive_reasoning.hrm@HierarchicalReasoningModel_ACTV1"),
                                       8, 900, vocab_size=12)


# ----------------------------------------------------------------------------- FLOPs against torch's counter


def counted_flops(variant: str, batch: int, extra: dict, math_attention: bool) -> tuple[int, int, flops.StepFlops]:
    """(FlopCounterMode's count of one benchmark training step on the CPU, model_flops_per_step, its parts)."""
    shape = shapes.DRY_RUN_SHAPE
    args = train_step.parse_args(shape + ["--batch-size", str(batch), "--dtype", "float32", "--device", "cpu"])
    config = dict(shapes.benchmark_config(shape, variant, batch, "float32"), **extra)
    torch.manual_seed(0)
    head = train_step.build_head(config, torch.device("cpu"))
    head.train()
    optimizers = train_step.build_optimizers(head, args.puzzle_emb_ndim)
    data = train_step.random_batch(args, torch.device("cpu"))
    carry = head.initial_carry(data)
    counter = FlopCounterMode(display=False)
    with counter:
        if math_attention:
            with sdpa_kernel(SDPBackend.MATH):
                train_step.train_step(head, optimizers, carry, data, batch)
        else:
            train_step.train_step(head, optimizers, carry, data, batch)
    parts = flops.step_flops(config, batch, args.seq_len)
    return counter.get_total_flops(), parts.total, parts


@pytest.mark.parametrize("variant, extra", [
    ("plain", {}),
    ("lma", {}),
    ("plain", {"no_ACT_continue": False}),  # one more gradient-free step for the Q-continue target
    ("lma", {"no_ACT_continue": False}),
    ("plain", {"mlp_t": True, "pos_encodings": "none"}),
    ("lma", {"mlp_t": True}),
])
def test_flops_equal_torch_flop_counter(variant, extra):
    # With the math attention kernel, attention is two batched matmuls that the counter sees (backward:
    # two per matmul), so every matmul of the forward, no_grad cycles and backward is counted: equality.
    counted, ours, _ = counted_flops(variant, 3, extra, math_attention=True)
    assert counted == ours


@pytest.mark.parametrize("variant", ["plain", "lma"])
def test_flop_counter_with_the_default_attention_kernel(variant):
    # The default CPU kernel (fused attention) is not in torch's FLOP registry, so the counter misses
    # attention altogether; were it registered with the FlashAttention rule, its backward would count
    # 2.5x forward (Q K^T recomputed). The rest agrees exactly either way.
    counted, ours, parts = counted_flops(variant, 3, {}, math_attention=False)
    geometry = TRMConfig(**shapes.benchmark_config(shapes.DRY_RUN_SHAPE, variant, 3)).geometry
    attention = 2 * (2 * 3 * geometry.num_heads * geometry.length ** 2 * (geometry.width // geometry.num_heads))
    no_grad_applications = parts.applications - parts.applications_with_grad
    attention_total = attention * (no_grad_applications + 3 * parts.applications_with_grad)
    assert counted in (ours - attention_total, ours + attention * parts.applications_with_grad // 2)


# ----------------------------------------------------------------------------- peak table, fallback, runner


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H200", 989.5), ("NVIDIA H100 80GB HBM3", 989.5), ("NVIDIA H100 PCIe", 756.0),
    ("NVIDIA GH200 480GB", 989.5),
    ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA A100 80GB PCIe", 312.0), ("NVIDIA L4", 121.0), ("NVIDIA L40S", 362.05),
    ("NVIDIA GeForce RTX 4090", 165.2), ("Tesla T4", None), ("cpu", None),
])
def test_bf16_peak_by_device_name(name, peak):
    assert flops.bf16_peak_tflops(name) == peak


def test_batch_fallback_on_out_of_memory():
    cleaned = []

    def attempt(batch):
        if batch > 64:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {batch} GiB")
        return {"batch": batch}

    batch, result, tried = bench.with_batch_fallback([256, 128, 64], attempt, lambda: cleaned.append(1))
    assert (batch, result) == (64, {"batch": 64})
    assert [b for b, _ in tried] == [256, 128] and "out of memory" in tried[0][1]
    assert len(cleaned) == 2

    # An out-of-memory reported through another exception (e.g. by the compiler) counts too.
    def wrapped(batch):
        raise RuntimeError("BackendCompilerFailed: ... CUDA out of memory ...")

    assert bench.with_batch_fallback([8, 4], wrapped, lambda: None)[:2] == (None, None)

    def broken(batch):
        raise ValueError("not a memory problem")

    with pytest.raises(ValueError, match="not a memory problem"):
        bench.with_batch_fallback([8, 4], broken, lambda: None)


def test_pytest_summary_counts():
    lines = ["s", "SKIPPED [1] tests/unit/test_optimizers.py:235: needs a CUDA device",
             "1 passed, 1 skipped, 600 deselected in 5.03s"]
    assert orchestrate.pytest_counts(lines) == {"passed": 1, "skipped": 1, "deselected": 600}
    assert orchestrate.pytest_counts(["no summary"]) == {}


def test_a_step_past_its_time_limit_is_killed():
    code, lines = orchestrate.run_streamed([sys.executable, "-c", "print('started', flush=True); "
                                          "import time; time.sleep(60)"], 2, dict(os.environ))
    assert code is None and lines == ["started"]


def test_failures_are_reported_and_the_check_goes_on(monkeypatch, capsys, tmp_path):
    def fail(check, timeout):
        raise RuntimeError("boom")

    steps = [orchestrate.Step("tests", "first", 10, 10, fail),
             orchestrate.Step("adam", "second", 10, 10, lambda c, t: orchestrate.Outcome("pass", "fine")),
             orchestrate.Step("nccl", "third", 10, 10, lambda c, t: c.run_worker(
                 [sys.executable, "-c", "import sys; print('no result'); sys.exit(3)"], t))]
    monkeypatch.setattr(orchestrate.Check, "steps", lambda self: steps)
    json_out = tmp_path / "out.json"
    assert gpu_check.main(["--dry-run", "--json-out", str(json_out)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  first: RuntimeError: boom" in out
    assert "PASS  second: fine" in out
    assert "FAIL  third: exit code 3 without a result (last output: no result)" in out
    assert "gpu_check (dry run): FAIL: 1 passed, 0 skipped, 2 failed" in out
    assert [s["status"] for s in json.loads(json_out.read_text())["steps"]] == ["fail", "pass", "fail"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_without_cuda_the_full_check_asks_for_the_dry_run(capsys):
    assert gpu_check.main([]) == 2
    assert "--dry-run" in capsys.readouterr().out
