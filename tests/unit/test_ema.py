"""EMAHelper: the published update `s = (1-mu)*p + mu*s`, bit for bit, over trainable params only."""
import io

import pytest
import torch
from torch import nn

from models.ema import EMAHelper

MU = 0.9  # far from 1 so every update visibly moves the shadow


class _Net(nn.Module):
    def __init__(self, dtype=torch.float32):
        super().__init__()
        self.lin = nn.Linear(4, 3).to(dtype)
        self.emb = nn.Embedding(5, 2).to(dtype)
        self.frozen = nn.Parameter(torch.ones(3, dtype=dtype), requires_grad=False)
        self.register_buffer("counter", torch.zeros(2, dtype=dtype))


TRAINABLE = {"lin.weight", "lin.bias", "emb.weight"}


def _perturb(model: nn.Module, gen: torch.Generator) -> None:
    """Stand-in for an optimizer step: move every parameter (frozen too, to prove it is ignored)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen).to(p.dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_update_is_the_published_formula_bit_for_bit(dtype):
    gen = torch.Generator().manual_seed(0)
    model = _Net(dtype)
    helper = EMAHelper(mu=MU)
    helper.register(model)
    expected = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    for _ in range(5):
        _perturb(model, gen)
        helper.update(model)
        params = dict(model.named_parameters())
        for name in expected:
            expected[name] = (1. - MU) * params[name].data + MU * expected[name]
    assert set(helper.shadow) == TRAINABLE
    for name, value in expected.items():
        assert helper.shadow[name].dtype == dtype
        assert torch.equal(helper.shadow[name], value), name


def test_update_matches_float64_closed_form():
    # Independent of torch's rounding: with constant p after registering s0, s_n = p + mu^n (s0 - p).
    model = nn.Linear(3, 2).double()
    helper = EMAHelper(mu=MU)
    helper.register(model)
    s0 = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.fill_(2.0)
    for _ in range(4):
        helper.update(model)
    torch.testing.assert_close(helper.shadow["weight"], 2.0 + MU ** 4 * (s0 - 2.0), rtol=0, atol=1e-14)


def test_only_trainable_params_are_tracked_and_written():
    gen = torch.Generator().manual_seed(1)
    model = _Net()
    helper = EMAHelper(mu=MU)
    helper.register(model)
    assert set(helper.shadow) == TRAINABLE  # no frozen param, no buffer
    _perturb(model, gen)
    frozen_before = model.frozen.detach().clone()
    helper.ema(model)
    assert torch.equal(model.frozen, frozen_before)
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert torch.equal(p.detach(), helper.shadow[name])


def test_register_clones_rather_than_aliases():
    model = nn.Linear(2, 2)
    helper = EMAHelper(mu=MU)
    helper.register(model)
    with torch.no_grad():
        model.weight.add_(1.0)
    assert not torch.equal(helper.shadow["weight"], model.weight.detach())


def test_ema_copy_leaves_the_original_untouched():
    gen = torch.Generator().manual_seed(2)
    model = _Net()
    helper = EMAHelper(mu=MU)
    helper.register(model)
    for _ in range(3):
        _perturb(model, gen)
        helper.update(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    copied = helper.ema_copy(model)

    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert copied is not model
    for name, p in copied.named_parameters():
        if name in TRAINABLE:
            assert torch.equal(p.detach(), helper.shadow[name])
            assert not torch.equal(p.detach(), before[name])  # the copy really carries EMA weights
        else:
            assert torch.equal(p.detach(), before[name])
    assert torch.equal(copied.counter, before["counter"])


def test_state_dict_round_trip_continues_identically():
    gen = torch.Generator().manual_seed(3)
    model = _Net()
    helper = EMAHelper(mu=MU)
    helper.register(model)
    for _ in range(2):
        _perturb(model, gen)
        helper.update(model)

    buffer = io.BytesIO()
    torch.save(helper.state_dict(), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer)
    resumed = EMAHelper(mu=MU)
    resumed.load_state_dict(loaded)
    snapshot = {k: v.clone() for k, v in loaded.items()}

    for _ in range(3):
        _perturb(model, gen)
        helper.update(model)
        resumed.update(model)
    assert set(resumed.shadow) == TRAINABLE
    for name in TRAINABLE:
        assert torch.equal(resumed.shadow[name], helper.shadow[name])
        # load_state_dict copied: the caller's tensors were not updated in place.
        assert torch.equal(loaded[name], snapshot[name])


def test_wrapper_prefixes_are_not_part_of_names():
    model = nn.Linear(2, 2)
    helper = EMAHelper(mu=MU)
    helper.register(nn.DataParallel(model))  # on CPU DataParallel is a plain pass-through wrapper
    assert set(helper.shadow) == {"weight", "bias"}
    helper.update(model)  # the bare model uses the same names


def test_update_before_register_raises():
    with pytest.raises(KeyError, match="register"):
        EMAHelper(mu=MU).update(nn.Linear(2, 2))


@pytest.mark.parametrize("mu", [-0.1, 1.5])
def test_invalid_mu_rejected(mu):
    with pytest.raises(ValueError, match="mu"):
        EMAHelper(mu=mu)
