"""The model configuration of the published family: the `arch` keys plus what the trainer derives.

`RecursiveReasoningConfig` holds the keys every member has (and ours: mlp_t, LMA) with the ACT rules
of HRM and the baseline; `TRMFamilyConfig` adds TRM's configurable prefix and `no_ACT_continue`.
Each variant's module subclasses one of them (docs/model.md, docs/architectures.md).
"""
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.lma_layout import LatentLayout, LMAMode, SequenceGeometry, resolve_latent_layout

# float64: numerics checks; auto: chosen for the device when the model is built (utils/cpu.py resolve_forward_dtype)
FORWARD_DTYPES = ("float32", "bfloat16", "float16", "float64", "auto")


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

    batch_size: int = Field(description="set by the trainer: examples per process and step")
    seq_len: int = Field(description="set by the trainer from the dataset")
    vocab_size: int = Field(description="set by the trainer from the dataset")
    num_puzzle_identifiers: int = Field(description="set by the trainer from the dataset")
    puzzle_emb_ndim: int = Field(0,
        description="width of the learned per-puzzle embedding (0 = none); the published configs use hidden_size")

    H_cycles: int = Field(
        description="T: outer recursions per ACT step (y = z_H updated once each), only the last one back-propagated")
    L_cycles: int = Field(description="n: latent updates (z = z_L) per outer recursion")
    H_layers: int = Field(0,
        description="layers of the high-level network (HRM, the baseline); unused by TRM (one shared network)")
    L_layers: int = Field(description="layers of the (low-level / shared) network")

    hidden_size: int = Field(description="model width")
    expansion: float = Field(description="MLP width as a multiple of hidden_size")
    num_heads: int = Field(description="attention heads (head size hidden_size // num_heads)")
    pos_encodings: Literal["rope", "learned", "none"] = Field(description="position encoding: rope, learned or none")
    rms_norm_eps: float = Field(1e-5, description="epsilon of the RMS norms")
    rope_theta: float = Field(10000.0, description="RoPE base")

    halt_max_steps: int = Field(description="most ACT steps a sequence runs (all of them in evaluation, as published)")
    halt_exploration_prob: float = Field(
        description="probability that a training sequence gets a random minimum number of steps")
    forward_dtype: Literal[FORWARD_DTYPES] = Field("bfloat16",
        description="dtype of the forward pass (weights stay float32); auto = bfloat16 on CUDA and on CPUs "
                    "with bf16 units, float32 elsewhere")
    mlp_t: bool = Field(False,
        description="ours: mix positions with an MLP over the sequence instead of attention (TRM's MLP variant)")
    causal: bool = Field(False, description="set by the trainer (always false, as published)")

    # Latent Meta Attention front-end (models/lma.py, docs/lma.md); off = the published model exactly.
    lma_enable: bool = Field(False,
        description="ours: Latent Meta Attention front-end; off = the published model exactly")
    lma_mode: LMAMode = Field("unclean",
        description="unclean: latent chunks may straddle columns; clean: chunk boundaries on column boundaries")
    lma_latent_len: int | None = Field(None,
        description="L_new, the latent sequence length; null = automatic (about the input length / lma_compression)")
    lma_latent_dim: int | None = Field(None, description="d', the latent width; null = hidden_size")
    lma_num_heads: int | None = Field(None,
        description="latent attention heads; null = the most heads up to num_heads that split d' evenly")
    lma_compression: float = Field(8.0, description="input positions per latent token aimed at by the automatic L_new")
    lma_skip: bool = Field(False,
        description="ours: the heads read decode(z) + a learned linear map of the input embedding (identity at "
                    "start), so per-position detail need not pass the latent bottleneck")

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
    def dtype(self):
        """The torch dtype of `forward_dtype` (torch imported here only: the key checks run without it)."""
        import torch

        if self.forward_dtype == "auto":  # models/weights.py build_model resolves it for the device first
            raise ValueError("forward_dtype=auto must be resolved for a device before the model is built")
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

    puzzle_emb_len: int = Field(16,
        description="puzzle-embedding tokens prepended to the sequence; 0 = ceil(puzzle_emb_ndim / hidden_size)")
    no_ACT_continue: bool = Field(True,
        description="true: halt where q_halt > 0, no Q-continue loss; false: halt where q_halt > q_continue")

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
# The published classes' configs (their modules import them from here)
# ---------------------------------------------------------------------------------------------
NUM_HIER6_SLOTS = 6  # trm_hier6: six latent slots z_L1..z_L6


class TRMConfig(TRMFamilyConfig):
    """TRM's keys. `H_layers` is unused (one shared network) and kept so that published configs load."""


class SingleZConfig(TRMFamilyConfig):
    """TRM's keys; `H_layers` is unused."""


class Hier6Config(TRMFamilyConfig):
    """TRM's keys (`H_layers` unused); L_cycles can be at most 6, one update per slot."""

    @model_validator(mode="after")
    def _check_slots(self) -> "Hier6Config":
        if self.L_cycles > NUM_HIER6_SLOTS:
            raise ValueError(f"L_cycles ({self.L_cycles}) must be <= {NUM_HIER6_SLOTS}: latent update i writes slot i")
        return self


class HRMConfig(RecursiveReasoningConfig):
    """HRM's keys: the family's plus a required H_layers (ACT and prefix rules are the base config's)."""

    positive_keys = ("H_cycles", "L_cycles", "H_layers", "L_layers", "halt_max_steps")
    unsupported_keys = {
        "no_ACT_continue": "HRM always trains the Q-continue head and halts where q_halt > q_continue, as published "
                           "(arch=trm has the option)",
        "puzzle_emb_len": "HRM's puzzle prefix is always ceil(puzzle_emb_ndim / hidden_size) tokens, as published",
    }

    H_layers: int = Field(description="layers of the high-level network H")


class BaselineConfig(RecursiveReasoningConfig):
    """H_layers blocks; `H_cycles` (published: "kept for compatibility"), `L_cycles` and `L_layers` are
    accepted so that published and TRM-style configs load, and unused: the blocks run once per step."""

    positive_keys = ("H_layers", "halt_max_steps")
    unsupported_keys = {
        "no_ACT_continue": "the baseline halts where q_halt > q_continue and never trains the Q-continue head, "
                           "as published; act_enabled / act_inference choose where it halts early",
        "puzzle_emb_len": "the baseline's puzzle prefix is always ceil(puzzle_emb_ndim / hidden_size) tokens, "
                          "as published",
    }

    H_layers: int = Field(description="transformer blocks, run once per ACT step")
    H_cycles: int | None = Field(None, description="accepted for compatibility with published configs; unused")
    L_cycles: int | None = Field(None, description="accepted for compatibility with TRM-style configs; unused")
    L_layers: int | None = Field(None, description="accepted for compatibility with TRM-style configs; unused")
    act_enabled: bool = Field(True, description="false: every sequence runs halt_max_steps in training too")
    act_inference: bool = Field(False,
        description="true: the Q head halts sequences in evaluation too (outputs carry actual_steps)")

    @property
    def trains_q_continue(self) -> bool:
        return False

    def halts_adaptively(self, training: bool) -> bool:
        return self.act_enabled if training else self.act_inference


# Published class path -> its config class, so that `arch` keys are checked without importing the models.
CONFIG_CLASSES: dict[str, type[RecursiveReasoningConfig]] = {
    "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1": TRMConfig,
    "recursive_reasoning.trm_singlez@TinyRecursiveReasoningModel_ACTV1": SingleZConfig,
    "recursive_reasoning.trm_hier6@TinyRecursiveReasoningModel_ACTV1": Hier6Config,
    "recursive_reasoning.hrm@HierarchicalReasoningModel_ACTV1": HRMConfig,
    "recursive_reasoning.transformers_baseline@Model_ACTV2": BaselineConfig,
}
