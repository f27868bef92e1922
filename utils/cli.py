"""Command-line helpers shared by the entry points: parsers whose help shows every option's description
and default, key=value commands whose help is generated from their typed config, argparse integer types,
progress bars, exit on user errors."""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import textwrap
from typing import Any, Callable, Iterable, Mapping, NoReturn, TypeVar

from pydantic import BaseModel, ValidationError

from utils.errors import ConfigError, UserFacingError
from utils.interrupts import Interrupted, exit_interrupted, signals_deferred, signals_raise

T = TypeVar("T")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # where the entry points are
HELP_FLAGS = ("-h", "--help")
# The `device` key of every entry point: what `utils.device.select_device` accepts. Kept here, not beside it,
# because utils.device imports torch and the training config (and `pretrain.py --help`) does not.
DEVICE_HELP = ("where to run: auto (CUDA, the local rank's GPU under torchrun, else MPS, else CPU) | cpu | cuda | "
               "cuda:N | mps")
# The `num_threads` key of every entry point that has one: what `utils.cpu.choose_threads` does (same reason).
NUM_THREADS_HELP = ("CPU threads of each process (torch.set_num_threads); null = OMP_NUM_THREADS if set, else the "
                    "CPUs this process may use (affinity, cgroup quota) shared among the processes of this machine")


def int_at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: an integer >= `minimum`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def comma_list(text: str) -> list[str]:
    """The items of a comma-separated option value, stripped; empty items dropped ("a, b," -> ["a", "b"])."""
    return [item.strip() for item in text.split(",") if item.strip()]


def run_cli(main_fn: Callable[[], T]) -> T:
    """Run a command's body; an error the user can act on becomes one `error: ...` line and exit status 1, and
    SIGINT or SIGTERM one `interrupted by ...` line and status 130 or 143, after cleaning up (utils/interrupts.py)."""
    try:
        with signals_raise():
            return main_fn()
    except UserFacingError as e:
        exit_with_message(e)
    except Interrupted as e:
        exit_interrupted(e, os.environ.get("RANK", "0"))


def exit_with_message(err: BaseException) -> NoReturn:
    """Exit with status 1 after printing `error: <message>` once: by the first process of a torchrun job
    (RANK 0) or by a process of its own; the other ranks exit with the same status, silently, except for
    errors only that rank can see (`report_on_every_rank`, e.g. a collective that timed out there)."""
    rank = os.environ.get("RANK", "0")
    if rank == "0" or getattr(err, "report_on_every_rank", False):
        # The ranks share one stderr, where rank 0's progress bar may hold the line open: start a line of our own.
        sys.exit(f"{'' if rank == '0' else chr(10)}error: {err}")  # printed by the interpreter, exit status 1
    sys.exit(1)


def progress(iterable=None, **kwargs):
    """tqdm progress bar, refreshed at most once a second (cheap on millions of rows)."""
    from tqdm import tqdm
    with signals_deferred():  # a bar cut off in its constructor fails again in its __del__, at exit
        return tqdm(iterable, mininterval=1.0, **kwargs)


# ---------------------------------------------------------------------------------------------
# argparse commands: every option has a line of help, and its default is shown after it
# ---------------------------------------------------------------------------------------------
def shown_default(value: Any) -> str:
    """A default as one would type it on the command line."""
    if isinstance(value, (list, tuple)):
        return " ".join(str(item) for item in value)
    return str(value)


class DefaultsHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Appends `(default: X)` to an option's help unless the help says its default already; options
    without a value to show (None, False flags) explain their default in their help text."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        nothing_to_show = action.default is None or action.default is False or action.default == [] \
            or action.default is argparse.SUPPRESS  # `is`: a default of 0 is shown (0 == False)
        if not action.option_strings or "default" in text or nothing_to_show or text == argparse.SUPPRESS:
            return text
        return f"{text} (default: {shown_default(action.default).replace('%', '%%')})"


def new_parser(description: str | None, **kwargs) -> argparse.ArgumentParser:
    """The parser every argparse entry point starts from (descriptions kept as written, defaults shown)."""
    return argparse.ArgumentParser(description=description, formatter_class=DefaultsHelpFormatter, **kwargs)


def undescribed_options(parser: argparse.ArgumentParser) -> list[str]:
    """Options and positionals (of subcommands too) without a help text: what a `--help` test rejects."""
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                missing += [f"{name} {option}" for option in undescribed_options(sub)]
        elif not isinstance(action, argparse._HelpAction) and not action.help:
            missing.append("/".join(action.option_strings) or action.dest)
    return missing


# ---------------------------------------------------------------------------------------------
# key=value commands (Hydra style): the keys and their help come from one pydantic model
# ---------------------------------------------------------------------------------------------
def undescribed_fields(model: type[BaseModel]) -> list[str]:
    """Fields of a typed config without a description (their help line would be empty)."""
    return [name for name, field in model.model_fields.items() if not field.description]


def field_default(model: type[BaseModel], name: str) -> Any:
    field = model.model_fields[name]
    if field.is_required():
        return "required"
    return field.get_default(call_default_factory=True)


def shown_value(value: Any) -> str:
    """A value as written after `key=` (null, true/false, [a,b])."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(shown_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{key}: {shown_value(item)}" for key, item in value.items()) + "}"
    return str(value)


def keys_help(model: type[BaseModel], values: Mapping[str, Any] | None = None, prefix: str = "",
              skip: Iterable[str] = (), added: Iterable[str] = (), width: int = 100) -> str:
    """One entry per field of `model`: `prefix+key=DEFAULT` and its description, wrapped under it.

    `values` replaces the fields' defaults (e.g. the composed training config); keys in `added`
    are written `+key` (Hydra's way of adding a key its YAML does not have)."""
    skip, added = set(skip), set(added)
    lines = []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        value = values[name] if values is not None and name in values else field_default(model, name)
        plus = "+" if name in added else ""
        lines.append(f"  {plus}{prefix}{name}={shown_value(value)}")
        lines += textwrap.wrap(field.description or "", width=width, initial_indent=" " * 6, break_on_hyphens=False,
                               subsequent_indent=" " * 6)
    return "\n".join(lines)


def unknown_key_hint(command: str) -> str:
    """What an unknown key's error adds: where the command's keys are listed."""
    return f"misspelt? `python {command} --help` lists the keys"


def format_validation_error(err: ValidationError, *, unknown_hint: str, prefix: str = "") -> str:
    """One line per problem: `key.path: message`, naming the offending key as the user typed it."""
    lines = []
    for problem in err.errors():
        where = ".".join(str(part) for part in problem["loc"])
        key = f"{prefix}{where}" if where else prefix.rstrip(".") or "config"
        if problem["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key ({unknown_hint})")
        elif not where:  # a check across several keys: the message names them
            lines.append(f"  {problem['msg'].removeprefix('Value error, ')}")
        else:
            lines.append(f"  {key}: {problem['msg']} (got {problem.get('input')!r})")
    return "\n".join(lines)


def parse_key_values(argv: list[str], model: type[BaseModel], command: str, example: str,
                     verbatim: Iterable[str] = ()) -> BaseModel:
    """`key=value` arguments (values in YAML syntax: `[a,b]`, `true`, numbers; a leading `+` is allowed)
    checked against `model`; keys in `verbatim` (file names, puzzles) are taken as written, except `null`."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    bad = [arg for arg in argv if "=" not in arg]
    if bad:
        raise ConfigError(f"Arguments must be key=value, got {bad}. Example: python {command} {example}")
    verbatim = set(verbatim)
    texts, others = {}, []
    for arg in (arg.lstrip("+") for arg in argv):
        key, _, value = arg.partition("=")
        if key in verbatim:  # `null` still means the default, as the help shows it
            texts[key] = None if value == "null" else value
        else:
            others.append(arg)
    try:
        raw = OmegaConf.to_container(OmegaConf.from_dotlist(others), resolve=True)
    except OmegaConfBaseException as err:
        raise ConfigError(f"Cannot parse the arguments {others}: {err}") from None
    try:
        return model(**raw, **texts)
    except ValidationError as err:
        raise ConfigError(f"Invalid {command} arguments:\n"
                          + format_validation_error(err, unknown_hint=unknown_key_hint(command))) from None


def key_value_help(doc: str, model: type[BaseModel]) -> str:
    """A command's `--help`: its docstring, then every key with its default and description."""
    return f"{doc.rstrip()}\n\nKeys (key=value; defaults shown):\n{keys_help(model)}"


def run_key_value_command(argv: list[str] | None, doc: str, model: type[BaseModel],
                          body: Callable[[list[str]], Any]) -> None:
    """The frame of a key=value entry point: `--help` (anywhere) prints `key_value_help`, no arguments prints it to
    stderr with exit status 2, an error the user can act on is one `error:` line, and SIGINT or SIGTERM one line
    (as in `run_cli`)."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or any(arg in HELP_FLAGS for arg in argv):
        print(key_value_help(doc, model), file=sys.stdout if argv else sys.stderr)
        sys.exit(0 if argv else 2)
    try:
        with signals_raise():
            body(argv)
    except (UserFacingError, FileNotFoundError) as err:
        exit_with_message(err)
    except Interrupted as err:
        exit_interrupted(err, os.environ.get("RANK", "0"))


def quoted(path: str) -> str:
    """A path as it can be pasted into a shell command (published run names contain a space)."""
    return shlex.quote(str(path))


def command_line(script: str, **keys: Any) -> str:
    """`python <script> key=value ...` as it runs when pasted in the current directory: the repository's
    script by its path from here, each value quoted for the shell."""
    script_path = os.path.relpath(os.path.join(REPO_ROOT, script))
    return " ".join(["python", quoted(script_path), *(f"{key}={quoted(value)}" for key, value in keys.items())])
