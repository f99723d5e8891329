"""Output folders: which folder a job may write, and what it may delete there.

A job deletes or replaces only what it wrote itself. So before a job writes, its `out_dir` must be
new, empty, or a previous output of the same job: a folder holding b2m's marker file `.b2m-job`
(`{"job": <job>}`), written when a job first takes the folder, and nothing but the entries that job
writes (`OUTPUTS`). A folder from before the marker existed counts as the job's if it holds the job's
signature file and nothing else. And `out_dir` may not be, contain or lie inside a folder the job
reads (the run, the database, the predictions), except a sub-folder of a training run that is none of
the run's own entries (`<run>/evaluation`, `<run>/retrieval`, the defaults).
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
from pathlib import Path

from b2m.core.errors import B2MError
from b2m.core.io import replace_folder, write_json
from b2m.core.runs import CONFIG, RUN_ENTRIES

MARKER = ".b2m-job"
# A temporary file that a killed atomic write left (`core.io.atomic_path`).
_TEMPORARY = ".*.tmp*"
# Job -> (the names it writes at the top of its out_dir, the signature of an output older than the marker).
OUTPUTS: dict[str, tuple[tuple[str, ...], str]] = {
    "train": (RUN_ENTRIES, CONFIG),
    "evaluate": (("metrics.json", "results.json", "summary.md", "*.png", "*.svg", "report", "encoding"), "metrics.json"),
    "generate": (("manifest.jsonl", ".manifest.part-*.jsonl", "selection_*.json", "sub-*"), "manifest.jsonl"),
    "retrieve": (("retrieval_*.json", "selection_*.json", "index", "sub-*"), "retrieval_*.json"),
}


def check_out_dir(out_dir: Path, job: str, inputs: dict[str, Path]) -> None:
    """A B2MError unless `job` may write into `out_dir` (module doc); `inputs` names the folders and files
    the job reads by their config key (`run`, `database`, ...)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise B2MError(f"{out_dir}: out_dir is a file, not a folder")
    if out_dir.is_dir() and not os.access(out_dir, os.W_OK | os.X_OK):
        raise B2MError(f"{out_dir}: out_dir is not writable")
    for key, path in inputs.items():
        _check_apart(out_dir, key, path)
    if out_dir.is_dir():
        check_owned(out_dir, job, "out_dir")


def check_owned(folder: Path, job: str, what: str) -> None:
    """A B2MError unless `folder` (an existing folder) is empty or a previous output of `job`."""
    names, signature = OUTPUTS[job]
    entries = sorted(p.name for p in folder.iterdir())
    if not entries:
        return
    if not _marked(folder, job) and not any(fnmatch.fnmatchcase(e, signature) for e in entries):
        found = _marked_job(folder)
        kind = f"a b2m {found} output" if found else f"files that are not a previous b2m {job} output"
        raise B2MError(f"{folder}: {what} holds {kind} (e.g. {entries[0]}); {job} replaces only its own "
                       f"output: choose a new or empty folder")
    foreign = [e for e in entries if e != MARKER and not any(fnmatch.fnmatchcase(e, n) for n in (*names, _TEMPORARY))]
    if foreign:
        raise B2MError(f"{folder / foreign[0]}: {what} holds a file that {job} did not write; {job} replaces only "
                       f"its own output: move it away or choose another folder")


def mark(folder: Path, job: str) -> None:
    """Mark `folder` (created if missing) as `job`'s output; a job calls this once its input is checked,
    before its first write."""
    if not _marked(folder, job):
        write_json(folder / MARKER, {"job": job})


def unmark(folder: Path) -> None:
    """Remove the marker (a job that failed on bad input leaves nothing behind)."""
    (folder / MARKER).unlink(missing_ok=True)


def remove_output(folder: Path, job: str) -> None:
    """Delete `folder` if it is `job`'s own output (a link is unlinked, never followed); else a B2MError."""
    if folder.is_symlink() or folder.is_file():
        folder.unlink()
    elif folder.is_dir():
        check_owned(folder, job, "work folder")
        shutil.rmtree(folder)


def replace_output(new: Path, target: Path, job: str) -> None:
    """Put the finished folder `new` at `target`, replacing a previous output of `job` there (checked,
    with what a killed replacement left beside it)."""
    remove_output(target.parent / f".{target.name}.old", job)
    if target.exists():
        check_owned(target, job, "out_dir")
    replace_folder(new, target)


def _marked_job(folder: Path) -> str | None:
    try:
        job = json.loads((folder / MARKER).read_text()).get("job")
    except (OSError, ValueError, AttributeError):
        return None
    return job if isinstance(job, str) else None


def _marked(folder: Path, job: str) -> bool:
    return _marked_job(folder) == job


def _check_apart(out_dir: Path, key: str, path: Path) -> None:
    """A B2MError if `out_dir` is, contains or lies inside the input `path` (config key `key`); a sub-folder
    of a training run outside the run's own entries is allowed."""
    if not path.exists():
        return  # the job itself says what is missing
    out, source = out_dir.resolve(), path.resolve()
    if out == source:
        raise B2MError(f"{out_dir}: out_dir is the {key} folder the job reads ({path}); choose another out_dir")
    if out in source.parents:
        raise B2MError(f"{out_dir}: out_dir contains the {key} the job reads ({path}); choose another out_dir")
    if source in out.parents:
        first = out.relative_to(source).parts[0]
        if not (source / CONFIG).is_file() or first in RUN_ENTRIES:
            raise B2MError(f"{out_dir}: out_dir lies inside the {key} the job reads ({path}); choose another "
                           f"out_dir")
