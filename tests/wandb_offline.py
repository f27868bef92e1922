"""wandb in offline mode for tests: an environment that cannot reach the network or a login, and what an offline
run recorded, read back from its transaction log (`wandb/offline-run-*/run-<id>.wandb`)."""
import glob
import json
import os
import struct
import time

from wandb.proto import wandb_internal_pb2

# The transaction log is LevelDB's log format behind a 7-byte header: 32 KiB blocks of chunks, each with a header
# (crc32, length, type), a record split over blocks in FIRST/MIDDLE/LAST chunks. wandb has no public reader.
_FILE_HEADER, _FILE_IDENT, _FILE_MAGIC = struct.Struct("<4sHB"), b":W&B", 0xBEE1
_CHUNK_HEADER = struct.Struct("<IHB")
_BLOCK = 32768
_FULL, _LAST = 1, 4


def offline_wandb(monkeypatch, tmp_path) -> None:
    """wandb offline, its caches, settings and staging area under `tmp_path`, no credentials, quiet; overrides the
    WANDB_MODE=disabled that CI sets for the whole suite."""
    for name in ("WANDB_API_KEY", "WANDB_BASE_URL", "NETRC", "WANDB_DIR", "WANDB_RUN_ID", "WANDB_RESUME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name, folder in (("WANDB_CACHE_DIR", "cache"), ("WANDB_CONFIG_DIR", "config"), ("WANDB_DATA_DIR", "data")):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / folder))


def finished_run_records(run_dir: str, timeout_s: float = 60) -> list:
    """The records of the one offline wandb run under `run_dir`, once its `exit` record is on disk: wandb's service
    process writes the log on its own after `finish()` has returned."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = read_records(offline_run_log(run_dir))
        if any(record.WhichOneof("record_type") == "exit" for record in records):
            return records
        assert time.monotonic() < deadline, f"wandb wrote no exit record to its log in {run_dir} in {timeout_s} s"
        time.sleep(0.05)


def offline_run_log(run_dir: str) -> str:
    """The transaction log of the one offline wandb run under `run_dir`."""
    logs = glob.glob(os.path.join(run_dir, "wandb", "offline-run-*", "run-*.wandb"))
    assert len(logs) == 1, f"expected one offline wandb run in {run_dir}, found {logs}"
    return logs[0]


def read_records(path: str) -> list:
    """The protobuf records of a wandb transaction log, in order."""
    with open(path, "rb") as f:
        data = f.read()
    ident, magic, _version = _FILE_HEADER.unpack_from(data)
    assert (ident, magic) == (_FILE_IDENT, _FILE_MAGIC), f"{path} is not a wandb transaction log"
    records, chunks, pos = [], [], _FILE_HEADER.size
    while pos + _CHUNK_HEADER.size <= len(data):
        if _BLOCK - pos % _BLOCK < _CHUNK_HEADER.size:  # a block's tail too short for a header is padding
            pos += _BLOCK - pos % _BLOCK
            continue
        _crc, length, kind = _CHUNK_HEADER.unpack_from(data, pos)
        if kind == 0 and length == 0:  # zeros: the end of what was written
            break
        pos += _CHUNK_HEADER.size
        if pos + length > len(data):  # a chunk still being written
            break
        chunks.append(data[pos:pos + length])
        pos += length
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(chunks))
            records.append(record)
            chunks = []
    return records


def history_rows(records: list) -> list[dict]:
    """Each history record as `{key: value}` (nested keys joined by '/', values decoded from JSON)."""
    return [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            for record in records if record.WhichOneof("record_type") == "history"]


def artifacts(records: list) -> list:
    """The artifact records (name, type, aliases, metadata as JSON, manifest)."""
    return [record.artifact for record in records if record.WhichOneof("record_type") == "artifact"]
