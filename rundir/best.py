"""The best checkpoint on disk: `step_best` (weights) and `best.json` (its step, metric, value) as one unit.

Two files cannot be replaced in one step, so the record carries the SHA-256 of the weights it goes with, and
the record they replace as `previous`. A new best is written as: weights to a temporary name, then best.json
(new record, previous one inside), then the weights renamed over step_best. A kill at any point leaves either
the old weights, which the old record (`previous`) matches, or the new ones, which the new record matches;
readers take the record whose checksum is that of the step_best on disk, so a step is never named over
another step's weights.
"""
import hashlib
import json
import os
from typing import Any, Callable

from rundir.layout import BEST_FILE, BEST_WEIGHTS, WEIGHTS_PATTERN
from utils.atomic import fsync_dir, read_json_if_present, temporary_path, write_atomically, write_synced
from utils.errors import CheckpointError

_CHUNK = 1 << 20


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_best(run_dir: str) -> dict | None:
    """`{"step", "metric", "value", "mode", "sha256"}` of the run's best evaluation, the record that goes with the
    step_best on disk (training/best.py writes them); None when the run has no best checkpoint."""
    record = read_json_if_present(os.path.join(run_dir, BEST_FILE))
    if record is None or "sha256" not in record:
        return record  # none, or written before records carried a checksum
    weights = os.path.join(run_dir, BEST_WEIGHTS)
    if not os.path.isfile(weights):
        return None  # killed before the first best's weights were renamed into place
    digest, previous = file_sha256(weights), record.get("previous")
    if record["sha256"] == digest:
        return {k: v for k, v in record.items() if k != "previous"}
    if previous is not None and previous.get("sha256", digest) == digest:
        return previous  # killed after best.json was written, before the new weights were renamed into place
    raise CheckpointError(f"{weights} is not the weights that {os.path.join(run_dir, BEST_FILE)} records (step "
                          f"{record['step']}): it was changed after the run wrote it. Evaluate a {WEIGHTS_PATTERN} "
                          f"file of the run instead, or put back the {BEST_WEIGHTS} it wrote.")


def commit_best(run_dir: str, record: dict, write_weights: Callable[[Any], None], previous: dict | None) -> dict:
    """Write a new best (`write_weights(f)` writes its weights) as one unit with its record; the record written.

    `previous` is the record of the step_best on disk now (None when there is none)."""
    weights = os.path.join(run_dir, BEST_WEIGHTS)
    tmp = temporary_path(weights)
    try:
        write_synced(tmp, write_weights)
        record = {**record, "sha256": file_sha256(tmp)}
        on_disk = {**record, "previous": previous} if previous is not None else record
        write_atomically(os.path.join(run_dir, BEST_FILE), lambda f: json.dump(on_disk, f, indent=1), mode="w")
        os.replace(tmp, weights)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    fsync_dir(run_dir)
    return record
