"""The LMA information bottleneck alone: can the encoder/decoder pair reproduce its input (issue 24 item 3)?

`python benchmarks/lma_study.py --autoencode STEPS` runs this for the study's own variants (same tasks,
latent lengths, d' and options): for each LMA variant it builds the model exactly as the study does,
freezes the input embedding at its initial values (token table; the puzzle prefix starts at zero),
and trains only `model.inner.lma` for STEPS Adam steps on fresh task inputs to minimise
||decode(encode(X)) - X||^2, the C' -> d' -> C' bottleneck with no recursion in between. It then reports,
on held-out inputs and at the non-prefix positions the heads read:

- `rel_err`: squared reconstruction error over squared norm of X (1.0 = no better than predicting 0);
- `token_acc` / `exact`: each position decoded to the nearest row of the token embedding, against the
  true input token (per position; whole example right);
- `majority`: the share of the most common true token, the accuracy of knowing nothing per position.

With `lma_skip` the input reaches the output past the bottleneck, so its figures measure the skip too.
"""
import argparse
import time

import numpy as np
import torch

from benchmarks import train_step
from benchmarks.study_tasks import StudyTask

LEARNING_RATE = 1e-3
HELD_OUT_BATCHES = 4


def embedding_of(inner, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return inner.input_embeddings(batch["inputs"], batch["puzzle_identifiers"])


def recovery(inner, batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Reconstruction error and nearest-embedding token recovery at the non-prefix positions."""
    table = inner.embed_scale * inner.embed_tokens.embedding_weight.detach().float()  # (V, d0), as X holds them
    prefix = inner.puzzle_emb_len
    err = norm = correct = exact = positions = examples = 0.0
    counts = torch.zeros(table.shape[0])
    with torch.no_grad():
        for batch in batches:
            x = embedding_of(inner, batch)
            x_hat = inner.lma.decode(inner.lma.encode(x), x)[:, prefix:].float()
            x = x[:, prefix:].float()
            err += (x_hat - x).square().sum().item()
            norm += x.square().sum().item()
            tokens = batch["inputs"].long()
            decoded = torch.cdist(x_hat, table.expand(x_hat.shape[0], -1, -1)).argmin(-1)
            right = decoded == tokens
            correct += right.sum().item()
            exact += right.all(-1).sum().item()
            positions += tokens.numel()
            examples += tokens.shape[0]
            counts += torch.bincount(tokens.flatten().cpu(), minlength=table.shape[0]).float()
    return {"rel_err": err / norm, "token_acc": correct / positions, "exact": exact / examples,
            "majority": counts.max().item() / positions}


def autoencode_variant(args: argparse.Namespace, task: StudyTask, config: dict, device: torch.device) -> dict:
    torch.manual_seed(args.seed)
    inner = train_step.build_head(config, device).model.inner
    rng = np.random.default_rng(args.seed)
    eval_rng = np.random.default_rng(args.seed + 1)
    held_out = [task.batch(args.batch_size, eval_rng, device) for _ in range(HELD_OUT_BATCHES)]
    untrained = recovery(inner, held_out)
    optimizer = torch.optim.Adam(inner.lma.parameters(), lr=LEARNING_RATE)
    start = time.process_time()
    for _ in range(args.autoencode):
        x = embedding_of(inner, task.batch(args.batch_size, rng, device))
        loss = (inner.lma.decode(inner.lma.encode(x), x) - x).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    layout = inner.lma.layout
    return {"L": layout.input_len, "L_new": layout.latent.length, "chunk": layout.chunk_size,
            "width": layout.latent.width, "cpu_s": time.process_time() - start,
            "untrained": untrained, **recovery(inner, held_out)}


def run_autoencode(args: argparse.Namespace, plan: dict[str, dict[str, dict]], tasks: dict[str, StudyTask],
                   device: torch.device) -> dict:
    """Each LMA variant of `plan` (task -> variant -> config): figures printed as a table, and returned."""
    print(f"autoencoding: {args.autoencode} Adam steps (lr {LEARNING_RATE:g}) of batch {args.batch_size} per variant, "
          f"only the LMA encoder/decoder trained; held-out {HELD_OUT_BATCHES * args.batch_size} inputs", flush=True)
    print(f"{'task':7} {'variant':28} {'L':>4} {'L_new':>5} {'C':>5} {'d':>4} {'rel_err':>8} {'token_acc':>9} "
          f"{'exact':>6} {'majority':>8} {'untrained tok':>13} {'cpu_s':>6}   (C = C', d = d')")
    results: dict[str, dict] = {}
    for task_name, configs in plan.items():
        for name, config in configs.items():
            if not config.get("lma_enable"):
                continue
            r = results.setdefault(task_name, {})[name] = autoencode_variant(args, tasks[task_name], config, device)
            print(f"{task_name:7} {name:28} {r['L']:>4} {r['L_new']:>5} {r['chunk']:>5} {r['width']:>4} "
                  f"{r['rel_err']:>8.4f} {r['token_acc']:>9.4f} {r['exact']:>6.3f} {r['majority']:>8.4f} "
                  f"{r['untrained']['token_acc']:>13.4f} {r['cpu_s']:>6.1f}", flush=True)
    return results
