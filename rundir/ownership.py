"""A run directory belongs to its run (docs/running.md, "Reliability").

It is created by a run: a new run (no `resume`) starts only in a directory that is absent or empty, so it
never overwrites an earlier run's config, appends to its metrics.jsonl or prunes its checkpoints. A resume
into a directory without a training state (resume=auto starting afresh, resume=PATH into another directory)
starts only where everything present is something a run writes (`rundir.layout.foreign_entries`), e.g. a
run killed before its first save. Both refuse before the run writes anything, naming what is there.
"""
import os

from rundir.layout import LOCK_FILE, foreign_entries, list_train_states, shared_state_path
from utils.distributed import DistContext, broadcast_object
from utils.errors import ConfigError

MAX_NAMED = 5  # entries named in a refusal
_OURS_NOW = {LOCK_FILE, LOCK_FILE + ".takeover"}  # this run's own lock, taken just before the check


def _listed(names: list[str]) -> str:
    more = f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else ""
    return ", ".join(names[:MAX_NAMED]) + more


def has_saved_state(run_dir: str) -> bool:
    """Whether `run_dir` holds a training state a resume could start from (one with its shared file)."""
    return any(os.path.exists(shared_state_path(path)) for _, path in list_train_states(run_dir))


def refusal(run_dir: str, resume: str | None) -> str | None:
    """Why a run with this `resume` may not use `run_dir` (None: it may)."""
    if not os.path.isdir(run_dir):
        return None  # absent: the run creates it (and a path that is no directory fails where it is made)
    where = run_dir if not os.path.islink(run_dir) else f"{run_dir} (a link to {os.path.realpath(run_dir)})"
    if resume is None:
        present = sorted(set(os.listdir(run_dir)) - _OURS_NOW)
        if present:
            return (f"checkpoint_path {where} already holds {_listed(present)}: a new run starts in a new or empty "
                    "directory. Continue the run there with resume=auto, or give another +checkpoint_path=DIR.")
    elif not has_saved_state(run_dir):  # resume=auto starting afresh, or resume=PATH into another directory
        foreign = foreign_entries(run_dir)
        if foreign:
            found = "found no" if resume == "auto" else f"continues {resume} into a directory without a"
            return (f"resume={'auto' if resume == 'auto' else 'PATH'} {found} training state in checkpoint_path "
                    f"{where}, and it holds {_listed(foreign)}, which no run wrote: the run would mix with them. "
                    "Give another +checkpoint_path=DIR, or move them away.")
    return None


def check_run_dir(run_dir: str, resume: str | None, ctx: DistContext) -> None:
    """Rank 0 checks `run_dir` (holding its lock); every rank raises the refusal, with rank 0's message."""
    reason = refusal(run_dir, resume) if ctx.is_main else None
    reason = broadcast_object(reason, ctx, what="broadcast of the run directory check")
    if reason is not None:
        raise ConfigError(reason if ctx.is_main else f"rank {ctx.rank}: stopped because rank 0 refused {run_dir} "
                                                     "(see its message).")
