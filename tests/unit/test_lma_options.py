"""The LMA options `lma_skip` and `lma_chunk_pos` (docs/lma.md "Options"): off by default and then the
default LMA exactly, shapes, effect on the output, gradients, bad values."""
import pytest
import torch
from pydantic import ValidationError

from models.arch import ArchConfig, check_arch_keys
from models.lma import LatentMetaAttention
from models.lma_layout import LatentLayout, SequenceGeometry
from models.recursive_reasoning.trm import TRMConfig
from tests.unit.test_lma import SMALL, build_head, small_batch
from utils.errors import ConfigError

LMA = dict(lma_enable=True, lma_latent_len=4, lma_latent_dim=24)  # L = 9, d0 = 32: C' = 72
DEFAULT_LMA_KEYS = ["model.inner.lma.chunk_decoder.weight", "model.inner.lma.chunk_encoder.down_proj.weight",
                    "model.inner.lma.chunk_encoder.up_proj.weight", "model.inner.lma.residual_encoder.weight"]
OPTIONS = {"skip": dict(lma_skip=True), "chunk_pos": dict(lma_chunk_pos=True),
           "both": dict(lma_skip=True, lma_chunk_pos=True)}


def logits(head) -> torch.Tensor:
    batch = small_batch()
    _, _, _, outputs, _ = head(carry=head.initial_carry(batch), batch=batch, return_keys=["logits"])
    return outputs["logits"]


def test_options_default_off_and_default_lma_has_its_keys_only():
    config = TRMConfig(**dict(SMALL, **LMA))
    assert config.lma_skip is False and config.lma_chunk_pos is False
    keys = sorted(k for k in build_head(**LMA).state_dict() if "lma" in k)
    assert keys == DEFAULT_LMA_KEYS
    explicit = build_head(**LMA, lma_skip=False, lma_chunk_pos=False)
    assert torch.equal(logits(explicit), logits(build_head(**LMA)))


@pytest.mark.parametrize("option", OPTIONS)
def test_options_leave_the_default_parameters_and_add_only_their_terms(option):
    """Same seed: the shared parameters are equal (the options' come after them); with the options' parameters
    zeroed the output is the default LMA's bit for bit, and at their initial values it differs."""
    default, head = build_head(**LMA), build_head(**LMA, **OPTIONS[option])
    default_state, state = default.state_dict(), head.state_dict()
    added = sorted(set(state) - set(default_state))
    assert set(default_state) <= set(state) and added
    assert all(torch.equal(default_state[k], state[k]) for k in default_state)
    expected = logits(default)
    assert not torch.equal(logits(head), expected)
    with torch.no_grad():
        for key in added:
            head.get_parameter(key).zero_()
    assert torch.equal(logits(head), expected)


def test_option_shapes():
    head = build_head(**LMA, lma_skip=True, lma_chunk_pos=True)
    lma = head.model.inner.lma
    assert lma.skip_proj.weight.shape == (32, 32) and torch.equal(lma.skip_proj.weight, torch.eye(32))
    assert lma.chunk_pos_emb.shape == (4, 24) and lma.chunk_pos_bias.shape == (4, 72)
    assert not lma.chunk_pos_bias.any()  # the decoder bias starts at zero
    assert sorted(k.split("lma.")[1] for k in head.state_dict() if "lma" in k and k not in DEFAULT_LMA_KEYS) == [
        "chunk_pos_bias", "chunk_pos_emb", "skip_proj.weight"]
    assert logits(head).shape == (2, 8, 6)


def test_skip_reads_the_input_embedding():
    lma = LatentMetaAttention(LatentLayout(15, 6, SequenceGeometry(5, 18, 1)), skip=True)
    x, z = torch.randn(3, 15, 6), torch.randn(3, 5, 18)
    assert torch.allclose(lma.decode(z, x), LatentMetaAttention.decode(lma, z, torch.zeros_like(x)) + x)
    with pytest.raises(ValueError, match="lma_skip is on, so the input embedding x is required"):
        lma.decode(z)


def test_gradients_reach_the_options_parameters():
    head = build_head(**LMA, lma_skip=True, lma_chunk_pos=True)
    batch = small_batch()
    _, loss, _, _, _ = head(carry=head.initial_carry(batch), batch=batch, return_keys=[])
    loss.backward()
    lma = head.model.inner.lma
    for name, param in [("skip_proj", lma.skip_proj.weight), ("chunk_pos_emb", lma.chunk_pos_emb),
                        ("chunk_pos_bias", lma.chunk_pos_bias), ("D_chunk", lma.chunk_decoder.weight)]:
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("key", ["lma_skip", "lma_chunk_pos"])
@pytest.mark.parametrize("value", ["maybe", 2, [True]])
def test_bad_values_are_rejected(key, value):
    with pytest.raises(ValidationError, match=key):
        TRMConfig(**dict(SMALL, **LMA, **{key: value}))
    arch = ArchConfig(name="recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1",
                      loss={"name": "losses@ACTLossHead", "loss_type": "stablemax_cross_entropy"}, **{key: value})
    with pytest.raises(ConfigError, match=rf"arch\.{key}: Input should be a valid boolean"):
        check_arch_keys(arch)
