"""Plain TRM against TRM+LMA variants at equal training time, with held-out accuracy curves (issue 24).

Every model of every task trains for the same budget (`--budget` seconds of training: CPU time of this
process on a CPU, wall-clock time on an accelerator, as `lma_speed.py --equal-time`; evaluation and making
batches pause the clock) on fresh generated examples, and is evaluated on the same held-out examples at
`--points` regular points of its budget (and untrained). Tasks (benchmarks/study_tasks.py): `arc`
(ARC-like grid transforms, 916 positions, a puzzle embedding per transform), `maze` (916 positions) and
`sudoku` (97 positions, the short-input control). Variants: `plain`, and LMA `clean` and `unclean` at the
latent lengths L_new nearest input length / each of `--compressions` (picked per task among the valid ones,
within 2x of the target) and d' = each of `--latent-dims` x hidden. The mode only restricts which L_new are
valid, so `unclean` takes the lengths clean rejects (at 916 = 4 x 229 positions: multiples of 229), and a
family with no length near a target trains no model for it (Sudoku: no `unclean` variant).
`--lma-options SETS` (a comma list of sets, each one or more LMA_OPTIONS names joined by '+'; today only
`skip`) adds, next to each LMA variant, one per set with those `arch.lma_*` options on (named e.g.
`clean-L128-d64+skip`; such a name in `--variants` adds its options too).
`--autoencode STEPS` trains only each LMA variant's encoder/decoder to reproduce its input and prints how
much of it comes back (benchmarks/lma_autoencode.py), instead of the study.

    python benchmarks/lma_study.py                              # the CPU-sized study (the planned total is printed)
    python benchmarks/lma_study.py --tasks arc --budget 20 --variants plain,unclean
    python benchmarks/lma_study.py --device cuda --dtype bfloat16 --hidden-size 256 --budget 600 --batch-size 64
    python benchmarks/lma_study.py --smoke                      # seconds: every code path at tiny sizes
    python benchmarks/lma_study.py --tasks arc,sudoku --variants clean --autoencode 200 --lma-options skip

Writes OUT/lma_study.json (every point, rewritten after each model) and OUT/lma_study.png (accuracy vs
training time, one panel per task and metric, one line per variant), and prints a table at the end.
"""
import argparse
import copy
import json
import os

import numpy as np
import torch

from benchmarks import equal_time, lma_autoencode, study_report, train_step
from benchmarks.lma_speed import parameter_count
from benchmarks.study_tasks import TASK_NAMES, StudyTask, build_task
from models.lma_layout import check_latent_len, describe_layout, is_clean, valid_latent_lens
from models.recursive_reasoning.trm import TRMConfig
from utils.atomic import read_json_if_present, write_atomically
from utils.cli import comma_list, new_parser, progress, run_cli
from utils.device import select_device
from utils.errors import ConfigError

JSON_FILE, PICTURE_FILE = "lma_study.json", "lma_study.png"
KIND = "lma_study"  # the JSON's "kind": a file without it was not written by this tool and is not overwritten
FAMILIES = ("plain", "unclean", "clean")
LMA_OPTIONS = {"skip": "lma_skip"}  # --lma-options name -> arch key (docs/lma.md "Options")
SMOKE = dict(budget=1.0, points=1, hidden_size=16, num_heads=2, L_layers=1, H_cycles=1, L_cycles=1, halt_max_steps=2,
             batch_size=2, eval_examples=2, compressions="8", latent_dims="1", arc_max_size=4)


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__.splitlines()[0])
    study = parser.add_argument_group("study")
    study.add_argument("--budget", type=float, default=240.0, help="seconds of training per model")
    study.add_argument("--points", type=int, default=6, help="held-out evaluations in each budget (plus one untrained)")
    study.add_argument("--tasks", default=",".join(TASK_NAMES), help=f"comma list of {', '.join(TASK_NAMES)}")
    study.add_argument("--variants", default=",".join(FAMILIES),
                       help="comma list of families (plain, unclean, clean) or variant names as printed "
                            "(e.g. clean-L128-d64)")
    study.add_argument("--compressions", default="8,16",
                       help="LMA latent lengths: per family, the L_new nearest input length L / each value, if within "
                            "2x of it (clean: lengths clean accepts; unclean: lengths only unclean accepts)")
    study.add_argument("--latent-lens", default=None,
                       help="explicit comma list of L_new instead of --compressions (each must be valid at every task)")
    study.add_argument("--latent-dims", default="1,2", help="LMA latent widths d' as multiples of --hidden-size")
    study.add_argument("--lma-options", default="",
                       help="comma list of option sets, each one or more of " + ", ".join(LMA_OPTIONS) +
                            " joined by '+': each LMA variant is also trained with each set on (name suffix +SET)")
    study.add_argument("--autoencode", type=int, default=None, metavar="STEPS",
                       help="instead of the study: train only each LMA variant's encoder/decoder for STEPS steps "
                            "to reproduce its input embedding, and print the reconstruction error and token recovery")
    study.add_argument("--eval-examples", type=int, default=64, help="held-out examples per evaluation")
    study.add_argument("--out", default="outputs/lma_study", help="directory of lma_study.json and lma_study.png")
    study.add_argument("--smoke", action="store_true",
                       help="tiny sizes and a 1 s budget (options given explicitly still win): " +
                            " ".join(f"{k}={v}" for k, v in SMOKE.items()))
    study.add_argument("--seed", type=int, default=0, help="seed of the weights and of the example streams")
    tasks = parser.add_argument_group("tasks")
    tasks.add_argument("--arc-max-size", type=int, default=8, help="largest side of the ARC-like grids (<= 29)")
    tasks.add_argument("--maze-min-path-length", type=int, default=4,
                       help="shortest S->G path of a maze, in steps (generate_maze.py --min-path-length)")
    tasks.add_argument("--sudoku-blanks", default="45,55", help="fewest,most blank cells of a Sudoku")
    model = parser.add_argument_group("model and run")
    model.add_argument("--hidden-size", type=int, default=64, help=train_step.arch_help("hidden_size"))
    model.add_argument("--num-heads", type=int, default=4, help=train_step.arch_help("num_heads"))
    model.add_argument("--expansion", type=float, default=4, help=train_step.arch_help("expansion"))
    model.add_argument("--L-layers", dest="L_layers", type=int, default=2, help=train_step.arch_help("L_layers"))
    model.add_argument("--H-cycles", dest="H_cycles", type=int, default=2, help=train_step.arch_help("H_cycles"))
    model.add_argument("--L-cycles", dest="L_cycles", type=int, default=2, help=train_step.arch_help("L_cycles"))
    model.add_argument("--halt-max-steps", type=int, default=4, help=train_step.arch_help("halt_max_steps"))
    model.add_argument("--batch-size", type=int, default=16, help="examples per training step")
    model.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="forward dtype")
    model.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    model.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave as is)")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    if parser.parse_args(argv).smoke:
        parser.set_defaults(**SMOKE)
    args = parser.parse_args(argv)
    if args.autoencode is not None and args.autoencode < 0:
        parser.error(f"--autoencode must be >= 0, got {args.autoencode}")
    for key in ("budget", "points", "eval_examples", "batch_size", "hidden_size"):
        if getattr(args, key) <= 0:
            parser.error(f"--{key.replace('_', '-')} must be > 0, got {getattr(args, key)}")
    if not 2 <= args.arc_max_size <= 29:
        parser.error(f"--arc-max-size must be in 2..29 (the canvas is 30x30 with an EOS row), got {args.arc_max_size}")
    try:
        args.tasks = comma_list(args.tasks)
        args.variants = comma_list(args.variants)
        args.compressions = [float(c) for c in comma_list(args.compressions)]
        args.latent_lens = None if args.latent_lens is None else [int(n) for n in comma_list(args.latent_lens)]
        args.latent_dims = [int(m) for m in comma_list(args.latent_dims)]
        args.sudoku_blanks = tuple(int(n) for n in comma_list(args.sudoku_blanks))
    except ValueError as err:
        parser.error(f"a comma list holds a value of the wrong type: {err}")
    try:
        args.lma_options = option_sets(comma_list(args.lma_options), args.variants)
    except ValueError as err:
        parser.error(str(err))
    unknown = [t for t in args.tasks if t not in TASK_NAMES]
    if unknown or not args.tasks:
        parser.error(f"--tasks: unknown or no task(s) {', '.join(unknown)}; choose from {', '.join(TASK_NAMES)}")
    if len(args.sudoku_blanks) != 2 or not 1 <= args.sudoku_blanks[0] <= args.sudoku_blanks[1] <= 64:
        parser.error(f"--sudoku-blanks must be MIN,MAX with 1 <= MIN <= MAX <= 64, got {args.sudoku_blanks}")
    if any(c <= 0 for c in args.compressions) or any(m <= 0 for m in args.latent_dims):
        parser.error("--compressions and --latent-dims must be > 0")
    return args


# ---------------------------------------------------------------------------------------------
# Variants
# ---------------------------------------------------------------------------------------------
def option_sets(sets: list[str], variant_names: list[str]) -> list[tuple[str, ...]]:
    """The option sets of --lma-options and of the `+...` suffixes of --variants names, each a tuple of
    option names in LMA_OPTIONS order, without repeats; ValueError naming an unknown option."""
    found: list[tuple[str, ...]] = []
    for text in [*sets, *(name.split("+", 1)[1] for name in variant_names if "+" in name)]:
        names = [n.strip() for n in text.split("+")]
        unknown = [n for n in names if n not in LMA_OPTIONS]
        if unknown:
            raise ValueError(f"--lma-options / --variants: unknown LMA option(s) {', '.join(map(repr, unknown))} "
                             f"in {text!r}; choose from {', '.join(LMA_OPTIONS)}, joined by '+'")
        ordered = tuple(n for n in LMA_OPTIONS if n in names)
        if ordered not in found:
            found.append(ordered)
    return found


def with_options(configs: dict[str, dict], sets: list[tuple[str, ...]]) -> dict[str, dict]:
    """Each LMA variant followed by one per option set, named VARIANT+OPT1+OPT2, with those keys on."""
    out = {}
    for name, config in configs.items():
        out[name] = config
        if config.get("lma_enable"):
            for options in sets:
                out["+".join((name, *options))] = dict(config, **{LMA_OPTIONS[o]: True for o in options})
    return out


def base_config(args: argparse.Namespace, task: StudyTask) -> dict:
    shape = argparse.Namespace(**vars(args), seq_len=task.seq_len, vocab_size=task.vocab_size,
                               num_puzzle_identifiers=task.num_puzzle_identifiers, puzzle_emb_ndim=args.hidden_size,
                               puzzle_emb_len=16, pos_encodings="rope", mlp_t=False)
    return train_step.model_config(shape)


def latent_lens_of(mode: str, length: int, width: int) -> list[int]:
    """The L_new (at most L) of a variant family. The mode only restricts which lengths are valid (the model
    is the same at equal L_new), so the `unclean` family takes the lengths only unclean accepts: two
    variants are never the same model."""
    clean = valid_latent_lens(length, width, "clean")
    if mode == "clean":
        return [n for n in clean if n <= length]
    return [n for n in valid_latent_lens(length, width, "unclean") if n <= length and n not in clean]


MAX_TARGET_RATIO = 2.0  # a picked L_new is at most this factor away from its target L / c, else none is picked


def pick_latent_lens(candidates: list[int], length: int, compressions: list[float]) -> list[int]:
    """Per compression c, the candidate nearest L / c that is not picked yet (ties go to the longer), if it
    is within MAX_TARGET_RATIO of L / c."""
    picked: list[int] = []
    for compression in compressions:
        target = length / compression
        free = [n for n in candidates if n not in picked and 1 / MAX_TARGET_RATIO <= n / target <= MAX_TARGET_RATIO]
        if free:
            picked.append(min(free, key=lambda n: (abs(n - target), -n)))
    return picked


def variants(args: argparse.Namespace, task: StudyTask) -> dict[str, dict]:
    """Variant name -> model config, in the order they train; only those --variants selects.

    An explicit --latent-lens value is trained once, in the family of the narrowest mode that accepts it.
    """
    base = base_config(args, task)
    length, width = TRMConfig(**base).total_len, args.hidden_size
    configs = {"plain": base}
    for mode in ("unclean", "clean"):
        if args.latent_lens is None:
            lens = pick_latent_lens(latent_lens_of(mode, length, width), length, args.compressions)
        else:
            for n in args.latent_lens:
                try:
                    check_latent_len(n, length, width, "unclean")
                except ValueError as err:
                    raise ConfigError(f"--latent-lens, task {task.name}: {err}") from None
            lens = [n for n in args.latent_lens if (mode == "clean") == is_clean(n, length, width)]
        for latent_len in lens:
            for multiple in args.latent_dims:
                dim = multiple * width
                configs[f"{mode}-L{latent_len}-d{dim}"] = dict(base, lma_enable=True, lma_mode=mode,
                                                               lma_latent_len=latent_len, lma_latent_dim=dim)
    configs = with_options(configs, args.lma_options)
    chosen = {name: config for name, config in configs.items()
              if name in args.variants or name.split("-")[0] in args.variants}
    if not chosen:
        raise ConfigError(f"--variants {','.join(args.variants)} selects nothing for task {task.name}; "
                          f"its variants are {', '.join(configs)}")
    return chosen


def settings(config: dict) -> str:
    if not config.get("lma_enable"):
        return "plain TRM"
    options = [name for name, key in LMA_OPTIONS.items() if config.get(key)]
    described = describe_layout(TRMConfig(**config).lma_layout, config["lma_mode"], automatic=False)
    return described + (f", options {'+'.join(options)}" if options else "")


# ---------------------------------------------------------------------------------------------
# The study
# ---------------------------------------------------------------------------------------------
def check_out_dir(out: str) -> tuple[str, str]:
    """The two output paths; refuses to replace files of the same names that this tool did not write."""
    json_path, picture_path = os.path.join(out, JSON_FILE), os.path.join(out, PICTURE_FILE)
    try:
        previous = read_json_if_present(json_path)
    except ValueError:
        previous = None
    ours = isinstance(previous, dict) and previous.get("kind") == KIND
    for path in (json_path, picture_path):
        if os.path.exists(path) and not ours:
            raise ConfigError(f"{path} exists and was not written by lma_study.py ({json_path} lacks "
                              f"\"kind\": \"{KIND}\"); move it away or pass another --out")
    os.makedirs(out, exist_ok=True)
    return json_path, picture_path


def write_json(path: str, document: dict) -> None:
    write_atomically(path, lambda f: json.dump(document, f, indent=1), "w")


def train_variant(args, task: StudyTask, config: dict, held_out: list, device: torch.device, bar) -> dict:
    torch.manual_seed(args.seed)
    head = train_step.build_head(config, device)
    rng = np.random.default_rng(args.seed)  # the same training examples, in the same order, for every variant
    points = []

    def at_point(trained_s: float, steps: int) -> None:
        points.append({"train_s": trained_s, "steps": steps, "examples": steps * args.batch_size,
                       **equal_time.held_out_accuracy(head, held_out)})

    shown = [0.0]  # seconds of this model on the bar, which counts each model's budget once

    def on_step(spent: float) -> None:
        step = min(spent, args.budget - shown[0])
        shown[0] += step
        bar.update(step)

    steps = equal_time.train_for(args.budget, head, equal_time.build_optimizers(head, puzzle_emb=True),
                                 lambda: task.batch(args.batch_size, rng, device), args.batch_size, device,
                                 every=args.budget / args.points, at_point=at_point, on_step=on_step)
    bar.update(args.budget - shown[0])
    return {"settings": settings(config), "parameters": parameter_count(head), "steps": steps,
            "config": {k: v for k, v in config.items() if k.startswith("lma_")}, "points": points}


def run_study(args: argparse.Namespace) -> dict:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    tasks = [build_task(name, args.arc_max_size, args.maze_min_path_length, args.sudoku_blanks) for name in args.tasks]
    plan = {task.name: variants(args, task) for task in tasks}  # every variant is checked before any training
    if args.autoencode is not None:
        return {"kind": "lma_autoencode", "tasks": lma_autoencode.run_autoencode(
            args, plan, {task.name: task for task in tasks}, device)}
    json_path, picture_path = check_out_dir(args.out)
    models = sum(len(v) for v in plan.values())
    clock = "CPU seconds of this process" if device.type == "cpu" else "wall-clock seconds"
    print(f"planned: {models} models x {args.budget:g} {clock} = {models * args.budget / 60:.1f} min of training, "
          f"plus {args.points + 1} held-out evaluations of {args.eval_examples} examples per model", flush=True)
    for name, configs in plan.items():
        print(f"  {name}: {', '.join(configs)}", flush=True)
    options = {k: v for k, v in vars(args).items() if k != "out"}
    document = {"kind": KIND, "device": train_step.device_name(device), "threads": torch.get_num_threads(),
                "torch": torch.__version__, "clock": clock, "options": options, "tasks": {}}
    with progress(total=models * args.budget, desc="training",
                  bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]") as bar:
        for task in tasks:
            eval_rng = np.random.default_rng(args.seed + 1)  # another stream than training's
            count = -(-args.eval_examples // args.batch_size)
            held_out = [task.batch(args.batch_size, eval_rng, device) for _ in range(count)]
            entry = document["tasks"][task.name] = {"description": task.description,
                                                    "positions": TRMConfig(**base_config(args, task)).total_len,
                                                    "held_out_examples": count * args.batch_size, "variants": {}}
            for name, config in plan[task.name].items():
                bar.set_postfix_str(f"{task.name} {name}")
                entry["variants"][name] = train_variant(args, task, copy.deepcopy(config), held_out, device, bar)
                write_json(json_path, document)
    document["table"] = study_report.table(document)
    write_json(json_path, document)
    study_report.write_picture(document, picture_path)
    study_report.print_table(document)
    print(f"wrote {json_path} and {picture_path}")
    return document


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    return run_cli(lambda: run_study(args))


if __name__ == "__main__":
    main()
