"""The LMA option `lma_skip` (docs/lma.md "Options"): off by default and then the default LMA exactly, shapes,
effect on the output, gradients, bad values; and the removed `lma_chunk_pos`: false (what it meant) still loads
from a saved or given config, true is refused."""
import pytest
import torch
import yaml
from pydantic import ValidationError

from dataset.common import PuzzleDatasetMetadata
from models.arch import ArchConfig, check_arch_keys
from models.lma import LatentMetaAttention
from models.lma_layout import LatentLayout, SequenceGeometry
from models.recursive_reasoning.trm import TRMConfig
from models.weights import build_model
from tests.helpers import TINY_ARCH, compose_config
from tests.unit.test_lma import SMALL, build_head, small_batch
from training.config import parse_config
from training.trained import read_training_config
from utils.errors import ConfigError

LMA = dict(lma_enable=True, lma_latent_len=4, lma_latent_dim=24)  # L = 9, d0 = 32: C' = 72
DEFAULT_LMA_KEYS = ["model.inner.lma.chunk_decoder.weight", "model.inner.lma.chunk_encoder.down_proj.weight",
                    "model.inner.lma.chunk_encoder.up_proj.weight", "model.inner.lma.residual_encoder.weight"]
OPTIONS = {"skip": dict(lma_skip=True)}


def logits(head) -> torch.Tensor:
    batch = small_batch()
    _, _, _, outputs, _ = head(carry=head.initial_carry(batch), batch=batch, return_keys=["logits"])
    return outputs["logits"]


def test_options_default_off_and_default_lma_has_its_keys_only():
    config = TRMConfig(**dict(SMALL, **LMA))
    assert config.lma_skip is False
    keys = sorted(k for k in build_head(**LMA).state_dict() if "lma" in k)
    assert keys == DEFAULT_LMA_KEYS
    explicit = build_head(**LMA, lma_skip=False)
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
    head = build_head(**LMA, lma_skip=True)
    lma = head.model.inner.lma
    assert lma.skip_proj.weight.shape == (32, 32) and torch.equal(lma.skip_proj.weight, torch.eye(32))
    assert sorted(k.split("lma.")[1] for k in head.state_dict() if "lma" in k and k not in DEFAULT_LMA_KEYS) == [
        "skip_proj.weight"]
    assert logits(head).shape == (2, 8, 6)


def test_skip_reads_the_input_embedding():
    lma = LatentMetaAttention(LatentLayout(15, 6, SequenceGeometry(5, 18, 1)), skip=True)
    x, z = torch.randn(3, 15, 6), torch.randn(3, 5, 18)
    assert torch.allclose(lma.decode(z, x), LatentMetaAttention.decode(lma, z, torch.zeros_like(x)) + x)
    with pytest.raises(ValueError, match="lma_skip is on, so the input embedding x is required"):
        lma.decode(z)


def test_gradients_reach_the_options_parameters():
    head = build_head(**LMA, lma_skip=True)
    batch = small_batch()
    _, loss, _, _, _ = head(carry=head.initial_carry(batch), batch=batch, return_keys=[])
    loss.backward()
    lma = head.model.inner.lma
    for name, param in [("skip_proj", lma.skip_proj.weight), ("D_chunk", lma.chunk_decoder.weight)]:
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("key", ["lma_skip"])
@pytest.mark.parametrize("value", ["maybe", 2, [True]])
def test_bad_values_are_rejected(key, value):
    with pytest.raises(ValidationError, match=key):
        TRMConfig(**dict(SMALL, **LMA, **{key: value}))
    arch = ArchConfig(name="recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1",
                      loss={"name": "losses@ACTLossHead", "loss_type": "stablemax_cross_entropy"}, **{key: value})
    with pytest.raises(ConfigError, match=rf"arch\.{key}: Input should be a valid boolean"):
        check_arch_keys(arch)


# ---------------------------------------------------------------------------------------------
# The removed lma_chunk_pos
# ---------------------------------------------------------------------------------------------
TINY_LMA = [*TINY_ARCH, "arch.lma_enable=true", "arch.lma_latent_len=4"]
METADATA = PuzzleDatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=6, seq_len=8,
                                 num_puzzle_identifiers=3, total_groups=1, mean_puzzle_examples=1, total_puzzles=1,
                                 sets=["all"])


def saved_run_config(tmp_path, **arch) -> str:
    """An all_config.yaml as a run wrote it, with `arch` keys added (as a run before the removal saved them)."""
    raw = compose_config(["data_paths=[unused]", *TINY_LMA])
    raw["arch"].update(arch)
    path = tmp_path / "all_config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


def test_the_model_has_no_chunk_pos_any_more():
    assert "lma_chunk_pos" not in TRMConfig.model_fields
    assert not [name for name, _ in build_head(**LMA).named_parameters() if "chunk_pos" in name]


def test_a_saved_config_with_chunk_pos_false_loads_as_the_model_now(tmp_path):
    """A run saved before the removal (`lma_chunk_pos: false`, the only value that meant this model) loads for
    evaluate.py: the key is dropped, so the re-dumped config and the built model are those of a config without it."""
    config = read_training_config(saved_run_config(tmp_path, lma_chunk_pos=False))
    without = read_training_config(saved_run_config(tmp_path))
    assert "lma_chunk_pos" not in config.arch.model_keys
    assert config.model_dump() == without.model_dump()
    torch.manual_seed(0)
    head = build_model(config.arch, METADATA, 2, torch.device("cpu"))
    torch.manual_seed(0)
    reference = build_model(without.arch, METADATA, 2, torch.device("cpu"))
    state, reference_state = head.state_dict(), reference.state_dict()
    assert list(state) == list(reference_state) and all(torch.equal(state[k], reference_state[k]) for k in state)


@pytest.mark.parametrize("value", [True, 1])
def test_a_saved_config_with_chunk_pos_on_is_refused_in_one_line(tmp_path, value):
    path = saved_run_config(tmp_path, lma_chunk_pos=value)
    with pytest.raises(ConfigError) as err:
        read_training_config(path)
    lines = [line for line in str(err.value).splitlines() if "lma_chunk_pos" in line]
    assert len(lines) == 1 and str(path) in str(err.value)
    assert lines[0].startswith("  arch.lma_chunk_pos: the option was removed")
    assert 'docs/lma.md "Options"' in lines[0] and "remove the key or set it false" in lines[0]
    assert lines[0].endswith(f"(got {value!r})")


def test_a_given_chunk_pos_false_is_ignored_and_true_refused():
    config = parse_config(compose_config(["data_paths=[unused]", *TINY_LMA, "+arch.lma_chunk_pos=false"]))
    assert "lma_chunk_pos" not in config.arch.model_dump()
    with pytest.raises(ConfigError, match=r"arch\.lma_chunk_pos: the option was removed"):
        parse_config(compose_config(["data_paths=[unused]", *TINY_LMA, "+arch.lma_chunk_pos=true"]))
