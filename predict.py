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
from collections import deque
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from dataset.common import IGNORE_LABEL_ID, PuzzleDatasetMetadata
from dataset.tasks import arc, maze, sudoku, task_of
from evaluate import EvaluateConfig, EvaluationPlan, build_and_load, load_plan, resolve_checkpoint, trained_metadata
from rundir.layout import BEST_WEIGHTS, CONFIG_FILE, WEIGHTS_PATTERN
from rundir.states import safe_load
from training.evaluation import act_model, run_act_all_steps, run_act_halting_early
from training.state import EMBED_TOKENS_KEY, PUZZLE_EMB_KEY, weights_vocab_size
from training.tta import sudoku_valid_completions, tta_transforms, vote
from utils.checkpoint import strip_compiled_prefix
from utils.cli import parse_key_values, quoted, run_key_value_command
from utils.config import DEVICE_HELP
from utils.device import select_device
from utils.distributed import DistContext
from utils.errors import ConfigError
from viz.maze import COLOURS as MAZE_COLOURS
from viz.maze import maze_panel
from viz.puzzles import WRITERS, write_sheet
from viz.sheet import Example, Sheet
from viz.sudoku import CLUE_BG, EMPTY_BG, sudoku_digits, sudoku_panel

TASKS = ("sudoku", "maze")  # what predict.py answers; the input keys are named after them
TASK_TITLE = {"sudoku": "Sudoku", "maze": "Maze", "arc": "ARC", "generic": "a generic dataset"}
SUDOKU_SEPARATORS = "|-+"  # the lines of a pasted board, as `format_sudoku` prints them
# Values YAML would change (a Sudoku of digits is an integer to YAML and would lose its leading zeros).
TEXT_KEYS = ("checkpoint", "config", "sudoku", "maze", "input", "out", "device")
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


def check_request(args: PredictConfig) -> None:
    """What can be checked before reading the checkpoint: one source of puzzles, a picture format."""
    given = [key for key in ("sudoku", "maze", "input") if getattr(args, key) is not None]
    if len(given) != 1:
        raise ConfigError(f"Give exactly one of sudoku=\"<81 cells>\", maze=FILE or input=FILE.CSV"
                          f"{' (got ' + ', '.join(given) + ')' if given else ''}.")
    if args.out is not None and os.path.splitext(args.out)[1].lower() not in WRITERS:
        raise ConfigError(f"out={args.out}: pictures are written as {', '.join(sorted(WRITERS))}, "
                          "chosen by the file name's extension.")


# ---------------------------------------------------------------------------------------------
# The checkpoint's task
# ---------------------------------------------------------------------------------------------
def load_predict_plan(args: PredictConfig) -> tuple[str, EvaluationPlan]:
    """(weights file, plan) as evaluate.py resolves them; the test split is not needed here."""
    # data_paths=[]: load_plan then asks for no test directories; the model is still built from the
    # training config's own datasets when they are here (build_and_load reads their train split).
    eval_args = EvaluateConfig(checkpoint=args.checkpoint, which=args.which, config=args.config, data_paths=[])
    checkpoint = resolve_checkpoint(args.checkpoint, args.which, need_config=args.config is None)
    plan = load_plan(eval_args, checkpoint)
    return checkpoint, replace(plan, train_paths=plan.train_config.data_paths, test_paths=[])


def metadata_from_weights(checkpoint: str) -> PuzzleDatasetMetadata:
    """The metadata of the dataset a checkpoint was trained on, for a Sudoku or Maze checkpoint whose data
    is not here: the task from the vocabulary of its token embedding (each task's differs), the rest as the
    builders write it (`write_grouped_split`: PAD and ignored label 0, every puzzle the blank identifier 0)."""
    weights = strip_compiled_prefix(safe_load(checkpoint, mmap=True))
    vocab_size = weights_vocab_size(weights)
    if vocab_size is None:
        raise ConfigError(f"Cannot tell the task of {checkpoint}: its training data is not here and it has no "
                          f"{EMBED_TOKENS_KEY}; point config= at a training config whose data_paths exist here.")
    modules = [module for module in (arc, sudoku, maze) if module.VOCAB_SIZE == vocab_size]
    if not modules:
        raise ConfigError(f"{checkpoint} has a vocabulary of {vocab_size} tokens, neither Sudoku's "
                          f"({sudoku.VOCAB_SIZE}) nor Maze's ({maze.VOCAB_SIZE}): predict.py answers those only.")
    identifiers = weights[PUZZLE_EMB_KEY].shape[0] if PUZZLE_EMB_KEY in weights else 1
    return PuzzleDatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=vocab_size,
                                 seq_len=modules[0].SEQ_LEN, num_puzzle_identifiers=identifiers, total_groups=1,
                                 mean_puzzle_examples=1.0, total_puzzles=1, sets=["all"])


def checkpoint_metadata(checkpoint: str, plan: EvaluationPlan) -> PuzzleDatasetMetadata:
    """What the run recorded (its training state, or its dataset if here), else what the weights tell."""
    metadata, _ = trained_metadata(checkpoint, plan)
    return metadata if metadata is not None else metadata_from_weights(checkpoint)


def check_task(args: PredictConfig, task: str, checkpoint: str, metadata: PuzzleDatasetMetadata) -> None:
    """The checkpoint must answer puzzles of the kind given."""
    trained = f"{checkpoint} was trained on {TASK_TITLE[task]} (vocab_size {metadata.vocab_size}, " \
              f"seq_len {metadata.seq_len})"
    if task == "arc":
        raise ConfigError(f"{trained}: ARC puzzles need the puzzle embedding of a task seen in training, which "
                          "predict.py does not look up yet; evaluate ARC checkpoints with evaluate.py.")
    if task not in TASKS:
        raise ConfigError(f"{trained}: predict.py answers Sudoku and Maze puzzles only.")
    for key in TASKS:
        if getattr(args, key) is not None and key != task:
            hint = 'sudoku="<81 cells>"' if task == "sudoku" else "maze=FILE"
            raise ConfigError(f"{key}= gives a {TASK_TITLE[key]} puzzle, but {trained}; give {hint}.")
    if args.tta_sudoku_check and task != "sudoku":
        raise ConfigError(f"tta_sudoku_check is for Sudoku checkpoints; {trained}.")


# ---------------------------------------------------------------------------------------------
# Reading puzzles
# ---------------------------------------------------------------------------------------------
def parse_sudoku(text: str, where: str) -> np.ndarray:
    """81 cells -> tokens (digit + 1, blank 1); spaces and board lines are ignored."""
    cells = [c for c in text if not c.isspace() and c not in SUDOKU_SEPARATORS]
    for i, char in enumerate(cells):
        if char not in sudoku.QUESTION_CHARS:
            raise ConfigError(f"{where}: {char!r} at cell {i + 1} (row {i // sudoku.SIDE + 1}, column "
                              f"{i % sudoku.SIDE + 1}) is not a Sudoku cell; use digits 1-9 and . or 0 for blanks.")
    if len(cells) != sudoku.SEQ_LEN:
        raise ConfigError(f"{where} has {len(cells)} cells, expected {sudoku.SEQ_LEN} (9 rows of 9: digits 1-9, "
                          ". or 0 for blanks).")
    return np.array([sudoku.DIGIT_OF[c] for c in cells], dtype=np.int64) + sudoku.DIGIT_OFFSET


def maze_token(char: str) -> int:
    """A path cell `o` of a solved maze is read as open: the model draws the path itself."""
    return maze.OPEN if char == "o" else maze.TOKEN_OF[char]


def parse_maze(rows: list[str], where: str, row_word: str = "line") -> np.ndarray:
    """30 rows of 30 characters of `# SGo`, one start and one goal -> tokens."""
    size = maze.GRID_SIZE
    if len(rows) != size:
        raise ConfigError(f"{where} has {len(rows)} {row_word}s, expected {size} {row_word}s of {size} characters.")
    for r, row in enumerate(rows):
        if len(row) != size:
            raise ConfigError(f"{where}, {row_word} {r + 1} has {len(row)} characters, expected {size}.")
        for c, char in enumerate(row):
            if char not in maze.CHARSET:
                raise ConfigError(f"{where}, {row_word} {r + 1}, column {c + 1}: {char!r} is not a maze cell; use "
                                  "'#' wall, ' ' open, 'S' start, 'G' goal ('o' path cells are read as open).")
    tokens = np.array([maze_token(char) for row in rows for char in row], dtype=np.int64)
    for token, name in ((maze.START, "'S' (start)"), (maze.GOAL, "'G' (goal)")):
        count = int((tokens == token).sum())
        if count != 1:
            raise ConfigError(f"{where} has {'no' if count == 0 else count} {name} cell{'s' * (count > 1)}, "
                              "expected exactly one.")
    return tokens


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


def read_maze_file(path: str) -> Puzzle:
    lines = read_text(path, "maze file").splitlines()
    while lines and not lines[-1]:  # a maze line is never empty: blank lines at the end are not rows
        lines.pop()
    return Puzzle(f"maze file {path}", parse_maze(lines, f"maze file {path}"))


def header_column(row: list[str]) -> int | None:
    """For a first line of column names (`source,question,...`, `quizzes,solutions`): the puzzle column
    (`question`, else the first); None for a first line that is a puzzle."""
    names = [field.strip() for field in row]
    if "question" in names:
        return names.index("question")
    return 0 if names[0].isidentifier() else None


def parse_csv_puzzle(text: str, task: str, where: str) -> np.ndarray:
    if task == "sudoku":
        return parse_sudoku(text, where)
    if len(text) != maze.SEQ_LEN:
        raise ConfigError(f"{where} has a maze of {len(text)} characters, expected {maze.SEQ_LEN} (30 rows of 30).")
    rows = [text[i:i + maze.GRID_SIZE] for i in range(0, maze.SEQ_LEN, maze.GRID_SIZE)]
    return parse_maze(rows, where, row_word="row")


def read_csv_puzzles(path: str, task: str) -> list[Puzzle]:
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
            puzzles.append(Puzzle(where, parse_csv_puzzle(row[column], task, where)))
    except csv.Error as err:
        raise ConfigError(f"{path}, line {reader.line_num} is not valid CSV ({err}).") from None
    if not puzzles:
        raise ConfigError(f"{path} holds no puzzles (one a line, e.g. a question column).")
    return puzzles


def read_puzzles(args: PredictConfig, task: str) -> list[Puzzle]:
    if args.sudoku is not None:
        return [Puzzle("sudoku=", parse_sudoku(args.sudoku, "sudoku="))]
    if args.maze is not None:
        return [read_maze_file(args.maze)]
    return read_csv_puzzles(args.input, task)


# ---------------------------------------------------------------------------------------------
# Answering
# ---------------------------------------------------------------------------------------------
class HaltSteps:
    """The halting rule, noting the step each sequence first says halt: run_act_halting_early keeps the
    outputs of that step (or of halt_max_steps) but reports only their sum."""

    def __init__(self, wants_to_halt):
        self.wants_to_halt = wants_to_halt
        self.calls = 0
        self.first: torch.Tensor | None = None

    def __call__(self, q_halt_logits: torch.Tensor, q_continue_logits: torch.Tensor) -> torch.Tensor:
        says_halt = self.wants_to_halt(q_halt_logits, q_continue_logits)
        self.calls += 1  # the model runs every sequence in lock-step: call k is step k
        first = torch.zeros_like(says_halt, dtype=torch.int64) if self.first is None else self.first
        self.first = torch.where((first == 0) & says_halt, self.calls, first)
        return says_halt

    def steps(self, halt_max_steps: int) -> torch.Tensor:
        return torch.where(self.first > 0, self.first, halt_max_steps)


def run_model(model: torch.nn.Module, batch: dict, halt_early: bool) -> tuple[torch.Tensor, ...]:
    """(preds, q_halt_logits, steps) of one ACT run, as evaluation runs it."""
    keys = {"preds", "q_halt_logits", "actual_steps"}
    max_steps = act_model(model).config.halt_max_steps
    if halt_early:
        recorder = HaltSteps(act_model(model).wants_to_halt)
        _, outputs = run_act_halting_early(model, batch, keys, recorder)
        steps = recorder.steps(max_steps)
    else:
        _, outputs = run_act_all_steps(model, batch, keys)
        # Configs that halt in evaluation report the steps of their last answer; the others run them all.
        steps = outputs.get("actual_steps", torch.full_like(outputs["q_halt_logits"], max_steps))
    return outputs["preds"], outputs["q_halt_logits"], steps.long()


def answer_batch(model: torch.nn.Module, batch: dict, transforms: list, halt_early: bool,
                 sudoku_check: bool) -> list[Answer]:
    """Answers of a batch: the untransformed one, and with transforms the vote over it and one per transform,
    collected as training/tta.py's tta_metric_sums collects them."""
    runs = [run_model(model, batch, halt_early)]
    for transform in transforms:
        preds, q_halt, steps = run_model(model, {**batch, "inputs": transform(batch["inputs"])}, halt_early)
        runs.append((transform.inverse()(preds), q_halt, steps))
    answers, q_halt, steps = (torch.stack(column) for column in zip(*runs))  # (C, B, ...)
    eligible = sudoku_valid_completions(answers, batch["inputs"]) if sudoku_check else None
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
    answers = []
    for start in range(0, len(puzzles), batch_size):
        inputs = torch.as_tensor(np.stack([p.tokens for p in puzzles[start:start + batch_size]]), dtype=torch.int32,
                                 device=device)
        batch = {"inputs": inputs, "labels": torch.full_like(inputs, IGNORE_LABEL_ID),
                 "puzzle_identifiers": torch.full((inputs.shape[0],), metadata.blank_identifier_id,
                                                  dtype=torch.int32, device=device)}
        answers += answer_batch(model, batch, transforms, args.halt_early, args.tta_sudoku_check)
    return answers


# ---------------------------------------------------------------------------------------------
# Showing answers
# ---------------------------------------------------------------------------------------------
def format_sudoku(tokens: np.ndarray) -> str:
    """A 9x9 board with 3x3 boxes; `.` where the model answered no digit."""
    digits = sudoku_digits(tokens)
    lines = []
    for r in range(sudoku.SIDE):
        if r and r % sudoku.BLOCK == 0:
            lines.append("+".join("-" * (2 * sudoku.BLOCK + (0 < b < 2)) for b in range(3)))
        boxes = [" ".join(str(d) if d else "." for d in digits[r, b:b + sudoku.BLOCK])
                 for b in range(0, sudoku.SIDE, sudoku.BLOCK)]
        lines.append(" | ".join(boxes))
    return "\n".join(lines)


def format_maze(tokens: np.ndarray) -> str:
    """30 lines of the maze charset, the path as `o` (`?` for a PAD prediction): a maze file again."""
    chars = np.array(["?", *maze.CHARSET])[np.clip(tokens, 0, len(maze.CHARSET))]
    return "\n".join("".join(row) for row in chars.reshape(maze.GRID_SIZE, maze.GRID_SIZE))


def maze_path_connects(puzzle: np.ndarray, answer: np.ndarray) -> bool:
    """Whether the answer's path cells lead from the maze's start to its goal (4-neighbour steps)."""
    size = maze.GRID_SIZE
    start, goal = int(np.flatnonzero(puzzle == maze.START)[0]), int(np.flatnonzero(puzzle == maze.GOAL)[0])
    walkable = (answer == maze.PATH) | (np.arange(maze.SEQ_LEN) == start) | (np.arange(maze.SEQ_LEN) == goal)
    seen, queue = {start}, deque([start])
    while queue:
        cell = queue.popleft()
        r, c = divmod(cell, size)
        for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            neighbour = nr * size + nc
            if 0 <= nr < size and 0 <= nc < size and walkable[neighbour] and neighbour not in seen:
                seen.add(neighbour)
                queue.append(neighbour)
    return goal in seen


def is_valid_sudoku(puzzle: np.ndarray, answer: np.ndarray) -> bool:
    return bool(sudoku_valid_completions(torch.as_tensor(answer)[None, None], torch.as_tensor(puzzle)[None])[0, 0])


def verdict(task: str, puzzle: Puzzle, answer: Answer) -> bool:
    """Sudoku: a valid completion of the clues; Maze: a path from S to G."""
    if task == "sudoku":
        return is_valid_sudoku(puzzle.tokens, answer.tokens)
    return maze_path_connects(puzzle.tokens, answer.tokens)


def summary_line(task: str, puzzle: Puzzle, answer: Answer, candidates: int) -> str:
    parts = [f"steps: {answer.steps}", f"confidence: {answer.confidence:.3f}"]
    if candidates > 1:
        parts.append(f"votes: {answer.votes}/{candidates}")
    ok = verdict(task, puzzle, answer)
    if task == "sudoku":
        parts.append(f"valid: {'yes' if ok else 'no'} ({'a' if ok else 'not a'} valid completion of the clues)")
    else:
        parts.append(f"path: {'connects S to G' if ok else 'does not connect S to G'}")
    return "   ".join(parts)


def print_answers(task: str, puzzles: list[Puzzle], answers: list[Answer], candidates: int) -> None:
    fmt = format_sudoku if task == "sudoku" else format_maze
    for i, (puzzle, answer) in enumerate(zip(puzzles, answers)):
        print(f"\n== puzzle {i + 1}/{len(puzzles)} ({puzzle.source}) ==")
        print(fmt(answer.tokens))
        print(summary_line(task, puzzle, answer, candidates))


def picture_example(task: str, index: int, puzzle: Puzzle, answer: Answer, candidates: int) -> Example:
    """The puzzle and the answer, as visualize.py draws them (no solution: nothing is marked wrong)."""
    # Short: the PNG writes it along the panels' edge. The number is the printed `puzzle N/M`.
    name = f"#{index + 1} \u00b7 steps {answer.steps} \u00b7 confidence {answer.confidence:.3f}"
    if candidates > 1:
        name += f" \u00b7 votes {answer.votes}/{candidates}"
    if task == "sudoku":
        clues = sudoku_digits(puzzle.tokens)
        panel = sudoku_panel("answer", clues, sudoku_digits(answer.tokens))
        panel.verdict = verdict(task, puzzle, answer)  # a valid completion of the clues solves the puzzle
        return Example(name, [sudoku_panel("puzzle", clues, clues), panel], panel.verdict)
    grid = puzzle.tokens.reshape(maze.GRID_SIZE, maze.GRID_SIZE)
    # maze_panel paints the path cells of its `truth` grid: here the answer's (there is no truth).
    path = maze_panel("predicted path", grid, answer.tokens.reshape(maze.GRID_SIZE, maze.GRID_SIZE))
    return Example(name, [maze_panel("maze", grid), path])


PICTURE_LEGEND = {
    "sudoku": [(CLUE_BG, "clue"), (EMPTY_BG, "answered digit (blue)")],
    "maze": [(MAZE_COLOURS["wall"], "wall"), (MAZE_COLOURS["start"], "S start"), (MAZE_COLOURS["goal"], "G goal"),
             (MAZE_COLOURS["path"], "predicted path")],
}


def draw_answers(path: str, task: str, checkpoint: str, puzzles: list[Puzzle], answers: list[Answer],
                  candidates: int, note: str) -> None:
    examples = [picture_example(task, i, p, a, candidates) for i, (p, a) in enumerate(zip(puzzles, answers))]
    sheet = Sheet(f"{task} \u00b7 {checkpoint}", task, examples, PICTURE_LEGEND[task], note)
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
    checkpoint, plan = load_predict_plan(args)
    metadata = checkpoint_metadata(checkpoint, plan)
    task = task_of(metadata.vocab_size, metadata.seq_len)
    check_task(args, task, checkpoint, metadata)
    puzzles = read_puzzles(args, task)
    device = select_device(args.device)
    # A few puzzles: compiling would take longer than answering them.
    model = build_and_load(plan, checkpoint, metadata, DistContext(rank=0, world_size=1, local_rank=0, device=device),
                           compile_model=False)
    transforms = tta_transforms(metadata.vocab_size, metadata.seq_len, args.tta, plan.train_config.seed) \
        if args.tta else []
    note = f"halt_early={args.halt_early}, tta={args.tta}"
    print(f"Answering {len(puzzles)} {TASK_TITLE[task]} puzzle(s) with {quoted(checkpoint)} on {device}, {note}")
    answers = answer_all(model, puzzles, metadata, device, args, transforms, plan.global_batch_size)
    print_answers(task, puzzles, answers, len(transforms) + 1)
    if args.out:
        draw_answers(args.out, task, checkpoint, puzzles, answers, len(transforms) + 1, note)
    return answers


def main(argv: list[str] | None = None) -> None:
    run_key_value_command(argv, __doc__, PredictConfig, lambda argv: run(parse_args(argv)))


if __name__ == "__main__":
    main()
