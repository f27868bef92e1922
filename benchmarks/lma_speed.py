"""Training-step time of TRM with the Latent Meta Attention front-end against plain TRM.

Both models are timed on the same machine, batch and data, one after the other, with the
trainer's step (one ACT step, backward, every optimizer; see benchmarks/train_step.py, whose
options are all accepted here). The default shape is ARC's: seq_len 900, puzzle prefix 16,
hidden 512, 8 heads, L_layers 2, H_cycles 3, L_cycles 4, at a CPU-sized batch of 2.

    python benchmarks/lma_speed.py                              # ARC shape, default latent settings
    python benchmarks/lma_speed.py --lma-latent-len 229 --steps 5
    python benchmarks/lma_speed.py --batch-size 64 --device cuda --json

`--equal-time SECONDS` instead trains both on a small generated task for the same training time
(CPU time on a CPU, wall-clock time on an accelerator: benchmarks/equal_time.py) and reports their
exact accuracies on held-out examples:

    python benchmarks/lma_speed.py --equal-time 120 --task sort
"""
import argparse
import functools
import json
import statistics
import textwrap
import time
from dataclasses import dataclass, field

import torch

from benchmarks import equal_time, train_step
from models.lma_layout import describe_layout
from models.losses import ACTLossHead
from models.recursive_reasoning.trm import TRMConfig
from utils.cli import new_parser
from utils.device import select_device, should_compile

ARC_SHAPE = ["--seq-len", "900", "--puzzle-emb-len", "16", "--hidden-size", "512", "--num-heads", "8",
             "--L-layers", "2", "--H-cycles", "3", "--L-cycles", "4", "--vocab-size", "12"]
CPU_SIZED_RUN = ["--batch-size", "2", "--warmup", "1", "--steps", "3"]  # plain TRM takes seconds per step on a CPU


def train_step_epilog(width: int = 78) -> str:
    """The options of benchmarks/train_step.py are accepted too: the defaults they get here."""
    here = " ".join(ARC_SHAPE + CPU_SIZED_RUN)
    return textwrap.fill("Every option of benchmarks/train_step.py is accepted too (model shape, --batch-size, "
                         "--steps, --warmup, --device, --dtype, --compile, --threads; see its --help), with its "
                         f"defaults except for the ARC shape and a CPU-sized run: {here}.",
                         width=width, break_on_hyphens=False)


def build_parser() -> argparse.ArgumentParser:
    """The LMA and equal-time options (the train_step.py options are parsed by its own parser)."""
    parser = new_parser(__doc__.splitlines()[0], epilog=train_step_epilog())
    lma = parser.add_argument_group("LMA (defaults: the automatic values, as in config/arch/trm.yaml)")
    lma.add_argument("--lma-mode", choices=("unclean", "clean"), default=TRMConfig.model_fields["lma_mode"].default,
                     help=train_step.arch_help("lma_mode"))
    lma.add_argument("--lma-latent-len", type=int, default=None,
                     help="L_new, the latent sequence length (default: automatic, about the input length / "
                          "--lma-compression)")
    lma.add_argument("--lma-latent-dim", type=int, default=None, help="d', the latent width (default: the hidden size)")
    lma.add_argument("--lma-num-heads", type=int, default=None,
                     help="latent attention heads (default: the most heads up to --num-heads that split d' evenly)")
    lma.add_argument("--lma-compression", type=float, default=TRMConfig.model_fields["lma_compression"].default,
                     help=train_step.arch_help("lma_compression"))
    accuracy = parser.add_argument_group("equal-time accuracy instead of step time")
    accuracy.add_argument("--equal-time", type=float, default=None, metavar="SECONDS",
                          help="train each model for SECONDS on --task, then report held-out exact accuracy "
                               "(default: compare step times)")
    accuracy.add_argument("--task", choices=("sort", "copy"), default="sort",
                          help="the generated task: sort (labels = the input sorted) or copy (labels = the input)")
    accuracy.add_argument("--task-len", type=int, default=64, help="sequence length of the generated task")
    accuracy.add_argument("--task-vocab", type=int, default=6, help="tokens 1..N-1 (0 is padding)")
    accuracy.add_argument("--eval-examples", type=int, default=512,
                          help="held-out examples the exact accuracy is measured on")
    return parser


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, argparse.Namespace]:
    """(LMA options, shape-and-run options of benchmarks/train_step.py with the ARC shape as default)."""
    parser = build_parser()
    ours, rest = parser.parse_known_args(argv)
    return ours, train_step.parse_args(ARC_SHAPE + CPU_SIZED_RUN + rest)


def lma_keys(ours: argparse.Namespace) -> dict:
    return dict(lma_enable=True, lma_mode=ours.lma_mode, lma_latent_len=ours.lma_latent_len,
                lma_latent_dim=ours.lma_latent_dim, lma_num_heads=ours.lma_num_heads,
                lma_compression=ours.lma_compression)


def parameter_count(head: ACTLossHead) -> int:
    return sum(p.numel() for p in head.parameters())


# ---------------------------------------------------------------------------------------------
# Step time
# ---------------------------------------------------------------------------------------------
@dataclass
class Trainee:
    """One model with what its training steps need, set up as the trainer does."""

    head: ACTLossHead
    model: torch.nn.Module  # the head, compiled where enabled
    optimizers: list[torch.optim.Optimizer]
    carry: object
    batch: dict[str, torch.Tensor]
    durations: list[float] = field(default_factory=list)  # wall-clock seconds per timed step
    cpu_durations: list[float] = field(default_factory=list)  # CPU seconds of this process per timed step

    def step(self, args: argparse.Namespace) -> None:
        self.carry = train_step.train_step(self.model, self.optimizers, self.carry, self.batch, args.batch_size)


def prepare(config: dict, args: argparse.Namespace, device: torch.device) -> Trainee:
    torch.manual_seed(args.seed)
    head = train_step.build_head(config, device)
    head.train()
    optimizers = train_step.build_optimizers(head, args.puzzle_emb_ndim)
    model = torch.compile(head) if should_compile(device, args.compile) else head
    batch = train_step.random_batch(args, device)
    with torch.device(device):
        carry = head.initial_carry(batch)
    return Trainee(head, model, optimizers, carry, batch)


def time_alternately(trainees: list[Trainee], args: argparse.Namespace, device: torch.device) -> None:
    """Warm-up steps, then one timed step of each model in turn, so that a change in the
    machine's load (other jobs on a shared CPU) hits both models alike."""
    for trainee in trainees:
        for _ in range(args.warmup):
            trainee.step(args)
    for _ in range(args.steps):
        for trainee in trainees:
            train_step.synchronize(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            trainee.step(args)
            train_step.synchronize(device)
            trainee.durations.append(time.perf_counter() - start)
            trainee.cpu_durations.append(time.process_time() - cpu_start)


def summarise(trainee: Trainee) -> dict:
    return {"parameters": parameter_count(trainee.head), "median_s": statistics.median(trainee.durations),
            "mean_s": statistics.mean(trainee.durations), "min_s": min(trainee.durations),
            "median_cpu_s": statistics.median(trainee.cpu_durations)}


def compare_step_time(ours: argparse.Namespace, args: argparse.Namespace, device: torch.device) -> dict:
    base = train_step.model_config(args)
    lma_config = dict(base, **lma_keys(ours))
    layout = TRMConfig(**lma_config).lma_layout  # validates the LMA settings before any long run
    trainees = [prepare(base, args, device), prepare(lma_config, args, device)]
    time_alternately(trainees, args, device)
    plain, lma = (summarise(t) for t in trainees)
    return {
        "device": train_step.device_name(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "compile": should_compile(device, args.compile), "dtype": args.dtype, "batch_size": args.batch_size,
        "seq_len": args.seq_len, "prefix_len": TRMConfig(**base).prefix_len, "hidden_size": args.hidden_size,
        "num_heads": args.num_heads, "L_layers": args.L_layers, "H_cycles": args.H_cycles, "L_cycles": args.L_cycles,
        "steps": args.steps, "warmup": args.warmup,
        "lma_settings": describe_layout(layout, ours.lma_mode, ours.lma_latent_len is None),
        "plain": plain, "lma": lma,
        "speedup_median": plain["median_s"] / lma["median_s"], "speedup_min": plain["min_s"] / lma["min_s"],
        # On a CPU shared with other jobs, CPU time is the steadier measure of the work done.
        "speedup_cpu_time": plain["median_cpu_s"] / lma["median_cpu_s"],
    }


def print_step_report(r: dict) -> None:
    print(f"device:       {r['device']}  (torch {r['torch']}, {r['threads']} threads, compile={r['compile']}, "
          f"{r['dtype']})")
    print(f"shape:        batch {r['batch_size']} x (prefix {r['prefix_len']} + seq {r['seq_len']}), "
          f"hidden {r['hidden_size']}, {r['num_heads']} heads, L_layers {r['L_layers']}, H_cycles {r['H_cycles']}, "
          f"L_cycles {r['L_cycles']}")
    print(f"LMA settings: {r['lma_settings']}")
    for name, key in (("plain TRM", "plain"), ("TRM + LMA", "lma")):
        m = r[key]
        print(f"{name}:    {m['parameters']:>12,} parameters; step median {m['median_s'] * 1e3:9.1f} ms, "
              f"mean {m['mean_s'] * 1e3:9.1f} ms, min {m['min_s'] * 1e3:9.1f} ms, median CPU time "
              f"{m['median_cpu_s'] * 1e3:9.1f} ms ({r['steps']} timed steps after {r['warmup']} warm-up)")
    print(f"speed-up:     {r['speedup_median']:.2f}x (median step), {r['speedup_min']:.2f}x (fastest step), "
          f"{r['speedup_cpu_time']:.2f}x (median CPU time)")


# ---------------------------------------------------------------------------------------------
# Accuracy at equal training time
# ---------------------------------------------------------------------------------------------
def task_batch(task: str, batch_size: int, length: int, vocab: int, generator: torch.Generator,
               device: torch.device) -> dict[str, torch.Tensor]:
    """Fresh random examples: labels = the inputs (copy) or the inputs in ascending order (sort)."""
    inputs = torch.randint(1, vocab, (batch_size, length), generator=generator, dtype=torch.int32)
    labels = inputs.sort(dim=-1).values if task == "sort" else inputs.clone()
    return {"inputs": inputs.to(device), "labels": labels.to(device),
            "puzzle_identifiers": torch.zeros(batch_size, dtype=torch.int32, device=device)}


def held_out_batches(ours, args, device: torch.device) -> list[dict[str, torch.Tensor]]:
    """Held-out examples: another random stream than training's."""
    generator = torch.Generator().manual_seed(args.seed + 1)
    count = -(-ours.eval_examples // args.batch_size)
    return [task_batch(ours.task, args.batch_size, ours.task_len, ours.task_vocab, generator, device)
            for _ in range(count)]


def compare_equal_time(ours: argparse.Namespace, args: argparse.Namespace, device: torch.device) -> dict:
    # No puzzle ids in this task.
    args.seq_len, args.vocab_size, args.puzzle_emb_ndim = ours.task_len, ours.task_vocab, 0
    base = dict(train_step.model_config(args), halt_exploration_prob=0.1)
    results = {"task": ours.task, "task_len": ours.task_len, "seconds": ours.equal_time, "batch_size": args.batch_size,
               "hidden_size": args.hidden_size, "device": train_step.device_name(device),
               "threads": torch.get_num_threads()}
    for name, config in (("plain", base), ("lma", dict(base, **lma_keys(ours)))):
        torch.manual_seed(args.seed)
        head = train_step.build_head(config, device)
        generator = torch.Generator().manual_seed(args.seed)  # fresh batches: no example seen twice
        steps = equal_time.train_for(ours.equal_time, head, equal_time.build_optimizers(head, puzzle_emb=False),
                                     functools.partial(task_batch, ours.task, args.batch_size, ours.task_len,
                                                       ours.task_vocab, generator, device), args.batch_size, device)
        accuracy = equal_time.held_out_accuracy(head, held_out_batches(ours, args, device))
        results[name] = {"parameters": parameter_count(head), "steps": steps,
                         "exact_accuracy": accuracy["exact_accuracy"]}
        if name == "lma":
            results["lma_settings"] = describe_layout(TRMConfig(**config).lma_layout, ours.lma_mode,
                                                      ours.lma_latent_len is None)
    return results


def print_accuracy_report(r: dict) -> None:
    print(f"task:         {r['task']} of {r['task_len']} tokens, {r['seconds']:.0f} s of training each, "
          f"batch {r['batch_size']}, hidden {r['hidden_size']}, {r['device']} ({r['threads']} threads)")
    print(f"LMA settings: {r['lma_settings']}")
    for name, key in (("plain TRM", "plain"), ("TRM + LMA", "lma")):
        m = r[key]
        print(f"{name}:    {m['parameters']:>10,} parameters, {m['steps']:>6} steps, "
              f"held-out exact accuracy {m['exact_accuracy']:.3f}")


def main(argv: list[str] | None = None) -> dict:
    ours, args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    if ours.equal_time is not None:
        results = compare_equal_time(ours, args, device)
        print_accuracy_report(results)
    else:
        results = compare_step_time(ours, args, device)
        print_step_report(results)
    if args.json:
        print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
