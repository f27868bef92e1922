"""Latent Meta Attention (docs/lma.md): resequencing, chunk validation, automatic values, TRM integration. (Training
with LMA: tests/integration/test_lma.py.)"""
import pytest
import torch
from pydantic import ValidationError

from dataset.common import PuzzleDatasetMetadata
from models.lma import LatentMetaAttention, from_chunks, resequence, to_chunks, unresequence
from models.lma_layout import (
    LatentLayout,
    SequenceGeometry,
    automatic_latent_len,
    automatic_num_heads,
    check_latent_len,
    valid_latent_lens,
)
from models.losses import ACTLossHead
from models.recursive_reasoning.trm import TRM, TRMConfig
from tests.helpers import TINY_ARCH, compose_config
from tests.helpers import build_head as build_configured_head
from training.config import parse_config
from utils.errors import ConfigError

SMALL = dict(batch_size=2, seq_len=8, vocab_size=6, num_puzzle_identifiers=3, puzzle_emb_ndim=32, puzzle_emb_len=1,
             H_cycles=2, L_cycles=2, L_layers=1, hidden_size=32, expansion=2, num_heads=2, pos_encodings="rope",
             halt_max_steps=2, halt_exploration_prob=0.0, forward_dtype="float32")  # L = 1 + 8 = 9, d0 = 32


def small_batch(batch_size: int = 2) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, 6, (batch_size, 8), dtype=torch.int32, generator=generator)
    return dict(inputs=tokens, labels=tokens.clone(),
                puzzle_identifiers=torch.arange(batch_size, dtype=torch.int32) % 3)


def build_head(**overrides) -> ACTLossHead:
    torch.manual_seed(0)
    return ACTLossHead(TRM(dict(SMALL, **overrides)), loss_type="stablemax_cross_entropy")


def roundtrip(x: torch.Tensor, latent_len: int) -> torch.Tensor:
    length, width = x.shape[-2:]
    return unresequence(from_chunks(to_chunks(resequence(x), latent_len)), length, width)


# ---------------------------------------------------------------------------------------------
# Resequencing and chunking
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["unclean", "clean"])
@pytest.mark.parametrize("batch, length, width", [(1, 15, 6), (3, 9, 32), (2, 97, 16), (2, 1, 5), (4, 30, 7)])
def test_resequence_then_inverse_is_identity(mode, batch, length, width):
    generator = torch.Generator().manual_seed(length * width)
    for latent_len in valid_latent_lens(length, width, mode):
        for dtype in (torch.float32, torch.bfloat16):
            x = torch.randn(batch, length, width, generator=generator).to(dtype)
            back = roundtrip(x, latent_len)
            assert back.shape == x.shape and back.dtype == x.dtype
            assert torch.equal(back, x), f"L_new={latent_len} {dtype}"


def test_resequence_is_column_major():
    x = torch.arange(2 * 3 * 4).view(2, 3, 4)  # (B, L=3, d0=4)
    flat = resequence(x)
    assert flat.tolist() == [[x[b, r, c].item() for c in range(4) for r in range(3)] for b in range(2)]


def test_spec_worked_example_chunks():
    """L=15, d0=6, L_new=5 (C'=18): the (row, column) elements of each chunk, 1-based as in docs/lma.md."""
    length, width, latent_len = 15, 6, 5
    rows = torch.arange(1, length + 1).view(length, 1).expand(length, width)
    cols = torch.arange(1, width + 1).view(1, width).expand(length, width)
    x = (100 * rows + cols).unsqueeze(0)  # element (r, c) holds 100 r + c
    check_latent_len(latent_len, length, width, "unclean")
    chunks = to_chunks(resequence(x), latent_len)
    assert chunks.shape == (1, 5, 18)

    def run(col, first_row, last_row):
        return [(r, col) for r in range(first_row, last_row + 1)]

    expected = [
        run(1, 1, 15) + run(2, 1, 3),
        run(2, 4, 15) + run(3, 1, 6),
        run(3, 7, 15) + run(4, 1, 9),
        run(4, 10, 15) + run(5, 1, 12),
        run(5, 13, 15) + run(6, 1, 15),
    ]
    got = [[(v // 100, v % 100) for v in chunk] for chunk in chunks[0].tolist()]
    assert got == expected


# ---------------------------------------------------------------------------------------------
# Valid latent lengths, errors and automatic values
# ---------------------------------------------------------------------------------------------
def test_valid_latent_lens_per_mode():
    assert valid_latent_lens(15, 6, "unclean") == [1, 2, 3, 5, 6, 9, 10, 15, 18, 30, 45, 90]
    # clean: L_new divides d0 = 6, or L_new = 6k with k dividing L = 15
    assert valid_latent_lens(15, 6, "clean") == [1, 2, 3, 6, 18, 30, 90]


def test_clean_rejects_straddling_and_accepts_aligned():
    with pytest.raises(ValueError, match=r"lma_latent_len \(5\) is not valid for lma_mode=clean"
                                         r".*Nearest valid values: 3 or 6$"):
        check_latent_len(5, 15, 6, "clean")
    for aligned in (6, 18, 2):  # C' = 15 = L; C' = 5 divides L; C' = 45 = 3 L
        check_latent_len(aligned, 15, 6, "clean")
    check_latent_len(5, 15, 6, "unclean")  # the same value straddles, which unclean allows


def test_unclean_rejects_non_divisor_naming_neighbours():
    with pytest.raises(ValueError, match=r"lma_latent_len \(7\) is not valid for lma_mode=unclean: L_new must divide "
                                         r"L\*d0 = 15\*6 = 90 .*Nearest valid values: 6 or 9$"):
        check_latent_len(7, 15, 6, "unclean")
    with pytest.raises(ValueError, match=r"Nearest valid values: 90$"):
        check_latent_len(91, 15, 6, "unclean")


@pytest.mark.parametrize("length, width, mode, expected", [
    (916, 512, "unclean", 128),  # ARC / Maze: 900 + 16 prefix; target 114.5
    (916, 512, "clean", 128),
    (97, 512, "unclean", 16),  # Sudoku: target 12.1 is raised to the floor of 16
    (97, 512, "clean", 16),
    (9, 32, "unclean", 9),  # shorter than the floor: target L itself
    (9, 32, "clean", 8),  # 9 straddles; 8 (divides d0) is nearest
    (15, 6, "clean", 18),  # target 15: 18 is nearer than 6
])
def test_automatic_latent_len(length, width, mode, expected):
    assert automatic_latent_len(length, width, mode, compression=8) == expected


def test_automatic_latent_len_ties_go_to_the_longer():
    # L=126, d0=1: target max(126/8, 16) = 16, equally far from the divisors 14 and 18.
    assert automatic_latent_len(126, 1, "unclean", compression=8) == 18


def test_automatic_num_heads():
    assert automatic_num_heads(512, 8, even_head_dim=True) == 8
    assert automatic_num_heads(24, 8, even_head_dim=True) == 6  # 8 heads of 3 cannot rotate pairs
    assert automatic_num_heads(24, 8, even_head_dim=False) == 8
    assert automatic_num_heads(7, 8, even_head_dim=False) == 7
    with pytest.raises(ValueError, match="even lma_latent_dim"):
        automatic_num_heads(7, 8, even_head_dim=True)


def test_config_resolves_automatic_geometry():
    config = TRMConfig(**dict(SMALL, lma_enable=True))
    assert config.lma_layout == LatentLayout(9, 32, SequenceGeometry(9, 32, 2))
    assert config.lma_layout.chunk_size == 32
    explicit = TRMConfig(**dict(SMALL, lma_enable=True, lma_mode="clean", lma_latent_len=4, lma_latent_dim=24,
                                lma_num_heads=3,
                                pos_encodings="none"))
    assert explicit.geometry == SequenceGeometry(4, 24, 3) and explicit.lma_layout.chunk_size == 72


@pytest.mark.parametrize("overrides, message", [
    (dict(lma_latent_len=7), r"lma_latent_len \(7\) is not valid for lma_mode=unclean.*Nearest valid values: 6 or 8"),
    (dict(lma_mode="clean", lma_latent_len=9),
     r"lma_latent_len \(9\) is not valid for lma_mode=clean.*Nearest valid values: 8 or 16"),
    (dict(lma_latent_len=0), r"lma_latent_len must be >= 1"),
    (dict(lma_latent_dim=24, lma_num_heads=5), r"lma_latent_dim \(24\) must be divisible by lma_num_heads \(5\)"),
    (dict(lma_compression=0), r"lma_compression must be > 0"),
    (dict(lma_mode="tidy"), r"lma_mode"),
])
def test_invalid_lma_config_is_a_validation_error(overrides, message):
    with pytest.raises(ValidationError, match=message):
        TRMConfig(**dict(SMALL, lma_enable=True, **overrides))


def test_lma_keys_are_ignored_when_off():
    config = TRMConfig(**dict(SMALL, lma_latent_len=7))
    assert config.geometry == SequenceGeometry(9, 32, 2)


def test_explicit_latent_heads_of_odd_size_are_rejected_with_rope():
    with pytest.raises(ValidationError, match=r"latent head size lma_latent_dim // lma_num_heads \(60 // 4 = 15\)"):
        TRMConfig(**dict(SMALL, lma_enable=True, lma_latent_len=4, lma_latent_dim=60, lma_num_heads=4))
    TRMConfig(**dict(SMALL, lma_enable=True, lma_latent_len=4, lma_latent_dim=60, lma_num_heads=4,
                     pos_encodings="none"))


def test_trainer_reports_invalid_latent_len_as_config_error(tmp_path):
    raw = compose_config(["data_paths=[unused]", "evaluators=[]", *TINY_ARCH, "global_batch_size=16",
                          "arch.lma_enable=true", "arch.lma_mode=clean", "arch.lma_latent_len=9"])
    metadata = PuzzleDatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=6, seq_len=8,
                                     num_puzzle_identifiers=65, total_groups=64, mean_puzzle_examples=1.0,
                                     total_puzzles=64, sets=["all"])
    with pytest.raises(ConfigError, match=r"(?s)Invalid arch configuration.*lma_latent_len \(9\) is not valid for "
                                          r"lma_mode=clean.*Nearest valid values: 8 or 16"):
        build_configured_head(parse_config(raw), metadata)


# ---------------------------------------------------------------------------------------------
# The encoder/decoder and the TRM integration
# ---------------------------------------------------------------------------------------------
def test_decode_undoes_the_chunking_exactly():
    """With E = identity and D = identity (d' = C'), decode(encode(x)) is x bit for bit."""
    layout = LatentLayout(15, 6, SequenceGeometry(5, 18, 1))
    lma = LatentMetaAttention(layout)
    with torch.no_grad():
        lma.chunk_encoder.down_proj.weight.zero_()
        lma.residual_encoder.weight.copy_(torch.eye(18))
        lma.chunk_decoder.weight.copy_(torch.eye(18))
    x = torch.randn(3, 15, 6)
    z = lma.encode(x)
    assert z.shape == (3, 5, 18)
    assert torch.equal(z, to_chunks(resequence(x), 5))
    assert torch.equal(lma.decode(z), x)


def test_off_builds_the_published_model():
    head = build_head()
    assert head.model.inner.lma is None
    assert not any("lma" in key for key in head.state_dict())
    assert head.model.inner.empty_carry(2).z_H.shape == (2, 9, 32)


@pytest.mark.parametrize("overrides, length, width, heads", [
    (dict(lma_latent_len=4, lma_latent_dim=24), 4, 24, 2),
    (dict(lma_latent_len=3, lma_latent_dim=16, lma_num_heads=4, pos_encodings="learned"), 3, 16, 4),
])
def test_recursion_runs_on_the_latent_geometry(overrides, length, width, heads):
    head = build_head(lma_enable=True, **overrides)
    inner = head.model.inner
    block = inner.L_level.layers[0]
    assert inner.H_init.shape == inner.L_init.shape == (width,)
    assert block.self_attn.num_heads == heads and block.self_attn.head_dim == width // heads
    assert block.mlp.gate_up_proj.weight.shape[1] == width
    if overrides.get("pos_encodings") == "learned":
        assert inner.embed_pos.embedding_weight.shape == (length, width)
    else:
        assert inner.rotary_emb.cos_cached.shape == (length, width // heads)
    chunk = 9 * 32 // length
    assert inner.lma.residual_encoder.weight.shape == (width, chunk)
    assert inner.lma.chunk_decoder.weight.shape == (chunk, width)

    batch = small_batch()
    carry = head.initial_carry(batch)
    assert carry.inner_carry.z_H.shape == carry.inner_carry.z_L.shape == (2, length, width)
    carry, loss, _, outputs, _ = head(carry=carry, batch=batch, return_keys=["logits", "q_halt_logits"])
    assert carry.inner_carry.z_H.shape == (2, length, width)
    assert outputs["logits"].shape == (2, 8, 6) and outputs["q_halt_logits"].shape == (2,)
    assert torch.isfinite(loss)


def test_mlp_t_mixes_latent_positions():
    head = build_head(lma_enable=True, lma_latent_len=6, mlp_t=True, pos_encodings="none")
    assert head.model.inner.L_level.layers[0].mlp_t.gate_up_proj.weight.shape[1] == 6
    batch = small_batch()
    _, loss, _, _, _ = head(carry=head.initial_carry(batch), batch=batch, return_keys=[])
    assert torch.isfinite(loss)


def test_gradients_reach_encoders_and_decoder():
    head = build_head(lma_enable=True, lma_latent_len=4)
    batch = small_batch()
    _, loss, _, _, _ = head(carry=head.initial_carry(batch), batch=batch, return_keys=[])
    loss.backward()
    lma = head.model.inner.lma
    for name, param in [("E_chunk.up", lma.chunk_encoder.up_proj.weight),
                        ("E_chunk.down", lma.chunk_encoder.down_proj.weight),
                        ("E_resid", lma.residual_encoder.weight), ("D_chunk", lma.chunk_decoder.weight),
                        ("token embedding", head.model.inner.embed_tokens.embedding_weight)]:
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, f"{name} gets no gradient"
    assert head.model.inner.puzzle_emb.local_weights.grad.abs().sum() > 0
