"""The published architecture family (docs/architectures.md): HRM, single-z, hier6 and the transformer baseline.

Each variant builds from its `config/arch/<name>.yaml` and published class path, has the
published state-dict keys, loads published-style checkpoints, composes with LMA, and its recursion
matches a hand-written loop (values and gradients). (Trained by the trainer: tests/integration/test_variants.py.)
"""
import contextlib
import os

import pytest
import torch
from pydantic import ValidationError

from models.layers import Attention
from models.losses import ACTLossHead
from models.recursive_reasoning.trm import TinyRecursiveReasoningModel_ACTV1
from models.registry import load_model_class
from models.weights import load_weights
from tests.helpers import REPO_ROOT, compose_config, fixture_gradients, replay_fixture
from training.config import parse_config

CLASS_PATHS = {
    "trm": "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1",
    "hrm": "recursive_reasoning.hrm@HierarchicalReasoningModel_ACTV1",
    "trm_singlez": "recursive_reasoning.trm_singlez@TinyRecursiveReasoningModel_ACTV1",
    "trm_hier6": "recursive_reasoning.trm_hier6@TinyRecursiveReasoningModel_ACTV1",
    "transformers_baseline": "recursive_reasoning.transformers_baseline@Model_ACTV2",
}
NEW_VARIANTS = ["hrm", "trm_singlez", "trm_hier6", "transformers_baseline"]

# Tiny Hydra overrides per variant (each yaml has only the keys its variant uses).
TINY_COMMON = ["arch.hidden_size=32", "arch.num_heads=2", "arch.expansion=2", "arch.halt_max_steps=2",
               "arch.forward_dtype=float32"]
TINY_ARCH = {
    "hrm": ["arch.H_layers=1", "arch.L_layers=1", "arch.H_cycles=2", "arch.L_cycles=2"],
    "trm_singlez": ["arch.L_layers=1", "arch.H_cycles=2", "arch.L_cycles=2", "arch.puzzle_emb_len=1"],
    "trm_hier6": ["arch.L_layers=1", "arch.H_cycles=2", "arch.L_cycles=3", "arch.puzzle_emb_len=1"],
    "transformers_baseline": ["arch.H_layers=2"],  # prefix ceil(32 / 32) = 1, as HRM's
}

# The same tiny models as plain config dicts (float64 for the exact recursion checks).
SMALL = dict(batch_size=2, seq_len=8, vocab_size=6, num_puzzle_identifiers=3, puzzle_emb_ndim=32,
             hidden_size=32, expansion=2, num_heads=2, pos_encodings="rope", halt_max_steps=3,
             halt_exploration_prob=0.0, forward_dtype="float64")
SMALL_ARCH = {  # HRM and the baseline have no puzzle_emb_len: their prefix is ceil(32 / 32) = 1 token
    "trm": dict(H_cycles=3, L_cycles=2, L_layers=1, puzzle_emb_len=1),
    "hrm": dict(H_cycles=3, L_cycles=2, H_layers=1, L_layers=2),
    "trm_singlez": dict(H_cycles=3, L_cycles=2, L_layers=1, puzzle_emb_len=1),
    "trm_hier6": dict(H_cycles=2, L_cycles=4, L_layers=1, puzzle_emb_len=1),
    "transformers_baseline": dict(H_layers=2),
}

BLOCK_KEYS = ["self_attn.qkv_proj.weight", "self_attn.o_proj.weight", "mlp.gate_up_proj.weight", "mlp.down_proj.weight"]
SHARED_KEYS = ["embed_tokens.embedding_weight", "lm_head.weight", "q_head.weight", "q_head.bias", "puzzle_emb.weights"]


def expected_keys(inits: list[str], networks: dict[str, int]) -> set[str]:
    keys = SHARED_KEYS + [f"{name}_init" for name in inits]
    keys += [f"{net}.layers.{i}.{k}" for net, layers in networks.items() for i in range(layers) for k in BLOCK_KEYS]
    return {f"model.inner.{k}" for k in keys}


EXPECTED_KEYS = {
    "trm": expected_keys(["H", "L"], {"L_level": 1}),
    "hrm": expected_keys(["H", "L"], {"H_level": 1, "L_level": 2}),
    "trm_singlez": expected_keys(["L"], {"L_level": 1}),
    "trm_hier6": expected_keys(["H"] + [f"L{i}" for i in range(1, 7)], {"L_level": 1}),
    "transformers_baseline": expected_keys(["H"], {"H_level": 2}),
}


def build_head(variant: str, **overrides) -> ACTLossHead:
    torch.manual_seed(0)
    model = load_model_class(CLASS_PATHS[variant])({**SMALL, **SMALL_ARCH[variant], **overrides})
    return ACTLossHead(model, loss_type="stablemax_cross_entropy")


def small_batch(batch_size: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, 6, (batch_size, 8), dtype=torch.int32, generator=generator)
    return dict(inputs=tokens, labels=tokens.clone(),
                puzzle_identifiers=torch.arange(batch_size, dtype=torch.int32) % 3)


def randomise_zero_inits(head: ACTLossHead) -> None:
    """Give the puzzle embedding and Q head non-trivial values so that they are exercised."""
    generator = torch.Generator().manual_seed(1)
    inner = head.model.inner
    with torch.no_grad():
        inner.puzzle_emb.weights.copy_(torch.randn(inner.puzzle_emb.weights.shape, generator=generator))
        inner.q_head.weight.copy_(0.1 * torch.randn(inner.q_head.weight.shape, generator=generator))
        inner.q_head.bias.copy_(torch.tensor([0.3, -0.2]))


# ---------------------------------------------------------------------------------------------
# Configs: the published yamls and the class paths
# ---------------------------------------------------------------------------------------------
PUBLISHED_DEFAULTS = {
    "hrm": dict(H_cycles=2, L_cycles=2, H_layers=4, L_layers=4, num_heads=8),
    "trm_singlez": dict(H_cycles=3, L_cycles=6, L_layers=2, num_heads=8, puzzle_emb_len=16, no_ACT_continue=True),
    "trm_hier6": dict(H_cycles=3, L_cycles=6, L_layers=2, num_heads=8, puzzle_emb_len=16, no_ACT_continue=True),
    "transformers_baseline": dict(H_cycles=1, H_layers=8, num_heads=12, act_enabled=True, act_inference=False),
}
# Keys the published HRM and baseline classes do not have (their ACT and prefix rules are fixed).
NOT_PUBLISHED = {"hrm": ("no_ACT_continue", "puzzle_emb_len"),
                 "transformers_baseline": ("no_ACT_continue", "puzzle_emb_len")}


@pytest.mark.parametrize("variant", NEW_VARIANTS)
def test_published_yaml(variant):
    arch = compose_config([f"arch={variant}", "data_paths=[unused]"])["arch"]
    assert arch["name"] == CLASS_PATHS[variant]
    assert arch["loss"] == {"name": "losses@ACTLossHead", "loss_type": "stablemax_cross_entropy"}
    shared = dict(halt_exploration_prob=0.1, halt_max_steps=16, hidden_size=512, expansion=4, puzzle_emb_ndim=512,
                  pos_encodings="rope", forward_dtype="bfloat16", mlp_t=False, lma_enable=False)
    for key, value in {**shared, **PUBLISHED_DEFAULTS[variant]}.items():
        assert arch[key] == value, f"{variant}: {key} = {arch[key]!r}, published {value!r}"
    assert not set(NOT_PUBLISHED.get(variant, ())) & set(arch), f"{variant}: the published class has no such key"
    # The full-size config validates (the model itself is not built: it is large for a test).
    model_keys = {k: v for k, v in arch.items() if k not in ("name", "loss")}
    model_cls = load_model_class(arch["name"])
    config = model_cls.config_cls(**model_keys, batch_size=768, seq_len=81, vocab_size=11, num_puzzle_identifiers=10)
    expected_prefix = 1 if variant in NOT_PUBLISHED else 16  # HRM, baseline: always ceil(512 / 512)
    assert config.prefix_len == expected_prefix


def test_baseline_heads_that_do_not_divide_the_width():
    """12 heads of 512 // 12 = 42 features: attention on 504 features, projected back to 512."""
    attention = Attention(512, 12)
    assert attention.qkv_proj.weight.shape == (3 * 504, 512) and attention.o_proj.weight.shape == (512, 504)
    assert attention(torch.randn(2, 5, 512), None).shape == (2, 5, 512)


@pytest.mark.parametrize("variant, overrides, message", [
    ("trm_hier6", dict(L_cycles=7), r"L_cycles \(7\) must be <= 6"),
    ("hrm", dict(H_layers=0),
     r"H_cycles, L_cycles, H_layers, L_layers, halt_max_steps must all be >= 1 \(got H_layers=0\)"),
    ("hrm", dict(lma_latent_lenght=4), r"lma_latent_lenght"),
    ("transformers_baseline", dict(H_layers=0), r"H_layers, halt_max_steps must all be >= 1"),
    ("transformers_baseline", dict(pos_encodings="rope", hidden_size=30, num_heads=2), r"head size .* must be even"),
])
def test_invalid_configs_are_rejected(variant, overrides, message):
    with pytest.raises(ValidationError, match=message):
        build_head(variant, **overrides)


@pytest.mark.parametrize("variant", ["hrm", "transformers_baseline"])
@pytest.mark.parametrize("key, value", [("no_ACT_continue", True), ("no_ACT_continue", False), ("puzzle_emb_len", 16)])
def test_keys_the_published_class_lacks_are_rejected_with_the_reason(variant, key, value):
    """HRM and the baseline fix their ACT and prefix rules; a TRM key that would seem to change them is an error."""
    with pytest.raises(ValidationError, match=rf"{key} is not a key of this architecture: .*as published"):
        build_head(variant, **{key: value})


def test_prefix_of_hrm_and_baseline_is_what_the_puzzle_embedding_fills():
    for variant in ("hrm", "transformers_baseline"):
        head = build_head(variant, puzzle_emb_ndim=40)
        assert head.model.inner.puzzle_emb_len == 2 and head.model.inner.empty_carry(1).z_H.shape == (1, 10, 32)


def test_recursion_keys_the_baseline_does_not_use_are_accepted_and_ignored():
    """TRM's recursion keys load (published configs carry H_cycles: 1) and change nothing."""
    plain = build_head("transformers_baseline")
    with_keys = build_head("transformers_baseline", H_cycles=3, L_cycles=6, L_layers=2)
    batch = small_batch()
    plain.eval(), with_keys.eval()
    with torch.no_grad():
        out_a = plain(carry=plain.initial_carry(batch), batch=batch, return_keys=["logits"])[3]["logits"]
        out_b = with_keys(carry=with_keys.initial_carry(batch), batch=batch, return_keys=["logits"])[3]["logits"]
    assert torch.equal(out_a, out_b)


# ---------------------------------------------------------------------------------------------
# ACT as each published class does it
# ---------------------------------------------------------------------------------------------
def q_head_towards(head: ACTLossHead, q_halt: float, q_continue: float) -> None:
    """Q logits fixed at (q_halt, q_continue) for every input."""
    with torch.no_grad():
        head.model.inner.q_head.weight.zero_()
        head.model.inner.q_head.bias.copy_(torch.tensor([q_halt, q_continue]))


@pytest.mark.parametrize("variant, q, halts", [
    ("hrm", (0.5, 1.0), False),  # q_halt > 0 but below q_continue: HRM does not halt (TRM's default would)
    ("hrm", (-1.0, -2.0), True),  # q_halt < 0 but above q_continue: HRM halts
    ("transformers_baseline", (0.5, 1.0), False),
    ("transformers_baseline", (-1.0, -2.0), True),
    ("trm", (0.5, 1.0), True),  # no_ACT_continue (default): q_halt > 0 alone
    ("trm", (-1.0, -2.0), False),
])
def test_training_halts_by_the_published_rule(variant, q, halts):
    head = build_head(variant)
    q_head_towards(head, *q)
    head.train()
    carry, _ = head.model(carry=head.initial_carry(small_batch()), batch=small_batch())
    assert carry.halted.tolist() == [halts, halts]


@pytest.mark.parametrize("variant, trains_q_continue", [("hrm", True), ("transformers_baseline", False),
                                                        ("trm", False), ("trm_singlez", False), ("trm_hier6", False)])
def test_q_continue_loss_only_where_published(variant, trains_q_continue):
    head = build_head(variant)
    randomise_zero_inits(head)
    head.train()
    batch = small_batch()
    carry, loss, metrics, _, _ = head(carry=head.initial_carry(batch), batch=batch)
    assert ("q_continue_loss" in metrics) == trains_q_continue
    if trains_q_continue:  # the loss head adds it: 0.5 * (q_halt_loss + q_continue_loss)
        expected = metrics["lm_loss"] + 0.5 * (metrics["q_halt_loss"] + metrics["q_continue_loss"])
        torch.testing.assert_close(loss.detach(), expected)
        assert metrics["q_continue_loss"] > 0


def test_trm_without_no_act_continue_trains_q_continue():
    head = build_head("trm", no_ACT_continue=False)
    head.train()
    batch = small_batch()
    assert "q_continue_loss" in head(carry=head.initial_carry(batch), batch=batch)[2]


@pytest.mark.parametrize("act_enabled, expected", [
    (True, [[True, True]] * 3),  # halts at once, and again after each reset
    (False, [[False, False], [False, False], [True, True]]),  # every sequence runs halt_max_steps = 3
])
def test_baseline_act_enabled_false_runs_halt_max_steps_in_training(act_enabled, expected):
    batch = small_batch()
    head = build_head("transformers_baseline", act_enabled=act_enabled)
    q_head_towards(head, 1.0, -1.0)  # the Q head says halt everywhere
    head.train()
    carry, halted = head.initial_carry(batch), []
    for _ in range(3):
        carry, _ = head.model(carry=carry, batch=batch)
        halted.append(carry.halted.tolist())
    assert halted == expected


def test_baseline_act_inference_halts_in_evaluation_and_reports_actual_steps():
    batch = small_batch()
    for act_inference in (False, True):
        head = build_head("transformers_baseline", act_inference=act_inference)
        q_head_towards(head, 1.0, -1.0)
        head.eval()
        with torch.no_grad():
            carry, outputs = head.model(carry=head.initial_carry(batch), batch=batch)
        assert carry.halted.tolist() == [act_inference] * 2
        assert ("actual_steps" in outputs) == act_inference
        if act_inference:
            assert outputs["actual_steps"].tolist() == [1.0, 1.0]


# ---------------------------------------------------------------------------------------------
# State dicts and published checkpoints
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", list(CLASS_PATHS))
def test_state_dict_keys_are_the_published_ones(variant):
    head = build_head(variant)
    assert set(head.state_dict()) == EXPECTED_KEYS[variant]


@pytest.mark.parametrize("variant", NEW_VARIANTS)
def test_published_checkpoint_loads(variant):
    head = build_head(variant)
    randomise_zero_inits(head)
    published = {f"_orig_mod.{k}": v.clone() for k, v in head.state_dict().items()}  # a compiled model's state dict
    other = build_head(variant)
    torch.manual_seed(123)  # other init vectors and weights than `head`
    load_weights(other, published)
    batch = small_batch()
    head.eval(), other.eval()
    with torch.no_grad():
        expected = head(carry=head.initial_carry(batch), batch=batch, return_keys=["logits", "q_halt_logits"])[3]
        got = other(carry=other.initial_carry(batch), batch=batch, return_keys=["logits", "q_halt_logits"])[3]
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


def test_published_interface_and_prefixed_weights():
    config = dict(batch_size=2, seq_len=4, vocab_size=5, num_puzzle_identifiers=3, puzzle_emb_ndim=16, H_cycles=1,
                  L_cycles=1, H_layers=0, L_layers=1, hidden_size=16, expansion=2, num_heads=2, pos_encodings="rope",
                  halt_max_steps=2, halt_exploration_prob=0.0, forward_dtype="float32", causal=False)
    head = ACTLossHead(TinyRecursiveReasoningModel_ACTV1(config), loss_type="stablemax_cross_entropy")
    batch = dict(inputs=torch.randint(0, 5, (2, 4), dtype=torch.int32),
                 labels=torch.randint(0, 5, (2, 4), dtype=torch.int32),
                 puzzle_identifiers=torch.tensor([1, 2], dtype=torch.int32))
    carry = head.initial_carry(batch)
    carry, loss, metrics, outputs, all_halted = head(carry=carry, batch=batch, return_keys=["logits", "preds"])
    assert outputs["logits"].shape == (2, 4, 5) and outputs["preds"].shape == (2, 4)
    assert loss.ndim == 0 and {"count", "accuracy", "exact_accuracy", "lm_loss", "q_halt_loss"} <= set(metrics)
    assert isinstance(all_halted.item(), bool)

    other = ACTLossHead(TinyRecursiveReasoningModel_ACTV1(config), loss_type="stablemax_cross_entropy")
    published = {f"_orig_mod.{k}": v for k, v in head.state_dict().items()}
    assert any(k.endswith("puzzle_emb.weights") for k in published)
    load_weights(other, published)
    for key, value in head.state_dict().items():
        assert torch.equal(other.state_dict()[key], value)
    del published["_orig_mod.model.inner.H_init"]
    with pytest.raises(ValueError, match="missing keys"):
        load_weights(other, published)


# ---------------------------------------------------------------------------------------------
# Recursion semantics against hand-written loops
# ---------------------------------------------------------------------------------------------
def blocks(network: torch.nn.Module, h: torch.Tensor, cos_sin) -> torch.Tensor:
    """The network's blocks applied in order, without its injection argument."""
    for layer in network.layers:
        h = layer(h, cos_sin)
    return h


def grad_mode(track: bool):
    return contextlib.nullcontext() if track else torch.no_grad()


def reference_trm(inner, carry, x, cos_sin):
    T, n = inner.config.H_cycles, inner.config.L_cycles
    y, z = carry.z_H, carry.z_L
    for t in range(T):
        with grad_mode(t == T - 1):
            for _ in range(n):
                z = blocks(inner.L_level, z + (y + x), cos_sin)
            y = blocks(inner.L_level, y + z, cos_sin)
    return {"z_H": y, "z_L": z}


def reference_hrm(inner, carry, x, cos_sin, one_step_gradient: bool = True):
    """The step as a flat schedule of updates; with the one-step gradient only the final L and H track gradients."""
    schedule = (["L"] * inner.config.L_cycles + ["H"]) * inner.config.H_cycles
    z_H, z_L = carry.z_H, carry.z_L
    for i, update in enumerate(schedule):
        with grad_mode(not one_step_gradient or i >= len(schedule) - 2):
            if update == "L":
                z_L = blocks(inner.L_level, z_L + (z_H + x), cos_sin)
            else:
                z_H = blocks(inner.H_level, z_H + z_L, cos_sin)
    return {"z_H": z_H, "z_L": z_L}


def reference_singlez(inner, carry, x, cos_sin):
    T, n = inner.config.H_cycles, inner.config.L_cycles
    z = carry.z_L
    for t in range(T):
        with grad_mode(t == T - 1):
            for _ in range(n):
                z = blocks(inner.L_level, z + x, cos_sin)
            z = blocks(inner.L_level, z, cos_sin)
    return {"z_L": z}


def reference_hier6(inner, carry, x, cos_sin):
    T, n = inner.config.H_cycles, inner.config.L_cycles
    y = carry.z_H
    z = {i: getattr(carry, f"z_L{i}") for i in range(1, 7)}
    for t in range(T):
        with grad_mode(t == T - 1):
            for i in range(1, n + 1):
                z[i] = blocks(inner.L_level, z[1] + z[2] + z[3] + z[4] + z[5] + z[6] + (y + x), cos_sin)
            y = blocks(inner.L_level, y + (z[1] + z[2] + z[3] + z[4] + z[5] + z[6]), cos_sin)
    return {"z_H": y, **{f"z_L{i}": z[i] for i in range(1, 7)}}


def reference_baseline(inner, carry, x, cos_sin):
    return {"z_H": blocks(inner.H_level, carry.z_H + x, cos_sin)}


REFERENCES = {"trm": reference_trm, "hrm": reference_hrm, "trm_singlez": reference_singlez,
              "trm_hier6": reference_hier6,
              "transformers_baseline": reference_baseline}
ANSWER = {"trm_singlez": "z_L"}


def random_carry(inner, batch_size: int):
    generator = torch.Generator().manual_seed(7)
    empty = inner.empty_carry(batch_size)
    return type(empty)(**{name: torch.randn(value.shape, generator=generator, dtype=value.dtype)
                          for name, value in vars(empty).items()})


def run_reference(variant: str, inner, carry, batch, **kwargs):
    """The reference recursion with the model's own embeddings and heads around it: (new latents, logits, q logits)."""
    x = inner.input_injection(inner.input_embeddings(batch["inputs"], batch["puzzle_identifiers"]))
    latents = REFERENCES[variant](inner, carry, x, inner.cos_sin(), **kwargs)
    answer = latents[ANSWER.get(variant, "z_H")]
    return latents, inner.lm_head(answer)[:, inner.puzzle_emb_len:], inner.q_head(answer[:, 0])


def gradients(inner, outputs: torch.Tensor) -> dict[str, torch.Tensor]:
    inner.zero_grad(set_to_none=True)
    outputs.backward()
    return {name: p.grad.clone() for name, p in inner.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("variant", list(CLASS_PATHS))
def test_recursion_matches_hand_written_loop(variant):
    head = build_head(variant)
    randomise_zero_inits(head)
    inner = head.model.inner
    inner.eval()  # the puzzle embedding reads its table directly, so both runs see the same rows
    batch = small_batch()
    carry = random_carry(inner, 2)

    new_carry, logits, (q_halt, q_continue) = inner(carry, batch)
    ours = gradients(inner, logits.square().sum() + q_halt.sum() - q_continue.sum())
    latents, ref_logits, ref_q = run_reference(variant, inner, carry, batch)
    reference = gradients(inner, ref_logits.square().sum() + ref_q[..., 0].sum() - ref_q[..., 1].sum())

    for name, value in latents.items():
        torch.testing.assert_close(getattr(new_carry, name), value, rtol=0, atol=1e-10, msg=name)
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=1e-10)
    assert set(ours) == set(reference)
    for name in ours:
        torch.testing.assert_close(ours[name], reference[name], rtol=1e-9, atol=1e-10, msg=name)
    assert all(not value.requires_grad for value in vars(new_carry).values()), "the carry must be detached"


def test_hrm_back_propagates_through_the_last_updates_only():
    """HRM's one-step gradient: exactly one L and one H update record gradients, and it matters."""
    head = build_head("hrm")
    inner = head.model.inner
    calls = []
    for name in ("L_level", "H_level"):
        getattr(inner, name).register_forward_hook(
            lambda module, args, out, name=name: calls.append((name, out.requires_grad)))
    batch = small_batch()
    carry = random_carry(inner, 2)
    _, logits, _ = inner(carry, batch)
    H, L = inner.config.H_cycles, inner.config.L_cycles
    assert [name for name, _ in calls] == (["L_level"] * L + ["H_level"]) * H
    assert [name for name, tracked in calls if tracked] == ["L_level", "H_level"]

    ours = gradients(inner, logits.square().sum())
    full = gradients(inner, run_reference("hrm", inner, carry, batch, one_step_gradient=False)[1].square().sum())
    differs = [name for name in ours if not torch.allclose(ours[name], full[name], rtol=1e-6, atol=1e-9)]
    assert differs, "back-propagating through every update should change the gradients"


def test_hier6_untouched_slots_keep_their_init():
    head = build_head("trm_hier6", L_cycles=2)
    inner = head.model.inner
    carry = inner.reset_carry(torch.ones(2, dtype=torch.bool), inner.empty_carry(2))
    new_carry, _, _ = inner(carry, small_batch())
    for i in range(1, 7):
        slot, init = getattr(new_carry, f"z_L{i}"), getattr(inner, f"L{i}_init")
        assert torch.equal(slot, init.expand_as(slot)) == (i > 2), f"slot {i}"


# ---------------------------------------------------------------------------------------------
# LMA composes with every variant
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", NEW_VARIANTS)
def test_lma_composes(variant):
    head = build_head(variant, forward_dtype="float32", lma_enable=True, lma_latent_len=4, lma_latent_dim=24)
    inner = head.model.inner
    batch = small_batch()
    carry = head.initial_carry(batch)
    assert all(value.shape == (2, 4, 24) for value in vars(carry.inner_carry).values())
    head.train()
    carry, loss, _, outputs, _ = head(carry=carry, batch=batch, return_keys=["logits"])
    loss.backward()
    assert outputs["logits"].shape == (2, 8, 6) and torch.isfinite(loss)
    assert inner.lma.residual_encoder.weight.grad.abs().sum() > 0
    assert inner.lma.chunk_decoder.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# The parity test accepts fixtures of every variant
# ---------------------------------------------------------------------------------------------
def write_fixture(variant: str, path: str) -> None:
    """A fixture in the reference format (tests/fixtures/README.md), made by our own model.

    It checks the parity harness (loading each published class path, comparing every field), not
    the numbers: those come from the published code's fixtures in tests/fixtures/.
    """
    config = dict(SMALL, **SMALL_ARCH[variant], forward_dtype="float32", batch_size=3)
    head = ACTLossHead(load_model_class(CLASS_PATHS[variant])(config), loss_type="stablemax_cross_entropy")
    randomise_zero_inits(head)
    batch = small_batch(3)
    batch["labels"][-1] = -100
    keys = ["logits", "q_halt_logits", "q_continue_logits", "preds"]

    def record(carry, loss, metrics, outputs):
        return dict(loss=loss.detach(), metrics={k: v.detach() for k, v in metrics.items()}, outputs=outputs,
                    halted=carry.halted.clone(), steps=carry.steps.clone())

    eval_steps, train_steps = [], []
    head.eval()
    carry = head.initial_carry(batch)
    with torch.no_grad():
        while True:
            carry, loss, metrics, outputs, all_halted = head(carry=carry, batch=batch, return_keys=keys)
            eval_steps.append(record(carry, loss, metrics, outputs))
            if all_halted:
                break
    head.train()
    carry = head.initial_carry(batch)
    for _ in range(2):
        head.zero_grad(set_to_none=True)
        head.model.inner.puzzle_emb.local_weights.grad = None
        carry, loss, metrics, outputs, _ = head(carry=carry, batch=batch, return_keys=["logits", "q_halt_logits"])
        loss.backward()
        step = record(carry, loss, metrics, outputs)
        step["grads"] = {k: v.clone() for k, v in fixture_gradients(head).items()}
        train_steps.append(step)
    torch.save(dict(case=variant, arch_name=CLASS_PATHS[variant], loss_type="stablemax_cross_entropy", config=config,
                    state_dict=head.state_dict(), batch=batch, eval_steps=eval_steps, train_steps=train_steps), path)


@pytest.mark.parametrize("variant", NEW_VARIANTS)
def test_parity_harness_reads_fixtures_of_every_class_path(variant, tmp_path):
    """The harness loads each published class path and compares every field: our own model's fixture replays,
    and the same fixture with one expected logit or one weight changed fails the replay (so a pass means agreement,
    not a comparison that cannot fail)."""
    path = str(tmp_path / f"{variant}.pt")
    write_fixture(variant, path)
    replay_fixture(path)

    def perturbed(change) -> str:
        fixture = torch.load(path, weights_only=False)
        change(fixture)
        changed = str(tmp_path / "perturbed.pt")
        torch.save(fixture, changed)
        return changed

    def one_logit(fixture):
        fixture["eval_steps"][0]["outputs"]["logits"][0, 0, 0] += 1.0

    def one_weight(fixture):
        (key,) = [k for k in fixture["state_dict"] if k.endswith("lm_head.weight")]
        fixture["state_dict"][key] = 2 * fixture["state_dict"][key]

    with pytest.raises(AssertionError, match="eval step 0 logits: max abs error"):
        replay_fixture(perturbed(one_logit))
    with pytest.raises(AssertionError, match="eval step 0 "):
        replay_fixture(perturbed(one_weight))


# ---------------------------------------------------------------------------------------------
# The paper's command for each variant, and the config table models.arch checks against
# ---------------------------------------------------------------------------------------------
def test_readme_commands_are_valid_configs():
    """The paper's command for each variant (docs/architectures.md) composes and validates (data paths not read)."""
    import shlex
    text = open(os.path.join(REPO_ROOT, "docs", "architectures.md")).read()
    section = text[text.index("## The paper's Sudoku-Extreme command for each member"):]
    section = section[:section.index("\n## ")]
    commands = [c for c in section.replace("\\\n", " ").splitlines() if c.startswith("python pretrain.py arch=")]
    assert {shlex.split(c)[2] for c in commands} == {f"arch={v}" for v in NEW_VARIANTS}
    for command in commands:
        config = parse_config(compose_config(shlex.split(command)[2:]))
        assert config.arch.name == CLASS_PATHS[shlex.split(command)[2].removeprefix("arch=")]
        model_keys = dict(config.arch.model_keys, batch_size=768, seq_len=81, vocab_size=11, num_puzzle_identifiers=10)
        load_model_class(config.arch.name).config_cls(**model_keys)


def test_config_classes_by_class_path_are_the_models_own():
    """models.arch checks arch keys through this table (without importing torch); it must match the models."""
    from models.recursive_reasoning.config import CONFIG_CLASSES
    assert set(CONFIG_CLASSES) == set(CLASS_PATHS.values())
    for class_path, config_cls in CONFIG_CLASSES.items():
        assert load_model_class(class_path).config_cls is config_cls, class_path
