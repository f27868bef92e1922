"""Per-puzzle embedding table trained sparsely with sign-SGD.

The table can hold hundreds of thousands of rows (one per augmented puzzle), so it is a buffer,
not a Parameter: Adam state for it would be huge and almost all rows are untouched in a step.
In training, the rows of the batch are copied into `local_weights`, which carries the gradient;
`SparseEmbeddingSignSGD` then updates only those rows, summing gradients of equal ids across ranks.
"""
import torch
import torch.distributed as dist
from torch import nn

from models.layers import trunc_normal_init_


class CastedSparseEmbedding(nn.Module):
    def __init__(self, num_embeddings: int, embedding_dim: int, batch_size: int, init_std: float, cast_to: torch.dtype):
        super().__init__()
        self.cast_to = cast_to
        self.register_buffer("weights", trunc_normal_init_(torch.empty(num_embeddings, embedding_dim), std=init_std))
        # Published checkpoints do not store the per-batch copies.
        self.register_buffer("local_weights", torch.zeros(batch_size, embedding_dim, requires_grad=True),
                             persistent=False)
        self.register_buffer("local_ids", torch.zeros(batch_size, dtype=torch.int32), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.weights[ids].to(self.cast_to)
        with torch.no_grad():
            self.local_weights.copy_(self.weights[ids])
            self.local_ids.copy_(ids)
        return self.local_weights.to(self.cast_to)


def _gather_from_ranks(tensor: torch.Tensor, world_size: int) -> torch.Tensor:
    if world_size == 1:
        return tensor
    gathered = torch.empty((world_size * tensor.shape[0], *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    dist.all_gather_into_tensor(gathered, tensor.contiguous())
    return gathered


@torch.no_grad()
def sparse_sign_sgd_step(local_grad: torch.Tensor, local_ids: torch.Tensor, weights: torch.Tensor,
                         lr: float, weight_decay: float, world_size: int) -> None:
    """w[id] = w[id] * (1 - lr*wd) - lr * sign(sum of the gradients for id over all ranks)."""
    all_grad = _gather_from_ranks(local_grad, world_size)
    all_ids = _gather_from_ranks(local_ids, world_size)
    ids, slot = all_ids.unique(return_inverse=True)
    summed = torch.zeros((ids.shape[0], all_grad.shape[1]), dtype=all_grad.dtype, device=all_grad.device)
    summed.scatter_add_(0, slot.unsqueeze(-1).expand(-1, all_grad.shape[1]), all_grad)
    rows = weights[ids]
    rows.mul_(1.0 - lr * weight_decay).add_(torch.sign(summed), alpha=-lr)
    weights[ids] = rows


class SparseEmbeddingSignSGD(torch.optim.Optimizer):
    """Sign-SGD over the rows a `CastedSparseEmbedding` touched this step.

    `params` are the embedding's buffers (as published: `puzzle_emb.buffers()`); they are told
    apart by role: the one needing grad is `local_weights`, the 1-D one `local_ids`, the other the table.
    """

    def __init__(self, params, world_size: int, lr: float = 1e-3, weight_decay: float = 1e-2):
        if lr < 0 or weight_decay < 0:
            raise ValueError(f"lr and weight_decay must be >= 0, got {lr}, {weight_decay}")
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, world_size=world_size))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            local_grad = local_ids = weights = None
            for p in group["params"]:
                if p.requires_grad:
                    local_grad = p.grad
                elif p.ndim == 1:
                    local_ids = p
                elif p.ndim == 2:
                    weights = p
            if local_grad is None:
                continue  # nothing touched this step (e.g. frozen or no backward yet)
            sparse_sign_sgd_step(local_grad, local_ids, weights, group["lr"], group["weight_decay"],
                                 group["world_size"])


# Published name, kept for scripts that import it.
CastedSparseEmbeddingSignSGD_Distributed = SparseEmbeddingSignSGD
