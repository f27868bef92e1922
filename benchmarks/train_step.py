"""Time TRM training steps and print throughput figures.

One timed unit is one training step exactly as the trainer runs it: one ACT (deep-supervision)
step of the loss head on the carried state, backward of loss / batch_size, then every optimizer
steps and zeroes its gradients. Warm-up steps (compilation, optimizer-state allocation) are not
timed.

`--compare` times several paths (fp32 / bf16, eager / torch.compile) at several shapes in one run and prints
one table (benchmarks/step_compare.py); `--profile` also runs the eager model under torch.profiler and prints
its self time by group of operators (benchmarks/step_profile.py).

    python benchmarks/train_step.py --steps 5 --warmup 2
    python -m benchmarks.train_step --hidden-size 64 --json
    python benchmarks/train_step.py --compare --shapes demo --paths fp32,bf16 --profile
"""
import argparse
import copy
import json
import statistics
import time

import torch
from torch.profiler import record_function

from benchmarks import step_compare, step_profile
from benchmarks.step_compare import PATHS, SHAPES
from models.losses import ACTLossHead
from models.optimizers import build_adam_atan2
from models.recursive_reasoning.trm import TinyRecursiveReasoningModel_ACTV1, TRMConfig
from models.sparse_embedding import SparseEmbeddingSignSGD
from utils.cli import comma_list, new_parser
from utils.device import select_device, should_compile

# Published training hyper-parameters; they only matter here through the work the optimizers do.
_LR = 1e-4
_BETAS = (0.9, 0.95)
_WEIGHT_DECAY = 0.1
_PUZZLE_EMB_LR = 1e-2
_PUZZLE_EMB_WEIGHT_DECAY = 0.1
_HALT_EXPLORATION_PROB = 0.1


def arch_help(key: str) -> str:
    """The help of a model option: the description of its arch key (models/recursive_reasoning/config.py)."""
    return TRMConfig.model_fields[key].description.replace("%", "%%")


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("Time TRM training steps.")
    model = parser.add_argument_group("model")
    model.add_argument("--hidden-size", type=int, default=512, help=arch_help("hidden_size"))
    model.add_argument("--num-heads", type=int, default=8, help=arch_help("num_heads"))
    model.add_argument("--expansion", type=float, default=4, help=arch_help("expansion"))
    model.add_argument("--L-layers", dest="L_layers", type=int, default=2, help=arch_help("L_layers"))
    model.add_argument("--H-cycles", dest="H_cycles", type=int, default=3, help=arch_help("H_cycles"))
    model.add_argument("--L-cycles", dest="L_cycles", type=int, default=6, help=arch_help("L_cycles"))
    model.add_argument("--seq-len", type=int, default=81, help="tokens per example (a dataset's seq_len)")
    model.add_argument("--vocab-size", type=int, default=11, help="token vocabulary size (a dataset's vocab_size)")
    model.add_argument("--puzzle-emb-len", type=int, default=16, help=arch_help("puzzle_emb_len"))
    model.add_argument("--puzzle-emb-ndim", type=int, default=None,
                       help="width of the learned per-puzzle embedding, 0 disables it (default: the hidden size)")
    model.add_argument("--num-puzzle-identifiers", type=int, default=1000,
                       help="rows of the puzzle-embedding table (a dataset's num_puzzle_identifiers)")
    model.add_argument("--pos-encodings", choices=("rope", "learned", "none"), default="rope",
                       help=arch_help("pos_encodings"))
    model.add_argument("--mlp-t", action="store_true", help=arch_help("mlp_t"))
    model.add_argument("--halt-max-steps", type=int, default=16, help=arch_help("halt_max_steps"))

    run = parser.add_argument_group("run")
    run.add_argument("--batch-size", type=int, default=32, help="examples per training step")
    run.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="forward dtype")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    run.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                     help="torch.compile the model (default: only on CUDA; DISABLE_COMPILE forces it off)")
    run.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    run.add_argument("--steps", type=int, default=10, help="timed steps")
    run.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave as is)")
    run.add_argument("--seed", type=int, default=0,
                     help="seed of the initial weights and the random batch")
    run.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    run.add_argument("--profile", action="store_true",
                     help="then run --steps more steps of the eager model (each on a new random batch) under "
                          "torch.profiler and print self time per step by group: matmul, elementwise, loss, "
                          "optimizer, data, other, and the top operators (with --compare: once per shape and dtype)")

    compare = parser.add_argument_group("compare")
    compare.add_argument("--compare", action="store_true",
                         help="time every --paths path at every --shapes shape in one run and print one table with "
                              "each path's ratio to the shape's fp32 eager step; model options and --batch-size "
                              "given on the command line replace the shapes' values")
    compare.add_argument("--shapes", default=",".join(SHAPES),
                         help="comma list of --compare shapes: demo (the quick demo's model, config/quickstart.yaml), "
                              "sudoku (the paper's Sudoku MLP model, 16 puzzle tokens + 81 cells, batch 32)")
    compare.add_argument("--paths", default=",".join(PATHS),
                         help="comma list of --compare paths: fp32 and bf16 eager, bf16+compile and fp32+compile "
                              "(torch.compile, at least 1 warm-up step so compilation is not timed; left out under "
                              "DISABLE_COMPILE)")
    return parser


def parse_args(argv: list[str] | None = None, shape: dict | None = None) -> argparse.Namespace:
    """The options; `shape` replaces the defaults of the options it names (given options still win)."""
    parser = build_parser()
    if shape is not None:
        parser.set_defaults(**shape)
    args = parser.parse_args(argv)
    if args.puzzle_emb_ndim is None:
        args.puzzle_emb_ndim = args.hidden_size
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1:
        parser.error("--steps and --batch-size must be >= 1 and --warmup >= 0")
    if args.compare:
        parser.set_defaults(dtype=None)
        given = parser.parse_args(argv)
        if given.dtype is not None or given.compile is not None:
            parser.error("--compare takes the dtype and torch.compile of each path from --paths: "
                         "leave out --dtype and --compile")
    args.shapes, args.paths = comma_list(args.shapes), comma_list(args.paths)
    for option, chosen, known in (("--shapes", args.shapes, SHAPES), ("--paths", args.paths, PATHS)):
        unknown = [name for name in chosen if name not in known]
        if unknown or not chosen:
            parser.error(f"{option}: unknown or no names {unknown}; choose from {', '.join(known)}")
    return args


def model_config(args: argparse.Namespace) -> dict:
    """The config dict the trainer hands the model: the arch keys plus the dataset-derived ones."""
    return dict(
        batch_size=args.batch_size, seq_len=args.seq_len, vocab_size=args.vocab_size,
        num_puzzle_identifiers=args.num_puzzle_identifiers, puzzle_emb_ndim=args.puzzle_emb_ndim,
        puzzle_emb_len=args.puzzle_emb_len, H_cycles=args.H_cycles, L_cycles=args.L_cycles, H_layers=0,
        L_layers=args.L_layers, hidden_size=args.hidden_size, expansion=args.expansion, num_heads=args.num_heads,
        pos_encodings=args.pos_encodings, halt_max_steps=args.halt_max_steps,
        halt_exploration_prob=_HALT_EXPLORATION_PROB, forward_dtype=args.dtype, mlp_t=args.mlp_t,
    )


def build_head(config: dict, device: torch.device) -> ACTLossHead:
    """Model in its loss head, created directly on the device as the trainer does (no CPU copy first)."""
    with torch.device(device):
        model = TinyRecursiveReasoningModel_ACTV1(config)
        return ACTLossHead(model, loss_type="stablemax_cross_entropy")


def build_optimizers(head: ACTLossHead, puzzle_emb_ndim: int) -> list[torch.optim.Optimizer]:
    """Sign-SGD for the puzzle-embedding table when there is one, then Adam-atan2 (the trainer's order)."""
    optimizers = []
    if puzzle_emb_ndim > 0:
        optimizers.append(SparseEmbeddingSignSGD(head.model.puzzle_emb.buffers(), world_size=1,
                                                 lr=_PUZZLE_EMB_LR, weight_decay=_PUZZLE_EMB_WEIGHT_DECAY))
    optimizers.append(build_adam_atan2(head.parameters(), lr=_LR, betas=_BETAS, weight_decay=_WEIGHT_DECAY))
    return optimizers


def random_batch(args: argparse.Namespace, device: torch.device) -> dict[str, torch.Tensor]:
    """Token ids avoid 0 (the pad id) so every label position counts in the loss, as in a real puzzle."""
    shape = (args.batch_size, args.seq_len)
    return {
        "inputs": torch.randint(1, args.vocab_size, shape, dtype=torch.int32, device=device),
        "labels": torch.randint(1, args.vocab_size, shape, dtype=torch.int32, device=device),
        "puzzle_identifiers": torch.randint(1, args.num_puzzle_identifiers, (args.batch_size,),
                                            dtype=torch.int32, device=device),
    }


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so the clock measures the work rather than just its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def act_step(model, carry, batch: dict[str, torch.Tensor]):
    """The forward of one ACT step in the loss head: (new carry, loss)."""
    carry, loss, _metrics, _, _ = model(carry=carry, batch=batch, return_keys=[])
    return carry, loss


def update(optimizers: list[torch.optim.Optimizer]) -> None:
    for optimizer in optimizers:
        optimizer.step()
        optimizer.zero_grad()


def train_step(model, optimizers, carry, batch: dict[str, torch.Tensor], batch_size: int):
    """One trainer step; returns the new carry so halted sequences restart and others continue."""
    carry, loss = act_step(model, carry, batch)
    (loss / batch_size).backward()
    update(optimizers)
    return carry


def profiled_step(head: ACTLossHead, optimizers, carry, args, device: torch.device):
    """`train_step` on a new random batch, its parts in the ranges step_profile groups operators by."""
    with record_function(step_profile.DATA_RANGE):
        batch = random_batch(args, device)
    with record_function(step_profile.LOSS_RANGE):
        carry, loss = act_step(head, carry, batch)
    (loss / args.batch_size).backward()
    with record_function(step_profile.OPTIMIZER_RANGE):
        update(optimizers)
    synchronize(device)
    return carry


def profile_head(head: ACTLossHead, optimizers, args, device: torch.device) -> dict:
    """step_profile's summary of --steps eager steps from a fresh carry (the head stays warm)."""
    with torch.device(device):
        carry = head.initial_carry(random_batch(args, device))

    def step() -> None:
        nonlocal carry
        carry = profiled_step(head, optimizers, carry, args, device)

    return step_profile.profile_steps(step, head.model, args.steps, cuda=device.type == "cuda")


def time_steps(model, optimizers, carry, batch, args, device: torch.device) -> list[float]:
    """Seconds of each timed step, after the untimed warm-up ones."""
    for _ in range(args.warmup):
        carry = train_step(model, optimizers, carry, batch, args.batch_size)
    synchronize(device)
    if device.type == "cuda":
        # Peak of the steady state: warm-up already allocated the optimizer state, which stays counted.
        torch.cuda.reset_peak_memory_stats(device)
    durations = []
    for _ in range(args.steps):
        start = time.perf_counter()
        carry = train_step(model, optimizers, carry, batch, args.batch_size)
        synchronize(device)
        durations.append(time.perf_counter() - start)
    return durations


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def summarise(args, device, compiled: bool, head: ACTLossHead, durations: list[float]) -> dict:
    mean = statistics.mean(durations)
    results = {
        "device": device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "compile": compiled,
        "dtype": args.dtype,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "prefix_len": head.model.config.prefix_len,
        "hidden_size": args.hidden_size,
        "num_heads": args.num_heads,
        "expansion": args.expansion,
        "L_layers": args.L_layers,
        "H_cycles": args.H_cycles,
        "L_cycles": args.L_cycles,
        "halt_max_steps": args.halt_max_steps,
        "mlp_t": args.mlp_t,
        "pos_encodings": args.pos_encodings,
        "parameters": sum(p.numel() for p in head.parameters()),
        # The puzzle table is a buffer trained by sign-SGD, so it is not among the parameters.
        "puzzle_emb_entries": head.model.puzzle_emb.weights.numel() if args.puzzle_emb_ndim > 0 else 0,
        "warmup": args.warmup,
        "steps": args.steps,
        "mean_s": mean,
        "median_s": statistics.median(durations),
        "min_s": min(durations),
        "samples_per_s": args.batch_size / mean,
    }
    if device.type == "cuda":
        results["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return results


def print_report(results: dict) -> None:
    print(f"device:      {results['device']}  (torch {results['torch']}, {results['threads']} threads, "
          f"compile={results['compile']})")
    print(f"config:      hidden {results['hidden_size']}, heads {results['num_heads']}, "
          f"expansion {results['expansion']}, L_layers {results['L_layers']}, H_cycles {results['H_cycles']}, "
          f"L_cycles {results['L_cycles']}, {'mlp_t' if results['mlp_t'] else 'attention'}, "
          f"pos {results['pos_encodings']}")
    print(f"batch:       {results['batch_size']} x (prefix {results['prefix_len']} + seq {results['seq_len']}), "
          f"{results['dtype']}")
    print(f"parameters:  {results['parameters']:,} (+ {results['puzzle_emb_entries']:,} puzzle-embedding entries)")
    print(f"step time:   mean {results['mean_s'] * 1e3:.1f} ms, median {results['median_s'] * 1e3:.1f} ms, "
          f"min {results['min_s'] * 1e3:.1f} ms over {results['steps']} steps ({results['warmup']} warm-up)")
    print(f"throughput:  {results['samples_per_s']:.1f} samples/s")
    if "peak_memory_gib" in results:
        print(f"peak memory: {results['peak_memory_gib']:.2f} GiB")


def measure(args, device: torch.device, compile_flag: bool | None) -> tuple[dict, ACTLossHead, list]:
    """(summarise's results, the eager head, its optimizers) of one configuration, timed after warm-up."""
    torch.manual_seed(args.seed)
    head = build_head(model_config(args), device)
    head.train()
    optimizers = build_optimizers(head, args.puzzle_emb_ndim)
    compiled = should_compile(device, compile_flag)
    # Optimizers hold the uncompiled head's tensors; the compiled wrapper shares them.
    model = torch.compile(head) if compiled else head

    batch = random_batch(args, device)
    with torch.device(device):
        carry = head.initial_carry(batch)
    durations = time_steps(model, optimizers, carry, batch, args, device)
    return summarise(args, device, compiled, head, durations), head, optimizers


def compare(argv: list[str] | None, args, device: torch.device) -> dict:
    """Every chosen path at every chosen shape, then one table; profiles once per (shape, dtype)."""
    paths = [name for name in args.paths if not PATHS[name].compiled or should_compile(device, True)]
    bf16 = step_compare.bf16_line(device)
    header = [f"device: {device_name(device)}  (torch {torch.__version__}, {torch.get_num_threads()} threads)", bf16]
    if len(paths) < len(args.paths):
        header.append(f"DISABLE_COMPILE is set: left out {', '.join(sorted(set(args.paths) - set(paths)))}")
    rows, profiled = [], set()
    for shape in args.shapes:
        shape_args = parse_args(argv, SHAPES[shape])
        for name in paths:
            path = PATHS[name]
            run_args = copy.copy(shape_args)
            run_args.dtype = path.dtype
            if path.compiled:
                run_args.warmup = max(1, run_args.warmup)  # the first step compiles
                torch._dynamo.reset()  # compile afresh, as a run of its own would
            results, head, optimizers = measure(run_args, device, path.compiled)
            results.update(shape=shape, path=name)
            if args.profile and (shape, path.dtype) not in profiled:
                profiled.add((shape, path.dtype))
                results["profile"] = profile_head(head, optimizers, run_args, device)
            rows.append(results)
    step_compare.add_speedups(rows)
    step_compare.print_table(rows, header)
    for row in rows:
        if "profile" in row:
            step_profile.print_profile(row["profile"], f"{row['shape']}, {row['dtype']} eager")
    return {"device": device_name(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "bf16_units": bf16.removeprefix("bf16 units: "), "results": rows}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    if args.compare:
        results = compare(argv, args, device)
    else:
        results, head, optimizers = measure(args, device, args.compile)
        print_report(results)
        if args.profile:
            results["profile"] = profile_head(head, optimizers, args, device)
            step_profile.print_profile(results["profile"], f"{args.dtype} eager")
    if args.json:
        print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
