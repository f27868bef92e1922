r"""Answer Sudoku and Maze puzzles with a trained checkpoint: `python predict.py checkpoint=PATH sudoku=...`.

    python predict.py checkpoint=runs/sudoku/step_best \
        sudoku="..3.2.6..9..3.5..1..18.64....81.29..7.......8..67.82....26.95..8..2.3..9..5.1.3.."
    python predict.py checkpoint=runs/sudoku which=best --input puzzles.csv tta=8 --out answers.html
    python predict.py checkpoint=runs/maze maze=maze.txt halt_early=true --out maze.png

For each puzzle it prints the answer (Sudoku as a 9x9 board, a maze as its 30 lines with the path
drawn as `o`; either can be pasted back as input), the ACT steps used, the model's confidence
sigmoid(q_halt), with `tta=K` the votes of the winning answer among the K+1, and for Sudoku
whether the answer is a valid completion of the clues. `--out FILE.png|.html` draws them.

Inputs: `sudoku=` 81 cells (digits 1-9, `.` or `0` blank; spaces, newlines and the `|`, `-`, `+`
of a pasted board are ignored), `maze=FILE` (30 lines of 30 characters of `# SGo`: wall, open,
start, goal; path cells `o` are read as open) or `input=FILE` / `--input FILE`, a CSV with one
puzzle per line (a `question` column, as in the Sudoku-Extreme and Maze-Hard CSVs, or the first).
The checkpoint is resolved and its model built as evaluate.py does (`all_config.yaml` beside it);
its task comes from the data it was trained on. ARC checkpoints need the puzzle embedding of a task
seen in training: use evaluate.py for them. Keys are Hydra-style `key=value`; the list follows.
"""
import csv
import io
import os
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from dataset.common import IGNORE_LABEL_ID, PuzzleDatasetMetadata
from dataset.tasks import TASKS, Task, task_of
from rundir.layout import BEST_WEIGHTS, CONFIG_FILE, WEIGHTS_PATTERN
from training.evaluation import run_act_with_steps
from training.trained import load_trained, open_checkpoint, trained_metadata
from training.tta import (
    EligibleCheck,
    tta_candidates,
    tta_transforms,
    valid_completions_check,
    vote,
)
from utils.cli import DEVICE_HELP, parse_key_values, quoted, run_key_value_command
from utils.device import select_device
from utils.errors import ConfigError
from viz.answers import answers_sheet
from viz.puzzles import WRITERS, write_sheet

# What predict.py answers: the tasks with a text form; its puzzle keys are named after them.
ANSWERED = tuple(name for name, task in TASKS.items() if task.text is not None)
# Values YAML would change (a Sudoku of digits is an integer to YAML and would lose its leading zeros).
TEXT_KEYS = ("checkpoint", "config", *ANSWERED, "input", "out", "device")
FLAG_KEYS = ("input", "out")  # also accepted as `--input FILE` / `--out FILE`


class PredictConfig(BaseModel):
    """Command-line keys of predict.py; the model comes from the checkpoint and its training config."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: str = Field(
        description=f"weights file (`{WEIGHTS_PATTERN}`), a run directory (see `which`), or hf://OWNER/REPO/...")
    which: Literal["last", "best"] = Field(
        "last", description=f"for a run directory: its newest {WEIGHTS_PATTERN}, or {BEST_WEIGHTS}")
    config: str | None = Field(None, description=f"training config; default: {CONFIG_FILE} beside the checkpoint")
    sudoku: str | None = Field(None, description="one Sudoku: 81 cells, digits 1-9 and `.` or `0` for blanks")
    maze: str | None = Field(None, description="a text file: one maze of 30 lines x 30 characters of `# SGo`")
    input: str | None = Field(None, description="a CSV file of puzzles, one a line (a `question` column, or the first)")
    tta: int = Field(0, ge=0, description="also answer under K transforms and vote over the K+1 answers")
    tta_sudoku_check: bool = Field(False,
        description="Sudoku, with tta: only valid completions of the clues vote, where any")
    halt_early: bool = Field(False,
        description="stop each puzzle at the first step its Q head says halt (default: all steps)")
    device: str = Field("auto", description=DEVICE_HELP)
    out: str | None = Field(None, description="also draw the answers: a .png or .html file")


@dataclass
class Puzzle:
    source: str  # where it came from: the argument, or the file and line
    tokens: np.ndarray  # (seq_len,) the model's input tokens


@dataclass
class Answer:
    tokens: np.ndarray  # (seq_len,) the predicted tokens (the vote's winner with tta)
    steps: int  # ACT steps behind the answer
    confidence: float  # sigmoid(q_halt); with tta the mean over the answer's votes
    votes: int  # candidates that gave this answer (1 without tta)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def is_option(arg: str) -> bool:
    """`--flag` or `key=value` of one of our keys: not the file name a `--input` / `--out` expects."""
    return arg.startswith("--") or arg.partition("=")[0].lstrip("+") in PredictConfig.model_fields


def flags_to_keys(argv: list[str]) -> list[str]:
    """`--input FILE`, `--input=FILE` -> `input=FILE` (the spelling of the issue), the same for `--out`."""
    result, i = [], 0
    while i < len(argv):
        name, has_value, value = argv[i].removeprefix("--").partition("=")
        if argv[i].startswith("--") and name in FLAG_KEYS:
            if not has_value:
                if i + 1 >= len(argv) or is_option(argv[i + 1]):
                    raise ConfigError(f"--{name} needs a file name, e.g. --{name} FILE")
                i, value = i + 1, argv[i + 1]
            result.append(f"{name}={value}")
        else:
            result.append(argv[i])
        i += 1
    return result


def parse_args(argv: list[str]) -> PredictConfig:
    """Hydra-style `key=value` arguments as evaluate.py parses them, except that file names, devices and
    puzzles are taken as written."""
    return parse_key_values(flags_to_keys(argv), PredictConfig, "predict.py",
                            'checkpoint=PATH sudoku="53..7....6..195..."', verbatim=TEXT_KEYS)


def puzzle_key(name: str) -> str:
    """How the puzzle key of a task is given: `sudoku="<81 cells>"`, `maze=FILE`."""
    return f"{name}={TASKS[name].text.placeholder}"


def check_request(args: PredictConfig) -> None:
    """What can be checked before reading the checkpoint: one source of puzzles, a picture format."""
    given = [key for key in (*ANSWERED, "input") if getattr(args, key) is not None]
    if len(given) != 1:
        raise ConfigError(f"Give exactly one of {', '.join(map(puzzle_key, ANSWERED))} or input=FILE.CSV"
                          f"{' (got ' + ', '.join(given) + ')' if given else ''}.")
    if args.out is not None and os.path.splitext(args.out)[1].lower() not in WRITERS:
        raise ConfigError(f"out={args.out}: pictures are written as {', '.join(sorted(WRITERS))}, "
                          "chosen by the file name's extension.")


# ---------------------------------------------------------------------------------------------
# The checkpoint's task
# ---------------------------------------------------------------------------------------------
def check_task(args: PredictConfig, task: str, checkpoint: str, metadata: PuzzleDatasetMetadata) -> None:
    """The checkpoint must answer puzzles of the kind given."""
    trained = f"{checkpoint} was trained on {TASKS[task].title} (vocab_size {metadata.vocab_size}, " \
              f"seq_len {metadata.seq_len})"
    if task == "arc":
        raise ConfigError(f"{trained}: ARC puzzles need the puzzle embedding of a task seen in training, which "
                          "predict.py does not look up yet; evaluate ARC checkpoints with evaluate.py.")
    if task not in ANSWERED:
        titles = " and ".join(TASKS[name].title for name in ANSWERED)
        raise ConfigError(f"{trained}: predict.py answers {titles} puzzles only.")
    for key in ANSWERED:
        if getattr(args, key) is not None and key != task:
            raise ConfigError(f"{key}= gives a {TASKS[key].title} puzzle, but {trained}; give {puzzle_key(task)}.")
    if args.tta_sudoku_check and TASKS[task].valid_completions is None:
        raise ConfigError(f"tta_sudoku_check is for Sudoku checkpoints; {trained}.")


# ---------------------------------------------------------------------------------------------
# Reading puzzles
# ---------------------------------------------------------------------------------------------
def read_text(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return f.read()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist.") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not UTF-8 text.") from None
    except OSError as err:
        raise ConfigError(f"Cannot read {what} {path}: {err.strerror}.") from None


def header_column(row: list[str]) -> int | None:
    """For a first line of column names (`source,question,...`, `quizzes,solutions`): the puzzle column
    (`question`, else the first); None for a first line that is a puzzle."""
    names = [field.strip() for field in row]
    if "question" in names:
        return names.index("question")
    return 0 if names[0].isidentifier() else None


def read_csv_puzzles(path: str, task: Task) -> list[Puzzle]:
    """One puzzle per line: the `question` column when the first line names it, else the first column."""
    reader = csv.reader(io.StringIO(read_text(path, "input file")))
    puzzles, column = [], 0
    try:
        for row in reader:
            if not row:
                continue
            if reader.line_num == 1 and header_column(row) is not None:
                column = header_column(row)
                continue
            where = f"{path}, line {reader.line_num}"
            if len(row) <= column:
                raise ConfigError(f"{where} has {len(row)} fields, no question column {column + 1}.")
            puzzles.append(Puzzle(where, task.text.parse_csv(row[column], where)))
    except csv.Error as err:
        raise ConfigError(f"{path}, line {reader.line_num} is not valid CSV ({err}).") from None
    if not puzzles:
        raise ConfigError(f"{path} holds no puzzles (one a line, e.g. a question column).")
    return puzzles


def read_puzzles(args: PredictConfig, task: Task) -> list[Puzzle]:
    """The puzzle of the task's key (its text, or a file of it), or those of the input CSV."""
    value = getattr(args, task.name)
    if value is None:
        return read_csv_puzzles(args.input, task)
    if task.text.from_file:
        where = f"{task.name} file {value}"
        return [Puzzle(where, task.text.parse(read_text(value, f"{task.name} file"), where))]
    return [Puzzle(f"{task.name}=", task.text.parse(value, f"{task.name}="))]


# ---------------------------------------------------------------------------------------------
# Answering
# ---------------------------------------------------------------------------------------------
def answer_batch(model: torch.nn.Module, batch: dict, transforms: list, halt_early: bool,
                 eligible_check: EligibleCheck | None) -> list[Answer]:
    """Answers of a batch: the untransformed one, and with transforms the vote over it and one per transform,
    the candidates that evaluation votes over (training/tta.py)."""
    def run(b: dict) -> dict:
        return run_act_with_steps(model, b, halt_early)

    first = run(batch)
    candidates = tta_candidates(run, batch, first, transforms, tuple(first))
    answers, q_halt, steps = candidates["preds"], candidates["q_halt_logits"], candidates["steps"]  # (C, B, ...)
    eligible = eligible_check(answers, batch["inputs"]) if eligible_check is not None else None
    winner = vote(answers, q_halt, eligible)
    same = (answers == winner[None]).all(-1)  # (C, B): candidates giving the winning answer
    votes = same.sum(0)
    confidence = (same * torch.sigmoid(q_halt.float())).sum(0) / votes  # the vote's tie-break measure
    winner_steps = steps.gather(0, same.int().argmax(0, keepdim=True))[0]  # of its first candidate
    return [Answer(winner[i].cpu().numpy(), int(winner_steps[i]), float(confidence[i]), int(votes[i]))
            for i in range(winner.shape[0])]


@torch.inference_mode()
def answer_all(model: torch.nn.Module, puzzles: list[Puzzle], metadata: PuzzleDatasetMetadata, device: torch.device,
               args: PredictConfig, transforms: list, batch_size: int) -> list[Answer]:
    """Every puzzle, in batches of the training batch size, without labels (nothing is scored)."""
    model.eval()
    eligible_check = valid_completions_check(metadata.vocab_size, metadata.seq_len) if args.tta_sudoku_check \
        else None
    answers = []
    for start in range(0, len(puzzles), batch_size):
        inputs = torch.as_tensor(np.stack([p.tokens for p in puzzles[start:start + batch_size]]), dtype=torch.int32,
                                 device=device)
        batch = {"inputs": inputs, "labels": torch.full_like(inputs, IGNORE_LABEL_ID),
                 "puzzle_identifiers": torch.full((inputs.shape[0],), metadata.blank_identifier_id,
                                                  dtype=torch.int32, device=device)}
        answers += answer_batch(model, batch, transforms, args.halt_early, eligible_check)
    return answers


# ---------------------------------------------------------------------------------------------
# Showing answers
# ---------------------------------------------------------------------------------------------
def summary_line(task: Task, puzzle: Puzzle, answer: Answer, candidates: int) -> str:
    parts = [f"steps: {answer.steps}", f"confidence: {answer.confidence:.3f}"]
    if candidates > 1:
        parts.append(f"votes: {answer.votes}/{candidates}")
    solved = task.is_solved(puzzle.tokens, answer.tokens)
    parts.append(task.text.verdicts[solved])
    why = task.text.why_not(puzzle.tokens, answer.tokens) if task.text.why_not and not solved else None
    if why:
        parts.append(f"why: {why}")
    return "   ".join(parts)


def print_answers(task: Task, puzzles: list[Puzzle], answers: list[Answer], candidates: int) -> None:
    for i, (puzzle, answer) in enumerate(zip(puzzles, answers)):
        print(f"\n== puzzle {i + 1}/{len(puzzles)} ({puzzle.source}) ==")
        print(task.text.format(answer.tokens))
        print(summary_line(task, puzzle, answer, candidates))


def draw_answers(path: str, task: Task, checkpoint: str, puzzles: list[Puzzle], answers: list[Answer],
                 candidates: int, note: str) -> None:
    solved = [task.is_solved(p.tokens, a.tokens) for p, a in zip(puzzles, answers)]
    sheet = answers_sheet(task.name, checkpoint, [p.tokens for p in puzzles], answers, solved, candidates, note)
    try:
        write_sheet(sheet, path)  # atomically (viz/files.py)
    except OSError as err:
        raise ConfigError(f"Cannot write out={path}: {err.strerror or err}.") from None
    print(f"\nPicture written to {quoted(path)}")


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------
def run(args: PredictConfig) -> list[Answer]:
    """Answer the puzzles; print (and draw) them; return the answers, in input order."""
    check_request(args)
    checkpoint = open_checkpoint(args.checkpoint, args.which, args.config)
    metadata = trained_metadata(checkpoint)
    name = task_of(metadata.vocab_size, metadata.seq_len)
    check_task(args, name, checkpoint.weights, metadata)
    task = TASKS[name]
    puzzles = read_puzzles(args, task)
    device = select_device(args.device)
    # A few puzzles: compiling would take longer than answering them.
    model = load_trained(checkpoint, device, fallback_metadata=metadata, compile_model=False)
    transforms = tta_transforms(metadata.vocab_size, metadata.seq_len, args.tta, checkpoint.config.seed) \
        if args.tta else []
    note = f"halt_early={args.halt_early}, tta={args.tta}"
    print(f"Answering {len(puzzles)} {task.title} puzzle(s) with {quoted(checkpoint.weights)} on {device}, {note}")
    answers = answer_all(model, puzzles, metadata, device, args, transforms, checkpoint.config.global_batch_size)
    print_answers(task, puzzles, answers, len(transforms) + 1)
    if args.out:
        draw_answers(args.out, task, checkpoint.weights, puzzles, answers, len(transforms) + 1, note)
    return answers


def main(argv: list[str] | None = None) -> None:
    run_key_value_command(argv, __doc__, PredictConfig, lambda argv: run(parse_args(argv)))


if __name__ == "__main__":
    main()
