"""What the published recursive-reasoning family shares (docs/model.md and docs/architectures.md).

TRM, HRM, the single-latent and six-latent ablations and the plain-transformer baseline all use
the same input embedding, post-norm blocks, LM and Q heads, ACT wrapper and loss; they differ
only in which latent states they carry between deep-supervision steps and in how one step
updates them. So an architecture here is:

- a carry dataclass: one field `z_<name>` per latent state, each reset to a fixed buffer
  `<name>_init` (the field names give the published state-dict keys `H_init`, `L_init`, ...);
- an inner module (`RecursiveInner` subclass) holding its recursion policy: TRM and its
  ablations define `latent_recursion` (one of the T cycles; the shared `recursion` runs T of
  them and back-propagates through the last), HRM and the baseline replace `recursion` (and
  `build_networks`, as they have an H network) altogether;
- an `ACTModel` subclass naming its config and inner classes (the published class path).

Everything else (embeddings, heads, carries, the LMA front-end, halting) lives here once.
"""
import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, ClassVar, TypeVar

import torch
from torch import nn

from models.layers import (
    Attention,
    CastedEmbedding,
    CastedLinear,
    CosSin,
    RotaryEmbedding,
    SwiGLU,
    rms_norm,
    trunc_normal_init_,
)
from models.lma import LatentMetaAttention
from models.lma_layout import SequenceGeometry
from models.recursive_reasoning.config import RecursiveReasoningConfig
from models.sparse_embedding import CastedSparseEmbedding


# ---------------------------------------------------------------------------------------------
# Carries
# ---------------------------------------------------------------------------------------------
@dataclass
class InnerCarry:
    """TRM and HRM: the answer and one latent, each (B, geometry.length, geometry.width)."""

    z_H: torch.Tensor  # y: the current answer ((B, prefix + seq_len, d) without LMA)
    z_L: torch.Tensor  # z: the latent reasoning state


@dataclass
class ACTCarry:
    inner_carry: object  # the variant's carry dataclass (e.g. InnerCarry)
    steps: torch.Tensor  # int32 (B,): deep-supervision steps taken by each sequence
    halted: torch.Tensor  # bool (B,): sequences to be replaced by new data at the next call
    current_data: dict[str, torch.Tensor]


Carry = TypeVar("Carry")


def latent_names(carry_cls: type) -> list[str]:
    """`z_H`, `z_L` -> `H`, `L`: the names of the init buffers (`H_init`, ...) of a carry's fields."""
    return [field.name.removeprefix("z_") for field in dataclasses.fields(carry_cls)]


def map_carry(carry: Carry, fn: Callable[[str, torch.Tensor], torch.Tensor]) -> Carry:
    """A carry of the same type with fn(latent name, tensor) applied to every field."""
    return type(carry)(**{f.name: fn(f.name.removeprefix("z_"), getattr(carry, f.name))
                          for f in dataclasses.fields(carry)})


# ---------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------
class Block(nn.Module):
    """Post-norm block: token mixing (attention, or an MLP across positions) then a SwiGLU."""

    def __init__(self, config: RecursiveReasoningConfig, geometry: SequenceGeometry | None = None):
        super().__init__()
        geometry = geometry or config.geometry
        self.norm_eps = config.rms_norm_eps
        self.uses_mlp_t = config.mlp_t
        if config.mlp_t:
            self.mlp_t = SwiGLU(geometry.length, config.expansion)
        else:
            self.self_attn = Attention(geometry.width, geometry.num_heads, causal=config.causal)
        self.mlp = SwiGLU(geometry.width, config.expansion)

    def forward(self, hidden_states: torch.Tensor, cos_sin: CosSin | None) -> torch.Tensor:
        if self.uses_mlp_t:
            # Mix positions on the transposed tensor; the norm there is over positions too,
            # which is what the published model does.
            h = hidden_states.transpose(1, 2)
            hidden_states = rms_norm(h + self.mlp_t(h), self.norm_eps).transpose(1, 2)
        else:
            hidden_states = rms_norm(hidden_states + self.self_attn(hidden_states, cos_sin), self.norm_eps)
        return rms_norm(hidden_states + self.mlp(hidden_states), self.norm_eps)


class ReasoningModule(nn.Module):
    """A stack of blocks that first adds its injection: net(h, injection) = blocks(h + injection)."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, hidden_states: torch.Tensor, input_injection: torch.Tensor | None,
                cos_sin: CosSin | None) -> torch.Tensor:
        if input_injection is not None:
            hidden_states = hidden_states + input_injection
        for layer in self.layers:
            hidden_states = layer(hidden_states, cos_sin)
        return hidden_states


# ---------------------------------------------------------------------------------------------
# One deep-supervision step, up to the recursion policy
# ---------------------------------------------------------------------------------------------
class RecursiveInner(nn.Module):
    """Embeddings, heads, init vectors and carries around a variant's `recursion`.

    With LMA the recursion (blocks, positions, latents and their init vectors) runs on the
    latent geometry; the input embedding is encoded into it once per step and the answer
    decoded back for the heads.
    """

    carry_cls: ClassVar[type] = InnerCarry
    answer_field: ClassVar[str] = "z_H"  # the latent the LM and Q heads read

    def __init__(self, config: RecursiveReasoningConfig):
        super().__init__()
        self.config = config
        self.forward_dtype = config.dtype
        self.puzzle_emb_len = config.prefix_len
        self.embed_scale = math.sqrt(config.hidden_size)
        d = config.hidden_size
        self.geometry = geometry = config.geometry

        self.embed_tokens = CastedEmbedding(config.vocab_size, d, init_std=1.0 / self.embed_scale,
                                            cast_to=self.forward_dtype)
        self.lm_head = CastedLinear(d, config.vocab_size)
        self.q_head = CastedLinear(d, 2, bias=True)
        if config.puzzle_emb_ndim > 0:
            # Zero-initialised: a new puzzle starts from "no puzzle-specific information".
            self.puzzle_emb = CastedSparseEmbedding(config.num_puzzle_identifiers, config.puzzle_emb_ndim,
                                                    batch_size=config.batch_size, init_std=0,
                                                    cast_to=self.forward_dtype)
        if config.pos_encodings == "rope":
            self.rotary_emb = RotaryEmbedding(geometry.width // geometry.num_heads, geometry.length, config.rope_theta)
        elif config.pos_encodings == "learned":
            self.embed_pos = CastedEmbedding(geometry.length, geometry.width, init_std=1.0 / math.sqrt(geometry.width),
                                             cast_to=self.forward_dtype)

        self.build_networks()
        for name in latent_names(self.carry_cls):
            self.register_buffer(f"{name}_init",
                                 trunc_normal_init_(torch.empty(geometry.width, dtype=self.forward_dtype), std=1))
        with torch.no_grad():
            # Q head starts at "do not halt" (sigmoid(-5) ~ 0.007) so early training runs all steps.
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5)
        # Created last and only when enabled, so that without LMA the parameters, their
        # initialisation order and the state-dict keys are the published ones.
        self.lma = LatentMetaAttention(config.lma_layout, skip=config.lma_skip) if config.lma_enable else None

    # -- the recursion policy: what a variant defines --------------------------------------------
    def build_networks(self) -> None:
        """Register the networks under their published names: TRM and its ablations share one, `L_level`."""
        self.L_level = self.make_network(self.config.L_layers)

    def latent_recursion(self, carry, x: torch.Tensor, cos_sin: CosSin | None):
        """One of the T (H_cycles) cycles of a deep-supervision step."""
        raise NotImplementedError

    def recursion(self, carry, x: torch.Tensor, cos_sin: CosSin | None):
        """One deep-supervision step: T cycles, only the last one back-propagated through.

        This is TRM's deep recursion: the earlier cycles only move the state towards a better
        starting point, and not storing their activations is what keeps memory constant in T.
        """
        with torch.no_grad():
            for _ in range(self.config.H_cycles - 1):
                carry = self.latent_recursion(carry, x, cos_sin)
        return self.latent_recursion(carry, x, cos_sin)

    def make_network(self, num_layers: int) -> ReasoningModule:
        return ReasoningModule([Block(self.config, self.geometry) for _ in range(num_layers)])

    # -- shared ---------------------------------------------------------------------------------
    def cos_sin(self) -> CosSin | None:
        return self.rotary_emb() if hasattr(self, "rotary_emb") else None

    def input_embeddings(self, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor) -> torch.Tensor:
        """x: token embeddings with the puzzle-embedding prefix, scaled by sqrt(d).

        Learned positions are added here only without LMA; with LMA they belong to the latent
        sequence (`input_injection`).
        """
        embedding = self.embed_tokens(inputs.to(torch.int32))
        if self.config.puzzle_emb_ndim > 0:
            puzzle = self.puzzle_emb(puzzle_identifiers)
            pad = self.puzzle_emb_len * self.config.hidden_size - puzzle.shape[-1]
            if pad > 0:
                puzzle = nn.functional.pad(puzzle, (0, pad))
            embedding = torch.cat((puzzle.view(-1, self.puzzle_emb_len, self.config.hidden_size), embedding), dim=-2)
        if self.config.pos_encodings == "learned" and self.lma is None:
            embedding = 0.707106781 * (embedding + self.embed_pos.embedding_weight.to(self.forward_dtype))
        return self.embed_scale * embedding

    def input_injection(self, x: torch.Tensor) -> torch.Tensor:
        """What the recursion adds to its input: x itself, or with LMA its latent encoding Z.

        Learned positions are those of the latent sequence, mixed in as the plain model mixes
        them into x (equal weights, table stored at 1/sqrt(width) and scaled up).
        """
        if self.lma is None:
            return x
        z = self.lma.encode(x)
        if self.config.pos_encodings == "learned":
            positions = math.sqrt(z.shape[-1]) * self.embed_pos.embedding_weight.to(z.dtype)
            z = 0.707106781 * (z + positions)
        return z

    def head_input(self, answer: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """What lm_head and q_head read: the answer latent, decoded back to (B, L, d0) with LMA.

        `embedding` is the input embedding x the step encoded (read by the decoder's `lma_skip` path).
        """
        return answer if self.lma is None else self.lma.decode(answer, embedding)

    def empty_carry(self, batch_size: int, device: torch.device | None = None):
        shape = (batch_size, self.geometry.length, self.geometry.width)
        return self.carry_cls(**{f.name: torch.zeros(shape, dtype=self.forward_dtype, device=device)
                                 for f in dataclasses.fields(self.carry_cls)})

    def reset_carry(self, reset: torch.Tensor, carry):
        reset = reset.view(-1, 1, 1)
        return map_carry(carry, lambda name, z: torch.where(reset, getattr(self, f"{name}_init"), z))

    def forward(self, carry, batch: dict[str, torch.Tensor]):
        embedding = self.input_embeddings(batch["inputs"], batch["puzzle_identifiers"])
        carry = self.recursion(carry, self.input_injection(embedding), self.cos_sin())
        answer = self.head_input(getattr(carry, self.answer_field), embedding)
        logits = self.lm_head(answer)[:, self.puzzle_emb_len:]
        q_logits = self.q_head(answer[:, 0]).to(torch.float32)
        return map_carry(carry, lambda _, z: z.detach()), logits, (q_logits[..., 0], q_logits[..., 1])


# ---------------------------------------------------------------------------------------------
# Adaptive computation time
# ---------------------------------------------------------------------------------------------
class ACTModel(nn.Module):
    """A variant wrapped in ACT: each call runs one deep-supervision step and decides who halts.

    Subclasses (the published class names) only set `config_cls` and `inner_cls`.
    """

    config_cls: ClassVar[type[RecursiveReasoningConfig]]
    inner_cls: ClassVar[type[RecursiveInner]]

    def __init__(self, config_dict: dict):
        super().__init__()
        self.config = self.config_cls(**config_dict)
        self.inner = self.inner_cls(self.config)

    @property
    def puzzle_emb(self) -> nn.Module | None:
        """The sparse puzzle embedding, None when puzzle_emb_ndim is 0 (training code reaches it here)."""
        return getattr(self.inner, "puzzle_emb", None)

    def initial_carry(self, batch: dict[str, torch.Tensor]) -> ACTCarry:
        batch_size = batch["inputs"].shape[0]
        device = batch["inputs"].device
        return ACTCarry(
            inner_carry=self.inner.empty_carry(batch_size, device),
            steps=torch.zeros((batch_size,), dtype=torch.int32, device=device),
            halted=torch.ones((batch_size,), dtype=torch.bool, device=device),  # all "halted": load data first call
            current_data={k: torch.empty_like(v) for k, v in batch.items()},
        )

    def forward(self, carry: ACTCarry, batch: dict[str, torch.Tensor]):
        # Halted sequences restart from the init state with the next example of the batch.
        inner_carry = self.inner.reset_carry(carry.halted, carry.inner_carry)
        steps = torch.where(carry.halted, 0, carry.steps)
        current_data = {k: torch.where(carry.halted.view((-1,) + (1,) * (batch[k].ndim - 1)), batch[k], v)
                        for k, v in carry.current_data.items()}

        inner_carry, logits, (q_halt_logits, q_continue_logits) = self.inner(inner_carry, current_data)
        outputs = {"logits": logits, "q_halt_logits": q_halt_logits, "q_continue_logits": q_continue_logits}

        with torch.no_grad():
            steps = steps + 1
            is_last_step = steps >= self.config.halt_max_steps
            halted = is_last_step
            # Evaluation runs halt_max_steps so that batches stay aligned (unless the config halts there too).
            if self.config.halt_max_steps > 1 and self.config.halts_adaptively(self.training):
                halted = halted | self.wants_to_halt(q_halt_logits, q_continue_logits)
                if self.training:
                    halted = halted & (steps >= self._min_halt_steps(q_halt_logits, steps))
                    if self.config.trains_q_continue:
                        outputs["target_q_continue"] = self._q_continue_target(inner_carry, current_data, is_last_step)
                else:
                    outputs["actual_steps"] = steps.to(torch.float32)

        return ACTCarry(inner_carry, steps, halted, current_data), outputs

    def wants_to_halt(self, q_halt_logits: torch.Tensor, q_continue_logits: torch.Tensor) -> torch.Tensor:
        """The halting rule this model trains with (the one definition; inference-time halting uses it too)."""
        if self.config.halts_on_q_halt_alone:
            return q_halt_logits > 0
        return q_halt_logits > q_continue_logits

    def _min_halt_steps(self, q_halt_logits: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """Exploration: with prob halt_exploration_prob a sequence must run U[2, halt_max_steps] steps."""
        explore = torch.rand_like(q_halt_logits) < self.config.halt_exploration_prob
        return explore * torch.randint_like(steps, low=2, high=self.config.halt_max_steps + 1)

    def _q_continue_target(self, inner_carry, current_data: dict, is_last_step: torch.Tensor) -> torch.Tensor:
        """Q-learning target for "continue": the value of the next step, from one more (gradient-free) step."""
        _, _, (next_q_halt, next_q_continue) = self.inner(inner_carry, current_data)
        return torch.sigmoid(torch.where(is_last_step, next_q_halt, torch.maximum(next_q_halt, next_q_continue)))
