"""Matmul FLOPs of one TRM training step (`model_flops_per_step`) and the GPU bf16 peaks that turn a step
time into an MFU."""
from dataclasses import dataclass

from models.layers import swiglu_inner_size
from models.recursive_reasoning.config import TRMConfig

# Keys of config/arch/*.yaml that are not model-config keys.
_NON_MODEL_KEYS = ("name", "loss")
_TRM_NAME = "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1"


def _linear(rows: int, fan_in: int, fan_out: int) -> int:
    """Forward FLOPs of a (rows x fan_in) @ (fan_in x fan_out) product: a multiply and an add each."""
    return 2 * rows * fan_in * fan_out


def _trm_config(arch_config, batch: int, seq_len: int, vocab_size: int | None) -> TRMConfig:
    if isinstance(arch_config, TRMConfig):
        return arch_config.model_copy(update={"batch_size": batch, "seq_len": seq_len})
    values = dict(arch_config)
    name = values.get("name", _TRM_NAME)
    if name != _TRM_NAME:
        raise ValueError(f"model_flops_per_step counts TRM ({_TRM_NAME}) only, got {name}")
    for key in _NON_MODEL_KEYS:
        values.pop(key, None)
    if vocab_size is not None:
        values["vocab_size"] = vocab_size
    if "vocab_size" not in values:
        raise ValueError("vocab_size (derived from the dataset) is needed: it is lm_head's output size")
    values.update(batch_size=batch, seq_len=seq_len)
    # Keys the trainer derives or that cost no FLOPs; defaults only so that an arch config alone is enough.
    values.setdefault("num_puzzle_identifiers", 1)
    values.setdefault("halt_max_steps", 16)
    values.setdefault("halt_exploration_prob", 0.1)
    return TRMConfig(**values)


@dataclass(frozen=True)
class StepFlops:
    """Forward matmul FLOPs of the parts of one training step (see `model_flops_per_step`)."""

    block: int  # one Block on the recursion's sequence (latent sequence with LMA)
    applications: int  # block applications per deep-supervision step: H_cycles * (L_cycles + 1) * L_layers
    applications_with_grad: int  # those of the last H cycle: (L_cycles + 1) * L_layers
    lma_encode: int  # E_chunk + E_resid (0 without LMA)
    lma_decode: int  # D_chunk (0 without LMA)
    heads: int  # lm_head over every position (prefix included) + q_head on position 0
    q_continue_forward: int  # the extra gradient-free step for the Q-continue target (0 with no_ACT_continue)

    @property
    def forward_with_grad(self) -> int:
        return self.applications_with_grad * self.block + self.lma_encode + self.lma_decode + self.heads

    @property
    def forward_no_grad(self) -> int:
        return (self.applications - self.applications_with_grad) * self.block + self.q_continue_forward

    @property
    def total(self) -> int:
        """Forward everywhere, plus backward = 2x forward where gradients flow."""
        return self.forward_no_grad + 3 * self.forward_with_grad


def step_flops(arch_config, batch: int, seq_len: int, *, vocab_size: int | None = None) -> StepFlops:
    """The parts of `model_flops_per_step`; same arguments."""
    cfg = _trm_config(arch_config, batch, seq_len, vocab_size)
    geometry = cfg.geometry  # what the recursion runs on: (prefix + seq_len, hidden, heads) or LMA's latent
    length, width, heads = geometry.length, geometry.width, geometry.num_heads
    tokens = batch * length
    if cfg.mlp_t:
        # SwiGLU across positions on the transposed (B, width, length) tensor.
        inner_t = swiglu_inner_size(length, cfg.expansion)
        mixing = _linear(batch * width, length, 2 * inner_t) + _linear(batch * width, inner_t, length)
    else:
        head_dim = width // heads
        attention_width = heads * head_dim
        mixing = _linear(tokens, width, 3 * attention_width) + _linear(tokens, attention_width, width)
        mixing += 2 * (2 * batch * heads * length * length * head_dim)  # Q K^T and (softmax) V
    inner = swiglu_inner_size(width, cfg.expansion)
    block = mixing + _linear(tokens, width, 2 * inner) + _linear(tokens, inner, width)

    encode = decode = 0
    if cfg.lma_enable:
        layout = cfg.lma_layout
        chunk, rows = layout.chunk_size, batch * layout.latent.length
        encode = _linear(rows, chunk, width) + _linear(rows, width, width) + _linear(rows, chunk, width)
        decode = _linear(rows, width, chunk)
        if cfg.lma_skip:  # skip_proj: d0 -> d0 at every input position
            decode += _linear(batch * cfg.total_len, cfg.hidden_size, cfg.hidden_size)
    heads_flops = _linear(batch * cfg.total_len, cfg.hidden_size, cfg.vocab_size) + _linear(batch, cfg.hidden_size, 2)
    applications = cfg.H_cycles * (cfg.L_cycles + 1) * cfg.L_layers
    q_continue = 0
    if not cfg.no_ACT_continue:
        q_continue = applications * block + encode + decode + heads_flops
    return StepFlops(block=block, applications=applications, applications_with_grad=(cfg.L_cycles + 1) * cfg.L_layers,
                     lma_encode=encode, lma_decode=decode, heads=heads_flops, q_continue_forward=q_continue)


def model_flops_per_step(arch_config, batch: int, seq_len: int, *, vocab_size: int | None = None) -> int:
    """Matmul FLOPs of one TRM training step (one ACT step forward, then backward), as `train_step.py` runs it.

    `arch_config`: the arch keys (a dict as in config/arch/trm.yaml, or the model config the trainer builds,
    or a `TRMConfig`); `vocab_size` comes from the dataset and must be in it or given. Counting rule:

    - a matmul of (m x k) by (k x n) costs 2*m*n*k forward; backward costs twice its forward (input and
      weight gradients) wherever gradients flow; element-wise work (norms, RoPE, softmax, SiLU, the loss,
      the optimizers) is not counted;
    - a Block on a sequence of S positions, width d, h heads of size d_h = d // h (batch B, T = B*S tokens):
      qkv 2*T*d*(3*h*d_h) + o_proj 2*T*(h*d_h)*d + Q K^T and A V 2 * 2*B*h*S*S*d_h + SwiGLU 2*T*d*(2*I) +
      2*T*I*d, with I = swiglu_inner_size(d, expansion) (round(expansion*d*2/3) up to a multiple of 256);
      with mlp_t the attention part is a SwiGLU across positions on B*d rows of length S;
    - one deep-supervision step runs H_cycles cycles of (L_cycles + 1) network applications of L_layers
      blocks; the first H_cycles - 1 cycles run under no_grad (forward only), the last one with gradients;
    - lm_head 2*B*(prefix + seq_len)*hidden*vocab (logits of every position; the prefix is sliced off
      afterwards) and q_head 2*B*hidden*2, both with gradients;
    - with LMA (lma_enable) the recursion runs on the latent (L_new, d', heads') sequence instead, plus the
      encoder once per step (E_chunk: C'->d' then d'->d'; E_resid: C'->d', on B*L_new chunks) and D_chunk
      (d'->C') on the answer, both with gradients;
    - no_ACT_continue=False adds one more full gradient-free forward (the Q-continue target).

    So total = forward_no_grad + 3 * forward_with_grad (`StepFlops`). FlashAttention's backward recomputes
    Q K^T (torch's flop counter counts its backward as 2.5x forward); that recomputation is hardware work,
    not model work, and is left out, as MFU conventionally does.
    """
    return step_flops(arch_config, batch, seq_len, vocab_size=vocab_size).total


# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from the vendor datasheets, by a substring of
# torch.cuda.get_device_name(); the first match wins, so more specific names come first.
BF16_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("GH200", 989.5),
    ("H200", 989.5),
    ("H100 NVL", 835.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.5),  # SXM: 'NVIDIA H100 80GB HBM3'
    ("H800", 989.5),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.05),
    ("L40", 181.05),
    ("L4", 121.0),
    ("RTX 4090", 165.2),
)


def bf16_peak_tflops(device_name: str) -> float | None:
    """The GPU's dense bf16 peak, or None when it is not in `BF16_PEAK_TFLOPS`."""
    lowered = device_name.lower()
    for key, peak in BF16_PEAK_TFLOPS:
        if key.lower() in lowered:
            return peak
    return None
