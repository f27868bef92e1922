"""Run logging: a local metrics.jsonl that always works, mirrored to Weights & Biases."""
import json
import netrc
import os
import re
import uuid
import warnings
from typing import Any
from urllib.parse import urlparse

import wandb

from rundir.json_values import json_metrics, to_json_value
from rundir.layout import METRICS_FILE, WANDB_ID_FILE, weights_name
from utils.atomic import append_line, make_dirs, write_atomically, writing

WANDB_MODES = ("online", "offline", "disabled")
_DEFAULT_WANDB_HOST = "api.wandb.ai"
_ARTIFACT_NAME_MAX = 128  # wandb's limit


def _wandb_host() -> str:
    """Host whose credentials matter: a self-hosted server (WANDB_BASE_URL) or the public API."""
    base_url = os.environ.get("WANDB_BASE_URL")
    if not base_url:
        return _DEFAULT_WANDB_HOST
    return urlparse(base_url).hostname or _DEFAULT_WANDB_HOST


def _netrc_path() -> str:
    """The netrc file wandb would read: $NETRC if set, else ~/.netrc."""
    return os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")


def _netrc_has_host(path: str, host: str) -> bool:
    """True when `path` holds a `machine <host>` entry (a `default` entry does not count).

    A malformed file is reported as a warning and treated as "no credentials", so the run
    falls back to offline logging instead of failing before training starts.
    """
    if not os.path.isfile(path):
        return False
    try:
        return host in netrc.netrc(path).hosts
    except netrc.NetrcParseError as error:
        warnings.warn(f"Ignoring unreadable netrc file {path}: {error}; wandb will run offline", stacklevel=3)
        return False


def _has_wandb_credentials() -> bool:
    """Credentials that let wandb log in without prompting."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    return _netrc_has_host(_netrc_path(), _wandb_host())


def resolve_wandb_mode(requested: str | None = None) -> str:
    """Pick the wandb mode without ever prompting for a login.

    An explicit request (or, failing that, a non-empty WANDB_MODE) must be one of
    WANDB_MODES. With neither, "online" if credentials exist, else "offline" so the run
    still keeps a local record that `wandb sync` can upload later.
    """
    source = "requested"
    if requested is None and os.environ.get("WANDB_MODE"):
        requested, source = os.environ["WANDB_MODE"], "WANDB_MODE environment variable"
    if requested is None:
        return "online" if _has_wandb_credentials() else "offline"
    if requested not in WANDB_MODES:
        raise ValueError(f"Invalid wandb mode {requested!r} ({source}); valid modes: {', '.join(WANDB_MODES)}")
    return requested


def _wandb_settings() -> "wandb.Settings":
    """Settings that stop wandb sampling system stats (a background thread polling GPUs).

    The public `x_disable_stats` field exists from wandb 0.19; older versions only have a
    private spelling, so there we keep the defaults and say so rather than poke internals.
    """
    if "x_disable_stats" in getattr(wandb.Settings, "model_fields", {}):
        return wandb.Settings(x_disable_stats=True)
    warnings.warn(f"wandb {wandb.__version__} has no x_disable_stats setting; system stats stay on", stacklevel=3)
    return wandb.Settings()


def truncate_metrics(path: str, last_step: int) -> int:
    """Keep the lines of `path` up to step `last_step` (rewritten atomically); the number of lines dropped.

    A run resumed from an older state logs the later steps again: their earlier lines (and a line cut short
    by a crash) are superseded, so that the log holds each step once, as an uninterrupted run's does.
    """
    if not os.path.exists(path):
        return 0
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if line.endswith("\n") and isinstance(record, dict) and isinstance(record.get("step"), int) \
                and record["step"] <= last_step:
            kept.append(line)
    if len(kept) != len(lines):
        write_atomically(path, lambda f: f.writelines(kept), mode="w")
    return len(lines) - len(kept)


def wandb_run_id(run_dir: str, resuming: bool) -> str:
    """The wandb id of this run directory's run: kept in `wandb_id` when resuming, a new one otherwise."""
    path = os.path.join(run_dir, WANDB_ID_FILE)
    if resuming and os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            run_id = f.read().strip()
        if run_id:
            return run_id
    run_id = uuid.uuid4().hex[:16]
    write_atomically(path, lambda f: f.write(run_id + "\n"), mode="w")
    return run_id


def wandb_media(path: str) -> "wandb.Image | wandb.Html":
    """A picture file as wandb media: .png an image, .html an HTML panel."""
    extension = os.path.splitext(path)[1].lower()
    if extension == ".png":
        return wandb.Image(path)
    if extension == ".html":
        return wandb.Html(path)
    raise ValueError(f"Cannot log {path!r} to wandb as media: only .png and .html pictures are sent")


def artifact_name(run_name: str) -> str:
    """A wandb artifact name for a run: the run name with every character wandb refuses (a space, '/', ...)
    replaced by '-', at most 128 characters."""
    return (re.sub(r"[^A-Za-z0-9_.-]+", "-", run_name).strip("-") or "run")[:_ARTIFACT_NAME_MAX]


class RunLogger:
    """Metrics sink for the main rank: one JSON line per log call plus the wandb run.

    `resume_step`: the run continues after this step (a resumed run): lines of later steps in an existing
    metrics.jsonl are dropped first, and the wandb run of the directory (its id in `wandb_id`) is
    continued. -1: the run restarts from scratch in a directory an earlier attempt logged into.
    `group`, `tags`: the wandb run's group (e.g. its sweep) and tags.
    """

    def __init__(self, run_dir: str, project: str, run_name: str, config_dict: dict, wandb_mode: str | None,
                 resume_step: int | None = None, group: str | None = None, tags: list[str] | None = None):
        self.run_dir = run_dir
        self.wandb_mode = resolve_wandb_mode(wandb_mode)
        make_dirs(run_dir)
        self.metrics_path = os.path.join(run_dir, METRICS_FILE)
        if resume_step is not None:
            dropped = truncate_metrics(self.metrics_path, resume_step)
            if dropped:
                after = f"after step {resume_step}" if resume_step >= 0 else "(all of them)"
                print(f"{METRICS_FILE}: dropped {dropped} lines {after} that an earlier attempt wrote; "
                      "this run logs those steps again")
        # Append: a resumed run keeps the history it already wrote to the same directory. Unbuffered, so that
        # each line is written whole or (on a full disk) cut off again by append_line.
        with writing(self.metrics_path):
            self._metrics_file = open(self.metrics_path, "ab", buffering=0)
        resuming = resume_step is not None and resume_step >= 0
        run_id = wandb_run_id(run_dir, resuming) if self.wandb_mode != "disabled" else None
        # An absolute dir: wandb's service process (one per Python process) resolves a relative one from the working
        # directory it started in, not from this run's.
        self._run = wandb.init(project=project, name=run_name, config=config_dict, mode=self.wandb_mode,
                               group=group, tags=tags or None, dir=os.path.abspath(run_dir),
                               settings=_wandb_settings(), id=run_id, resume="allow" if run_id is not None else None)
        # Steps the resumed wandb run already has (the same values: a resume is exact) are not sent again.
        self._wandb_first_step = (getattr(self._run, "starting_step", 0) or 0) if resuming else 0

    def log(self, metrics: dict, step: int) -> None:
        """Write `{"step": step, **metrics}` as one flushed line and forward it to wandb."""
        if "step" in metrics:
            raise ValueError("Metric name 'step' is reserved for the step number")
        clean = {key: to_json_value(key, value) for key, value in metrics.items()}
        step = int(step)
        # One write per line so a crash or a `tail -f` never sees a partial history; NaN and inf as null (valid JSON).
        line = json.dumps({"step": step, **json_metrics(clean)[0]}, allow_nan=False) + "\n"
        append_line(self._metrics_file, self.metrics_path, line.encode())
        if step >= self._wandb_first_step:
            self._run.log(clean, step=step)

    def log_pictures(self, pictures: dict[str, str], step: int) -> None:
        """`{key: path}` as wandb media at `step`: a .png as an image, a .html as an HTML panel.

        Files, not numbers: metrics.jsonl keeps numbers only (the files stay in the run directory)."""
        step = int(step)
        if self.wandb_mode == "disabled" or not pictures or step < self._wandb_first_step:
            return
        self._run.log({key: wandb_media(path) for key, path in pictures.items()}, step=step)

    def log_weights(self, path: str, step: int) -> str | None:
        """The weights file `path` as a wandb artifact of type "model" named after the run (aliases "latest" and
        the weights' own name, the step in its metadata); its name, or None when wandb is disabled (nothing logged).

        wandb copies the file into its staging area first, so a later `wandb sync` of an offline run still
        uploads it after checkpoint_keep_last removed the file from the run directory."""
        if self.wandb_mode == "disabled":
            return None
        step, name = int(step), artifact_name(self._run.name)
        artifact = wandb.Artifact(name, type="model", metadata={"step": step, "file": os.path.basename(path)})
        artifact.add_file(path)
        self._run.log_artifact(artifact, aliases=["latest", weights_name(step)])
        return name

    def finish(self) -> None:
        """Close the metrics file and the wandb run; safe to call more than once."""
        if not self._metrics_file.closed:
            self._metrics_file.close()
        if self._run is not None:
            self._run.finish()
            self._run = None

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.finish()
