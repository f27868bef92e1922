"""What the published recursive-reasoning family shares (SPEC §4 and §8).

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
from typing import Callable, ClassVar, Literal, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, model_validator
from torch import nn

from models.layers import Attention, CastedEmbedding, CastedLinear, CosSin, RotaryEmbedding, SwiGLU, rms_norm, trunc_normal_init_
from models.lma import LatentLayout, LatentMetaAttention, LMAMode, SequenceGeometry, resolve_latent_layout
from models.sparse_embedding import CastedSparseEmbedding

FORWARD_DTYPES = ("float32", "bfloat16", "float16", "float64")  # float64: numerics checks


class RecursiveReasoningConfig(BaseModel):
    """Model configuration: the `arch` keys plus what the trainer derives from the dataset.

    These are the keys every published class has, plus ours (mlp_t, LMA). Published configs (and
    the fixtures made from them) carry recursion keys that some variants do not use (the baseline's
    `H_cycles`, TRM's `H_layers`): those are accepted and ignored, as each variant's config says.
    A key of another member that would change behaviour here (HRM given `no_ACT_continue`) is
    rejected with the reason (`unsupported_keys`); anything else unknown is rejected too.
    """

    model_config = ConfigDict(extra="forbid")

    # Keys that must be >= 1 for this variant (the others may be absent or unused).
    positive_keys: ClassVar[tuple[str, ...]] = ("H_cycles", "L_cycles", "L_layers", "halt_max_steps")

    batch_size: int
    seq_len: int
    vocab_size: int
    num_puzzle_identifiers: int
    puzzle_emb_ndim: int = 0

    H_cycles: int
    L_cycles: int
    H_layers: int = 0
    L_layers: int

    hidden_size: int
    expansion: float
    num_heads: int
    pos_encodings: Literal["rope", "learned", "none"]
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0

    halt_max_steps: int
    halt_exploration_prob: float
    forward_dtype: Literal[FORWARD_DTYPES] = "bfloat16"  # type: ignore[valid-type]
    mlp_t: bool = False
    causal: bool = False  # the published trainer always passes causal=False

    # Latent Meta Attention front-end (models/lma.py, SPEC §7); off = the published model exactly.
    lma_enable: bool = False
    lma_mode: LMAMode = "unclean"
    lma_latent_len: int | None = None  # L_new; None = automatic (see models.lma.automatic_latent_len)
    lma_latent_dim: int | None = None  # d'; None = hidden_size
    lma_num_heads: int | None = None  # None = the most heads up to num_heads that split d' evenly
    lma_compression: float = 8.0  # automatic L_new ~ L / lma_compression

    # Keys of other members of the family that mean something else here: key -> why, and what to use.
    unsupported_keys: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _reject_unsupported(cls, values):
        if isinstance(values, dict):
            given = [key for key in cls.unsupported_keys if key in values]
            if given:
                raise ValueError("; ".join(f"{key} is not a key of this architecture: {cls.unsupported_keys[key]}"
                                           for key in given))
        return values

    @model_validator(mode="after")
    def _check(self) -> "RecursiveReasoningConfig":
        too_small = [key for key in self.positive_keys if getattr(self, key) < 1]
        if too_small:
            raise ValueError(f"{', '.join(self.positive_keys)} must all be >= 1 (got "
                             + ", ".join(f"{key}={getattr(self, key)}" for key in too_small) + ")")
        if not 0.0 <= self.halt_exploration_prob <= 1.0:
            raise ValueError(f"halt_exploration_prob must be in [0, 1], got {self.halt_exploration_prob}")
        if not self.mlp_t:
            self._check_heads()
        if self.puzzle_emb_ndim < 0:
            raise ValueError("puzzle_emb_ndim must be >= 0")
        if self.lma_enable:
            _ = self.lma_layout  # resolving it raises a ValueError naming the nearest valid values
        return self

    def _check_heads(self) -> None:
        """Heads of hidden_size // num_heads features, as published.

        The published attention does not require num_heads to divide hidden_size: it attends over
        num_heads * head_dim features (504 of 512 with the baseline's 12 heads) and projects back.
        RoPE rotates pairs of features, so with it the head size must be even.
        """
        head_dim = self.hidden_size // self.num_heads if self.num_heads > 0 else 0
        if head_dim < 1:
            raise ValueError(f"num_heads ({self.num_heads}) must be between 1 and hidden_size ({self.hidden_size})")
        if self.pos_encodings == "rope" and head_dim % 2:
            raise ValueError(f"with pos_encodings=rope the head size hidden_size // num_heads "
                             f"({self.hidden_size} // {self.num_heads} = {head_dim}) must be even")

    @property
    def prefix_len(self) -> int:
        """Number of puzzle-embedding tokens prepended to the sequence: as many as the puzzle
        embedding fills, ceil(puzzle_emb_ndim / hidden_size) (HRM and the baseline, as published)."""
        return -(-self.puzzle_emb_ndim // self.hidden_size)

    # -- ACT as the published class does it (used by ACTModel.forward) --------------------------
    @property
    def halts_on_q_halt_alone(self) -> bool:
        """True: halt where q_halt > 0; False: where q_halt > q_continue."""
        return False

    @property
    def trains_q_continue(self) -> bool:
        """Compute the Q-continue target (one more gradient-free step) in training, so the loss adds its loss."""
        return True

    def halts_adaptively(self, training: bool) -> bool:
        """Whether the Q head may halt a sequence before halt_max_steps (in training, or in evaluation)."""
        return training

    @property
    def total_len(self) -> int:
        return self.prefix_len + self.seq_len

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.forward_dtype)

    @property
    def lma_layout(self) -> LatentLayout:
        """The LMA chunking with its automatic values filled in (only meaningful with lma_enable)."""
        return resolve_latent_layout(
            self.total_len, self.hidden_size, self.num_heads, mode=self.lma_mode, latent_len=self.lma_latent_len,
            latent_dim=self.lma_latent_dim, latent_heads=self.lma_num_heads, compression=self.lma_compression,
            uses_attention=not self.mlp_t, uses_rope=self.pos_encodings == "rope")

    @property
    def geometry(self) -> SequenceGeometry:
        """What the recursion runs on: the input sequence, or the latent one with LMA."""
        if self.lma_enable:
            return self.lma_layout.latent
        return SequenceGeometry(self.total_len, self.hidden_size, self.num_heads)


class TRMFamilyConfig(RecursiveReasoningConfig):
    """TRM and its single-z / six-latent ablations: a configurable prefix and the `no_ACT_continue` choice."""

    puzzle_emb_len: int = 16  # 0 = ceil(puzzle_emb_ndim / hidden_size)
    no_ACT_continue: bool = True

    @model_validator(mode="after")
    def _check_prefix(self) -> "TRMFamilyConfig":
        if self.puzzle_emb_len < 0:
            raise ValueError("puzzle_emb_len must be >= 0")
        if self.puzzle_emb_ndim > self.prefix_len * self.hidden_size:
            raise ValueError(f"puzzle_emb_ndim ({self.puzzle_emb_ndim}) does not fit in puzzle_emb_len "
                             f"({self.puzzle_emb_len}) tokens of hidden_size ({self.hidden_size})")
        return self

    @property
    def prefix_len(self) -> int:
        """`puzzle_emb_len` tokens (0 = as many as the embedding fills).

        Without a puzzle embedding (puzzle_emb_ndim = 0) there is no prefix, whatever
        puzzle_emb_len says (the published code crashes on that combination).
        """
        if self.puzzle_emb_ndim == 0 or self.puzzle_emb_len == 0:
            return super().prefix_len
        return self.puzzle_emb_len

    @property
    def halts_on_q_halt_alone(self) -> bool:
        return self.no_ACT_continue

    @property
    def trains_q_continue(self) -> bool:
        return not self.no_ACT_continue


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
    return type(carry)(**{f.name: fn(f.name.removeprefix("z_"), getattr(carry, f.name)) for f in dataclasses.fields(carry)})


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

    def forward(self, hidden_states: torch.Tensor, input_injection: torch.Tensor | None, cos_sin: CosSin | None) -> torch.Tensor:
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

        self.embed_tokens = CastedEmbedding(config.vocab_size, d, init_std=1.0 / self.embed_scale, cast_to=self.forward_dtype)
        self.lm_head = CastedLinear(d, config.vocab_size)
        self.q_head = CastedLinear(d, 2, bias=True)
        if config.puzzle_emb_ndim > 0:
            # Zero-initialised: a new puzzle starts from "no puzzle-specific information".
            self.puzzle_emb = CastedSparseEmbedding(config.num_puzzle_identifiers, config.puzzle_emb_ndim,
                                                    batch_size=config.batch_size, init_std=0, cast_to=self.forward_dtype)
        if config.pos_encodings == "rope":
            self.rotary_emb = RotaryEmbedding(geometry.width // geometry.num_heads, geometry.length, config.rope_theta)
        elif config.pos_encodings == "learned":
            self.embed_pos = CastedEmbedding(geometry.length, geometry.width, init_std=1.0 / math.sqrt(geometry.width),
                                             cast_to=self.forward_dtype)

        self.build_networks()
        for name in latent_names(self.carry_cls):
            self.register_buffer(f"{name}_init", trunc_normal_init_(torch.empty(geometry.width, dtype=self.forward_dtype), std=1))
        with torch.no_grad():
            # Q head starts at "do not halt" (sigmoid(-5) ~ 0.007) so early training runs all steps.
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5)
        # Created last and only when enabled, so that without LMA the parameters, their
        # initialisation order and the state-dict keys are the published ones.
        self.lma = LatentMetaAttention(config.lma_layout) if config.lma_enable else None

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

    def head_input(self, answer: torch.Tensor) -> torch.Tensor:
        """What lm_head and q_head read: the answer latent, decoded back to (B, L, d0) with LMA."""
        return answer if self.lma is None else self.lma.decode(answer)

    def empty_carry(self, batch_size: int, device: torch.device | None = None):
        shape = (batch_size, self.geometry.length, self.geometry.width)
        return self.carry_cls(**{f.name: torch.zeros(shape, dtype=self.forward_dtype, device=device)
                                 for f in dataclasses.fields(self.carry_cls)})

    def reset_carry(self, reset: torch.Tensor, carry):
        reset = reset.view(-1, 1, 1)
        return map_carry(carry, lambda name, z: torch.where(reset, getattr(self, f"{name}_init"), z))

    def forward(self, carry, batch: dict[str, torch.Tensor]):
        x = self.input_injection(self.input_embeddings(batch["inputs"], batch["puzzle_identifiers"]))
        carry = self.recursion(carry, x, self.cos_sin())
        answer = self.head_input(getattr(carry, self.answer_field))
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
    def puzzle_emb(self):
        return self.inner.puzzle_emb

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
