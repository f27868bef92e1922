"""Loss head for ACT models: token cross-entropy plus the Q-halting (and Q-continue) losses."""
import torch
import torch.nn.functional as F
from torch import nn

from dataset.common import IGNORE_LABEL_ID
from utils.device import wide_float_dtype


def stablemax(x: torch.Tensor, epsilon: float = 1e-30) -> torch.Tensor:
    """s(x) = 1/(1-x) for x < 0 else x + 1: a softmax substitute that grows linearly, not exponentially."""
    return torch.where(x < 0, 1 / (1 - x + epsilon), x + 1)


def log_stablemax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    s_x = stablemax(x)
    return torch.log(s_x / torch.sum(s_x, dim=dim, keepdim=True))


def stablemax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_LABEL_ID,
                            valid_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-token loss (0 where ignored), with log-probs in float64 (float32 on MPS)."""
    logprobs = log_stablemax(logits.to(wide_float_dtype(logits.device)), dim=-1)
    if valid_mask is None:
        valid_mask = labels != ignore_index
    safe_labels = torch.where(valid_mask, labels, 0).to(torch.long)
    picked = torch.gather(logprobs, index=safe_labels.unsqueeze(-1), dim=-1).squeeze(-1)
    return -torch.where(valid_mask, picked, 0)


def softmax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_LABEL_ID,
                          valid_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-token softmax cross-entropy in float32 (0 where ignored)."""
    if valid_mask is not None:
        labels = torch.where(valid_mask, labels, ignore_index)
    flat = F.cross_entropy(logits.to(torch.float32).reshape(-1, logits.shape[-1]), labels.to(torch.long).reshape(-1),
                           ignore_index=ignore_index, reduction="none")
    return flat.view(labels.shape)


LOSS_FUNCTIONS = {"stablemax_cross_entropy": stablemax_cross_entropy, "softmax_cross_entropy": softmax_cross_entropy}

# The metrics are sums over a batch: COUNT sequences (halted, with labels) for the others, except the losses,
# which are summed over every row. Logging divides the losses by the batch size and the others by COUNT.
COUNT = "count"
LOSS_METRICS = frozenset({"lm_loss", "q_halt_loss", "q_continue_loss"})


def act_metrics(preds: torch.Tensor, logits: torch.Tensor, q_halt_logits: torch.Tensor, labels: torch.Tensor,
                steps: torch.Tensor, halted: torch.Tensor, loss_fn) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Metric sums over sequences that halted and have labels, plus lm_loss and q_halt_loss summed over all rows.

    Returns (metrics, lm_loss, q_halt_loss); `metrics` also holds the two losses, detached.
    """
    with torch.no_grad():
        mask = labels != IGNORE_LABEL_ID
        loss_counts = mask.sum(-1)
        loss_divisor = loss_counts.clamp_min(1).unsqueeze(-1)
        is_correct = mask & (preds == labels)
        seq_is_correct = is_correct.sum(-1) == loss_counts
        # Metrics only over sequences that finished this step and have something to score.
        valid = halted & (loss_counts > 0)
        metrics = {
            COUNT: valid.sum(),
            "accuracy": torch.where(valid, (is_correct.to(torch.float32) / loss_divisor).sum(-1), 0).sum(),
            "exact_accuracy": (valid & seq_is_correct).sum(),
            "q_halt_accuracy": (valid & ((q_halt_logits >= 0) == seq_is_correct)).sum(),
            "steps": torch.where(valid, steps, 0).sum(),
        }

    lm_loss = (loss_fn(logits, labels, ignore_index=IGNORE_LABEL_ID, valid_mask=mask) / loss_divisor).sum()
    q_halt_loss = F.binary_cross_entropy_with_logits(q_halt_logits, seq_is_correct.to(q_halt_logits.dtype),
                                                     reduction="sum")
    metrics["lm_loss"] = lm_loss.detach()
    metrics["q_halt_loss"] = q_halt_loss.detach()
    return metrics, lm_loss, q_halt_loss


class ACTLossHead(nn.Module):
    """Wraps an ACT model: runs one step, returns (carry, loss, metrics, outputs, all_halted)."""

    def __init__(self, model: nn.Module, loss_type: str):
        super().__init__()
        if loss_type not in LOSS_FUNCTIONS:
            raise ValueError(f"Unknown loss_type {loss_type!r}; choose one of {sorted(LOSS_FUNCTIONS)}")
        self.model = model
        self.loss_fn = LOSS_FUNCTIONS[loss_type]

    @property
    def puzzle_emb(self) -> nn.Module | None:
        """The model's sparse puzzle embedding (its own optimizer), None when it has none."""
        return getattr(self.model, "puzzle_emb", None)

    def initial_carry(self, *args, **kwargs):
        return self.model.initial_carry(*args, **kwargs)

    def forward(self, return_keys: list[str] | tuple[str, ...] | set[str] = (), **model_kwargs):
        new_carry, outputs = self.model(**model_kwargs)
        labels = new_carry.current_data["labels"]
        with torch.no_grad():
            outputs["preds"] = torch.argmax(outputs["logits"], dim=-1)
        metrics, lm_loss, q_halt_loss = act_metrics(outputs["preds"], outputs["logits"], outputs["q_halt_logits"],
                                                    labels, new_carry.steps, new_carry.halted, self.loss_fn)

        q_continue_loss = 0
        if "target_q_continue" in outputs:
            q_continue_loss = F.binary_cross_entropy_with_logits(outputs["q_continue_logits"],
                                                                 outputs["target_q_continue"], reduction="sum")
            metrics["q_continue_loss"] = q_continue_loss.detach()

        detached = {k: outputs[k].detach() for k in return_keys if k in outputs}
        return new_carry, lm_loss + 0.5 * (q_halt_loss + q_continue_loss), metrics, detached, new_carry.halted.all()
