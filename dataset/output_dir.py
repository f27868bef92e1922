"""Publishing a build directory: one rule for every builder, the ARC assembler and the offline generators.

* **Ownership.** A tool replaces an existing output directory only if every entry in it is one that the
  tool writes (its `OutputLayout`). Anything else makes it refuse, with one line naming a few of the
  foreign entries: a user's `NOTES.md` or `my_runs/`, a symbolic link, a file inside a split that is
  not a dataset file, a directory where the tool writes a file. An empty directory may be replaced.
* **Atomicity.** The build goes into a temporary directory beside the output (same filesystem) and is
  renamed into place only when complete; the previous build is moved aside first and deleted after.
* **Temporaries.** Their names carry the owner's PID and host: `.NAME.tmp-PID-HOST-RANDOM` while
  building and `.NAME.old-PID-HOST-RANDOM` for the previous build being swapped out. Each build of
  `NAME` first removes those of `NAME` whose owner is gone (same host, PID no longer alive); a live
  build's, another host's and other outputs' temporaries are left alone.
* **Mode.** The published directory is mode 0755.
"""
from __future__ import annotations

import dataclasses
import os
import re
import secrets
import shutil
import socket
from contextlib import contextmanager
from typing import Iterator, Mapping, Optional

from utils.atomic import fsync_dir, make_dirs, restated, writing
from utils.errors import DatasetError, WriteError
from utils.interrupts import signals_deferred

OUTPUT_MODE = 0o755
MAX_NAMED = 5  # foreign entries named in a refusal
_MAX_BASE = 100  # characters of the output's name kept in a temporary's name (file names end at 255 bytes)
_OWNER = re.compile(r"(tmp|old)-(\d+)-([A-Za-z0-9._]+)-[0-9a-f]{8}")


class OutputDirError(DatasetError):
    """The output path holds something this tool did not write; nothing was changed."""


@dataclasses.dataclass(frozen=True)
class OutputLayout:
    """The entries a tool writes into its output directory.

    `files`: top-level file names; `dirs`: top-level directory name -> pattern that every file inside
    it must match (no subdirectories). Nothing else belongs to the tool.
    """

    files: frozenset[str]
    dirs: Mapping[str, re.Pattern] = dataclasses.field(default_factory=dict)

    def with_files(self, *names: str) -> "OutputLayout":
        return OutputLayout(self.files | frozenset(names), self.dirs)


# What every builder's --output-dir help says (the rule check_replaceable enforces).
REPLACES_ONLY_OWN = "an earlier output of this tool there is replaced; any other file there stops it"

def _entries(directory: str) -> list[os.DirEntry]:
    with os.scandir(directory) as it:
        return sorted(it, key=lambda e: e.name)


def _shown(entry: os.DirEntry, prefix: str = "") -> str:
    return prefix + entry.name + ("/" if entry.is_dir(follow_symlinks=False) else "")


def foreign_entries(directory: str, layout: OutputLayout) -> list[str]:
    """Relative paths in `directory` that `layout` does not produce (directories end in "/"), sorted."""
    foreign = []
    for entry in _entries(directory):
        pattern = layout.dirs.get(entry.name)
        if entry.is_symlink():
            foreign.append(entry.name)
        elif entry.name in layout.files and entry.is_file():
            continue
        elif pattern is not None and entry.is_dir():
            foreign += [_shown(sub, entry.name + "/") for sub in _entries(entry.path)
                        if sub.is_symlink() or not sub.is_file() or not pattern.fullmatch(sub.name)]
        else:
            foreign.append(_shown(entry))
    return foreign


def check_replaceable(output_dir: str, layout: OutputLayout) -> None:
    """Raise `OutputDirError` unless `output_dir` is absent or holds only entries of `layout`.

    Builders call it before reading their inputs, so a refusal comes at once; `atomic_output_dir` calls it again.
    """
    output_dir = os.path.realpath(output_dir)
    if not os.path.lexists(output_dir):
        return
    if not os.path.isdir(output_dir):
        raise OutputDirError(f"--output-dir {output_dir!r} exists and is not a directory; "
                             "choose another --output-dir, or remove it.")
    foreign = foreign_entries(output_dir, layout)
    if foreign:
        more = f" and {len(foreign) - MAX_NAMED} more" if len(foreign) > MAX_NAMED else ""
        raise OutputDirError(
            f"--output-dir {output_dir!r} holds {foreign[:MAX_NAMED]}{more}, which this tool does not write; "
            "refusing to replace it (that would delete them). Choose another --output-dir, or remove them first."
        )


# ----------------------------------------------------------------------------------------------
# Temporaries beside the output


def this_host() -> str:
    """This machine's name as it appears in temporaries' names (no "-", at most 64 characters)."""
    return (re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "localhost")[:64]


def _base(output_dir: str) -> str:
    return os.path.basename(os.path.abspath(output_dir))[:_MAX_BASE]


def temporary_name(output_dir: str, pid: Optional[int] = None, host: Optional[str] = None, kind: str = "tmp") -> str:
    """A fresh name `.NAME.<kind>-PID-HOST-RANDOM` for a temporary beside `output_dir` (kind "tmp" or "old")."""
    pid = os.getpid() if pid is None else pid
    return f".{_base(output_dir)}.{kind}-{pid}-{host or this_host()}-{secrets.token_hex(4)}"


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine (True when that cannot be told)."""
    if os.name != "posix" or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OverflowError:  # beyond pid_t: no such process
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def remove_stale_temporaries(output_dir: str) -> list[str]:
    """Delete the temporaries of `output_dir` left by builds that died (same host, PID gone); return their names."""
    parent = os.path.dirname(os.path.abspath(output_dir))
    prefix = f".{_base(output_dir)}."
    if not os.path.isdir(parent):
        return []
    removed = []
    for name in sorted(os.listdir(parent)):
        owner = _OWNER.fullmatch(name[len(prefix):]) if name.startswith(prefix) else None
        if owner and owner.group(3) == this_host() and not pid_alive(int(owner.group(2))):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
            removed.append(name)
    if removed:
        print(f"Removed {len(removed)} temporary director{'y' if len(removed) == 1 else 'ies'} of interrupted "
              f"builds beside {output_dir}: {removed[:MAX_NAMED]}")
    return removed


@contextmanager
def temporary_dir_beside(output_dir: str) -> Iterator[str]:
    """A fresh directory (mode 0755) beside `output_dir`, after removing stale ones of dead builds.

    It is removed when the block ends, unless the block has moved it away (renamed it into place).
    """
    parent = os.path.dirname(os.path.abspath(output_dir))
    make_dirs(parent)
    remove_stale_temporaries(output_dir)
    tmp = os.path.join(parent, temporary_name(output_dir))
    try:
        with writing(output_dir, is_dir=True):  # e.g. a read-only file system: one line naming the output
            os.mkdir(tmp, OUTPUT_MODE)  # inside the try: a signal just after it still removes it (the name is fresh)
        os.chmod(tmp, OUTPUT_MODE)  # mkdir's mode is reduced by the umask
        yield tmp
    except WriteError as err:  # name the output too: the path in the message was inside the removed temporary
        if not os.path.lexists(tmp):  # the temporary itself could not be made: the message names the output already
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # best effort: the error below is what the user must see
        raise restated(err, f"The partial build beside {output_dir} was removed and {output_dir} is unchanged",
                       "free some space and run again") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_output_dir(output_dir: str, layout: OutputLayout) -> Iterator[str]:
    """Yield a fresh temp dir beside `output_dir`; on success it replaces `output_dir`, on error it is removed.

    An existing `output_dir` is replaced only if it holds nothing but entries of `layout` (checked before
    the build and again just before the swap), so a mistyped path never deletes anybody's files. A
    symbolic link to a directory is followed: the directory it points to is replaced.
    """
    output_dir = os.path.realpath(output_dir)
    check_replaceable(output_dir, layout)
    with temporary_dir_beside(output_dir) as tmp:
        yield tmp
        check_replaceable(output_dir, layout)  # files may have appeared during a long build
        install_dir(tmp, output_dir)


def install_dir(new_dir: str, output_dir: str) -> None:
    """Rename `new_dir` to `output_dir` (mode 0755), moving an old build aside first and deleting it afterwards."""
    parent = os.path.dirname(os.path.abspath(output_dir))
    old = None
    with signals_deferred(), writing(output_dir, is_dir=True):
        if os.path.lexists(output_dir):
            old = os.path.join(parent, temporary_name(output_dir, kind="old"))
            os.replace(output_dir, old)
        os.chmod(new_dir, OUTPUT_MODE)
        os.replace(new_dir, output_dir)
        fsync_dir(parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
