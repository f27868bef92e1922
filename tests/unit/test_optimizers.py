"""Adam-atan2 (docs/training.md) against a per-element float64 reference, sign-SGD on the sparse puzzle
embedding, and the learning-rate schedule. (Sign-SGD across two gloo ranks: tests/integration/test_distributed.py.)"""
import io
import math
import sys
import types

import pytest
import torch

from models import optimizers
from models.optimizers import AdamAtan2, build_adam_atan2
from models.sparse_embedding import CastedSparseEmbedding, SparseEmbeddingSignSGD, sparse_sign_sgd_step
from training.state import cosine_schedule_with_warmup_lr

SHAPES = [(5,), (2, 3), (2, 2, 3), ()]
BETAS = (0.9, 0.99)
WEIGHT_DECAY = 0.1
# Changed every step like the trainer's schedule does; includes lr=0 (the first warmup step).
LRS = [1e-2, 5e-3, 0.0, 2e-2, 1e-2, 3e-3]


# ----------------------------------------------------------------------------- reference

def _reference_adam_atan2(p0: list, grads: list, lrs: list, betas, wd) -> tuple[list, list, list]:
    """The docs/training.md formula one python float at a time (float64), t starting at 1."""
    b1, b2 = betas
    p, m, v = list(p0), [0.0] * len(p0), [0.0] * len(p0)
    for t, (g_step, lr) in enumerate(zip(grads, lrs), start=1):
        for i, g in enumerate(g_step):
            p[i] *= 1 - lr * wd
            m[i] = m[i] + (1 - b1) * (g - m[i])
            v[i] = v[i] + (1 - b2) * (g * g - v[i])
            p[i] -= (lr / (1 - b1 ** t)) * math.atan2(m[i], math.sqrt(v[i]) / math.sqrt(1 - b2 ** t))
    return p, m, v


def _make_problem(dtype: torch.dtype, seed: int = 0):
    """Initial params and a gradient per step and param; one gradient entry is kept 0 at every
    step so atan2(0, 0) = 0 is exercised."""
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in SHAPES]
    grads = [[torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in SHAPES] for _ in LRS]
    for step_grads in grads:
        step_grads[0][0] = 0.0
    return params, grads


def _run(params0, grads, lrs, foreach=None):
    params = [torch.nn.Parameter(p.clone()) for p in params0]
    opt = AdamAtan2(params, lr=lrs[0], betas=BETAS, weight_decay=WEIGHT_DECAY, foreach=foreach)
    for step_grads, lr in zip(grads, lrs):
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
    return params, opt


def _check_against_reference(params0, grads, params, opt, atol):
    for k, p0 in enumerate(params0):
        ref_p, ref_m, ref_v = _reference_adam_atan2(
            p0.double().flatten().tolist(), [g[k].double().flatten().tolist() for g in grads], LRS, BETAS, WEIGHT_DECAY)
        state = opt.state[params[k]]
        torch.testing.assert_close(params[k].detach().double().flatten(), torch.tensor(ref_p, dtype=torch.float64),
                                   rtol=0, atol=atol)
        torch.testing.assert_close(state["exp_avg"].double().flatten(), torch.tensor(ref_m, dtype=torch.float64),
                                   rtol=0, atol=atol)
        torch.testing.assert_close(state["exp_avg_sq"].double().flatten(), torch.tensor(ref_v, dtype=torch.float64),
                                   rtol=0, atol=atol)
        assert float(state["step"]) == len(LRS)


# ----------------------------------------------------------------------------- Adam-atan2

@pytest.mark.parametrize("foreach", [True, False])
def test_adam_atan2_matches_formula_float64(foreach):
    params0, grads = _make_problem(torch.float64)
    params, opt = _run(params0, grads, LRS, foreach=foreach)
    _check_against_reference(params0, grads, params, opt, atol=1e-13)
    # The update is not negligible, so a missing term (bias correction, decay) could not hide in atol.
    assert (params[1].detach() - params0[1]).abs().max() > 1e-2


@pytest.mark.parametrize("foreach", [True, False])
def test_adam_atan2_matches_formula_float32(foreach):
    params0, grads = _make_problem(torch.float32)
    params, opt = _run(params0, grads, LRS, foreach=foreach)
    assert all(p.dtype == torch.float32 for p in params)
    _check_against_reference(params0, grads, params, opt, atol=2e-6)


def test_adam_atan2_foreach_and_loop_are_bit_identical():
    params0, grads = _make_problem(torch.float32, seed=1)
    fast, _ = _run(params0, grads, LRS, foreach=True)
    slow, _ = _run(params0, grads, LRS, foreach=False)
    for a, b in zip(fast, slow):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_adam_atan2_low_precision_computes_in_float32(dtype):
    # The kernel does the math in float32 and rounds once on store, so one step from a fresh state
    # equals the float32 step rounded to `dtype`, for the foreach and the per-tensor path alike.
    params0, grads = _make_problem(dtype, seed=4)
    high, high_opt = _run([p.float() for p in params0], [[g.float() for g in s] for s in grads[:1]], LRS[:1])
    for foreach in (True, False):
        low, low_opt = _run(params0, grads[:1], LRS[:1], foreach=foreach)
        for a, b in zip(low, high):
            assert a.dtype == dtype
            assert torch.equal(a.detach(), b.detach().to(dtype))
            for key in ("exp_avg", "exp_avg_sq"):
                assert torch.equal(low_opt.state[a][key], high_opt.state[b][key].to(dtype))
    # Over several steps both paths still agree bit for bit.
    fast, _ = _run(params0, grads, LRS, foreach=True)
    slow, _ = _run(params0, grads, LRS, foreach=False)
    for a, b in zip(fast, slow):
        assert torch.equal(a, b)


def test_adam_atan2_first_step_is_signed_lr():
    # At t=1 with wd=0: m = (1-b1) g, v = (1-b2) g^2, so the update is lr/(1-b1) * atan2((1-b1) g, |g|).
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64))
    p.grad = torch.tensor([3.0, -0.5, 0.0], dtype=torch.float64)
    AdamAtan2([p], lr=0.1, betas=(0.9, 0.99), weight_decay=0.0).step()
    expected_step = 0.1 / 0.1 * math.atan2(0.1, 1.0)
    torch.testing.assert_close(p.detach(),
                               torch.tensor([1.0 - expected_step, 2.0 + expected_step, -1.0], dtype=torch.float64),
                               rtol=0, atol=1e-15)


def test_adam_atan2_state_dict_round_trip_continues_identically():
    params0, grads = _make_problem(torch.float32, seed=2)
    half = len(LRS) // 2
    params, opt = _run(params0, grads[:half], LRS[:half])

    # Save model + optimizer as a checkpoint would, then restore into fresh objects.
    buffer = io.BytesIO()
    torch.save({"params": [p.detach() for p in params], "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer)
    resumed = [torch.nn.Parameter(t.clone()) for t in checkpoint["params"]]
    resumed_opt = AdamAtan2(resumed, lr=1.0, betas=BETAS, weight_decay=WEIGHT_DECAY)
    resumed_opt.load_state_dict(checkpoint["opt"])

    for step_grads, lr in zip(grads[half:], LRS[half:]):
        for original, restored, g in zip(params, resumed, step_grads):
            original.grad, restored.grad = g.clone(), g.clone()
        for o in (opt, resumed_opt):
            for group in o.param_groups:
                group["lr"] = lr
            o.step()

    for original, restored in zip(params, resumed):
        assert torch.equal(original, restored)
        a, b = opt.state[original], resumed_opt.state[restored]
        assert set(a) == set(b) == {"step", "exp_avg", "exp_avg_sq"}
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
        assert b["step"].dtype == torch.float32 and float(b["step"]) == len(LRS)


def test_adam_atan2_skips_params_without_grad():
    with_grad = torch.nn.Parameter(torch.ones(3))
    without_grad = torch.nn.Parameter(torch.full((2,), 5.0))
    with_grad.grad = torch.ones(3)
    opt = AdamAtan2([with_grad, without_grad], lr=0.1, weight_decay=0.5)
    opt.step()
    assert torch.equal(without_grad.detach(), torch.full((2,), 5.0))
    assert len(opt.state[without_grad]) == 0
    assert not torch.equal(with_grad.detach(), torch.ones(3))
    assert float(opt.state[with_grad]["step"]) == 1.0


def test_adam_atan2_rejects_complex_params():
    p = torch.nn.Parameter(torch.zeros(2, dtype=torch.complex64))
    p.grad = torch.ones(2, dtype=torch.complex64)
    with pytest.raises(RuntimeError, match="complex"):
        AdamAtan2([p]).step()


@pytest.mark.parametrize("kwargs, match", [
    (dict(lr=-1e-3), "learning rate"),
    (dict(lr=float("nan")), "learning rate"),
    (dict(betas=(1.0, 0.99)), "beta1"),
    (dict(betas=(0.9, -0.1)), "beta2"),
    (dict(weight_decay=-0.1), "weight_decay"),
])
def test_adam_atan2_validates_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AdamAtan2([torch.nn.Parameter(torch.zeros(1))], **kwargs)


def test_build_adam_atan2_uses_ours_on_cpu():
    params = (torch.nn.Parameter(torch.zeros(2)) for _ in range(3))  # a generator must work too
    opt = build_adam_atan2(params, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    assert type(opt) is AdamAtan2
    assert len(opt.param_groups[0]["params"]) == 3
    group = opt.param_groups[0]
    assert (group["lr"], group["betas"], group["weight_decay"]) == (1e-4, (0.9, 0.95), 0.1)

    # Param-group dicts whose params are generators keep all their params too.
    groups = [{"params": (torch.nn.Parameter(torch.zeros(1)) for _ in range(2)), "lr": 0.5}]
    opt = build_adam_atan2(groups, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    assert len(opt.param_groups[0]["params"]) == 2 and opt.param_groups[0]["lr"] == 0.5


class _FakeFused:
    def __init__(self, params, lr, betas, weight_decay):
        self.args = (list(params), lr, betas, weight_decay)


def test_build_adam_atan2_picks_fused_only_when_importable_and_all_cuda(monkeypatch):
    fake_module = types.ModuleType("adam_atan2")
    fake_module.AdamATan2 = _FakeFused
    monkeypatch.setitem(sys.modules, "adam_atan2", fake_module)
    params = [torch.nn.Parameter(torch.zeros(2))]

    # Package importable but params on the CPU: the fused kernel cannot run them.
    assert type(build_adam_atan2(params, 1e-3, (0.9, 0.99), 0.0)) is AdamAtan2

    monkeypatch.setattr(optimizers, "all_on_cuda", lambda ps: True)
    fused = build_adam_atan2(params, 1e-3, (0.9, 0.99), 0.0)
    assert isinstance(fused, _FakeFused) and fused.args == (params, 1e-3, (0.9, 0.99), 0.0)

    # Import failing (the normal case without a CUDA toolchain): ours, even for "CUDA" params.
    monkeypatch.setitem(sys.modules, "adam_atan2", None)  # makes `import adam_atan2` raise ImportError
    assert type(build_adam_atan2(params, 1e-3, (0.9, 0.99), 0.0)) is AdamAtan2


@pytest.mark.gpu
def test_adam_atan2_cuda_matches_cpu():
    params0, grads = _make_problem(torch.float32, seed=3)
    cpu, _ = _run(params0, grads, LRS)
    gpu, _ = _run([p.to("cuda") for p in params0], [[g.to("cuda") for g in s] for s in grads], LRS)
    for a, b in zip(cpu, gpu):
        torch.testing.assert_close(b.detach().cpu(), a.detach(), rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- sign-SGD

def _expected_sign_sgd(weights, ids, grads, lr, wd):
    """Per unique id: sum its gradient rows, then w*(1-lr*wd) - lr*sign(sum); others untouched."""
    out = weights.clone()
    for i in sorted(set(ids.tolist())):
        summed = sum(grads[k] for k in range(len(ids)) if int(ids[k]) == i)
        out[i] = weights[i] * (1 - lr * wd) - lr * torch.sign(summed)
    return out


def test_sparse_sign_sgd_sums_duplicates_before_sign():
    weights = torch.arange(18, dtype=torch.float32).reshape(6, 3) / 7
    ids = torch.tensor([2, 4, 2], dtype=torch.int32)
    grads = torch.tensor([[1.0, -1.0, 0.5], [0.25, -2.0, 0.0], [-3.0, 1.0, 0.5]])
    original = weights.clone()
    lr, wd = 0.5, 0.1
    sparse_sign_sgd_step(grads, ids, weights, lr=lr, weight_decay=wd, world_size=1)

    decay = 1 - lr * wd
    # Row 2: sums are (-2, 0, 1): the middle entry cancels, so only decay moves it.
    torch.testing.assert_close(weights[2], original[2] * decay - lr * torch.tensor([-1.0, 0.0, 1.0]), rtol=0, atol=1e-7)
    torch.testing.assert_close(weights[4], original[4] * decay - lr * torch.tensor([1.0, -1.0, 0.0]), rtol=0, atol=1e-7)
    # Untouched rows are bit-identical: no weight decay outside the batch.
    for row in (0, 1, 3, 5):
        assert torch.equal(weights[row], original[row])
    assert torch.equal(weights, _expected_sign_sgd(original, ids, grads, lr, wd))


def _embedding_step(emb: CastedSparseEmbedding, ids, grad_out, lr, wd, world_size):
    """One training step of the embedding through the optimizer class, as the trainer drives it."""
    opt = SparseEmbeddingSignSGD(emb.buffers(), world_size=world_size, lr=lr, weight_decay=wd)
    emb.train()
    out = emb(ids)
    out.backward(grad_out)
    opt.step()


def test_sparse_embedding_sign_sgd_optimizer_single_process():
    torch.manual_seed(0)
    emb = CastedSparseEmbedding(8, 4, batch_size=5, init_std=1.0, cast_to=torch.float32)
    original = emb.weights.clone()
    ids = torch.tensor([1, 6, 1, 3, 6], dtype=torch.int32)
    grad_out = torch.randn(5, 4)
    _embedding_step(emb, ids, grad_out, lr=0.1, wd=0.5, world_size=1)
    assert torch.equal(emb.weights, _expected_sign_sgd(original, ids, grad_out, 0.1, 0.5))
    assert not torch.equal(emb.weights[1], original[1])


# ----------------------------------------------------------------------------- learning-rate schedule

def test_lr_schedule():
    assert cosine_schedule_with_warmup_lr(0, 1.0, 10, 110) == 0.0
    assert cosine_schedule_with_warmup_lr(5, 1.0, 10, 110) == pytest.approx(0.5)
    assert cosine_schedule_with_warmup_lr(10, 1.0, 10, 110) == pytest.approx(1.0)
    assert cosine_schedule_with_warmup_lr(60, 1.0, 10, 110, min_ratio=0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert cosine_schedule_with_warmup_lr(110, 1.0, 10, 110, min_ratio=0.1) == pytest.approx(0.1)
    # lr_min_ratio 1.0 (the default) keeps the lr constant after warm-up
    assert cosine_schedule_with_warmup_lr(77, 2.0, 10, 110, min_ratio=1.0) == pytest.approx(2.0)
