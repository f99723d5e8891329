"""Read the records of an offline wandb run (`run-<id>.wandb`): the LevelDB log format that wandb
writes, a 7-byte header then 32 KiB blocks of chunks (crc32 4 bytes, length 2, type 1: full, first,
middle, last), each record a `wandb.proto` Record."""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32768
HEADER = 7


def records(path: Path, timeout_s: float = 60.0) -> list:
    """The run's records once its exit record is written: wandb's service may still be writing the
    file for a moment after `finish()` returns (seen on a loaded CI machine), so read until complete."""
    import time

    from google.protobuf.message import DecodeError

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            out = _parse(path)
        except DecodeError:  # a record cut short by the write in progress
            out = []
        if any(r.WhichOneof("record_type") == "exit" for r in out) or time.monotonic() > deadline:
            return out
        time.sleep(0.2)


def _parse(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a wandb run file"
    pos, parts, out = HEADER, b"", []
    while pos + 7 <= len(data):
        room = BLOCK - pos % BLOCK
        if room < 7:
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:  # zero padding to the end of a block
            pos += room
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        parts = chunk if kind in (1, 2) else parts + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(parts)
            out.append(record)
    return out


def summary_and_config(run_dir: Path) -> tuple[dict, dict]:
    """The final summary and the config of the offline run under `<run_dir>/wandb/` (its parts, when it
    was resumed, merged in time order: `offline-run-<time>-<id>[-n]`)."""
    files = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert files, f"{run_dir}: no offline wandb run"
    summary, config = {}, {}
    for r in (r for f in files for r in records(f)):
        kind = r.WhichOneof("record_type")
        if kind == "summary":
            for u in r.summary.update:
                summary[u.key or "/".join(u.nested_key)] = json.loads(u.value_json)
        elif kind in ("config", "run"):  # the config given to wandb.init comes in the run record
            for u in (r.config.update if kind == "config" else r.run.config.update):
                config[u.key or ".".join(u.nested_key)] = json.loads(u.value_json)
    return summary, config
