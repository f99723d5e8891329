"""Atomic output: files and folders are written under a temporary name beside the target, then
renamed; a job holds a lock on its output folder while it writes."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from b2m.core.errors import B2MError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto `path` on success.

    On an exception the temporary file is removed, so no partial output is left. A folder that cannot
    be created or written is a B2MError naming it.
    The temporary name keeps the target's suffix (libraries such as soundfile and
    numpy choose the format from it). The file gets the permissions the umask allows
    (0644 under the usual 022), not mkstemp's 0600.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    except OSError as err:  # a read-only or missing location, a file where a folder belongs, a full disk
        raise B2MError(f"{path.parent}: cannot write {path.name} here ({err.strerror or err})") from None
    os.close(fd)
    # mkstemp makes the file 0600; a finished output is as readable as any file the user creates.
    os.chmod(tmp, 0o666 & ~current_umask())
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def current_umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_digest(path: str | os.PathLike) -> str:
    """The sha256 of a file's contents (hex): what an output recorded of a file, to tell it from a
    changed or swapped one later."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_text(path: str | os.PathLike, what: str) -> str:
    """An input text file's contents (UTF-8, with or without a BOM; else Latin-1, which spreadsheet
    exports often are). A missing file, a folder, an unreadable file is a B2MError naming `what`."""
    path = Path(path)
    if not path.exists():
        raise B2MError(f"{path}: {what} missing")
    if path.is_dir():
        raise B2MError(f"{path}: {what} expected, found a folder")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise B2MError(f"{path}: {what} unreadable ({err.strerror})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def read_json_object(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """An input JSON file that must hold an object (`what` says what it is: "model config"); a missing
    or unreadable file, a file that is not JSON, or JSON of another type is a B2MError naming it."""
    try:
        obj = json.loads(read_text(path, what))
    except json.JSONDecodeError as err:
        raise B2MError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
    if not isinstance(obj, dict):
        raise B2MError(f"{path}: a JSON {type(obj).__name__} where a {what} (a JSON object) belongs")
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Save one array as .npy, atomically (load it back with allow_pickle=False)."""
    with atomic_path(path) as tmp:
        np.save(tmp, array, allow_pickle=False)


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Save named arrays as .npz, atomically. String arrays must be fixed-width unicode."""
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)


@contextlib.contextmanager
def locked(folder: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on `folder` while a job writes it; a second job on the same folder gets a
    B2MError instead of mixing its files in.

    The lock is a file named by the folder's absolute path in a per-user folder of the system's
    temporary directory, so that taking it creates nothing beside or inside `folder` (which may not
    exist yet). It covers the jobs of one machine: flock does not reach across network file systems.
    """
    folder = Path(folder).absolute()
    locks = Path(tempfile.gettempdir()) / f"b2m-locks-{os.getuid()}"
    lock = locks / (hashlib.sha1(str(folder).encode()).hexdigest() + ".lock")
    try:
        locks.mkdir(mode=0o700, exist_ok=True)
        while True:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise B2MError(f"{folder}: another b2m job (pid {owner}) is writing this folder; wait for it "
                               f"to end or choose another out_dir") from None
            # The holder before us may have removed the file after we opened it: lock the file on disk.
            if lock.exists() and os.stat(lock).st_ino == os.fstat(fd).st_ino:
                break
            os.close(fd)
    except OSError as err:
        raise B2MError(f"{lock}: cannot take the lock of out_dir {folder} ({err.strerror})") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


def replace_folder(new: Path, target: Path) -> None:
    """Put the finished folder `new` at `target` (a sibling), replacing what was there in two renames."""
    old = target.parent / f".{target.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    if old.exists():
        shutil.rmtree(old)
