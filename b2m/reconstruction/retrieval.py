"""Retrieval: the nearest music in a database of audio files to a predicted embedding.

An index folder holds one embedding per audio file in an audio space:

```
<index>/index.json              the space (name, config, shape) and the audio root
<index>/parts/000000.npy        float32 [n, L * D], one row per embedded file
<index>/parts/000000.jsonl      one line per file of the chunk: {"path", "size", "mtime_ns"} (+ "error")
<index>/parts/2of8-000000.*     a chunk of shard 2 of 8 (`Shard`), the same two files
<index>/errors.jsonl            every file that could not be embedded (rewritten after each build)
```

Files are embedded in chunks; a chunk is complete once its `.jsonl` exists (written
after its `.npy`), so a killed build resumes without redoing finished files, and
running the build again on a grown folder embeds only the new files. Worker processes
(`workers`) each decode and embed a chunk at a time (every space embeds on the CPU: the work
spreads evenly over the cores whether decoding or embedding dominates); this one writes them.
A build of shard i of n embeds only the files whose path hashes to i, so n processes or
cluster jobs can build one index folder together; whatever set of chunks holds the files,
the loaded index is the same (rows in path order), so a last unsharded build (which embeds
anything the shards missed) turns them into the index a single build makes. A chunk holding a file that
was since deleted, or replaced (another size or modification time), is dropped and its remaining
files embedded again: the index never describes audio the database no longer holds. Queries are
cosine top-k over the flattened `[L * D]` vectors, batched in torch (CUDA when present).

Exact top-k below the cost of the exact product: with `precision="bf16"` a first pass scores every
database row in bfloat16 (inputs rounded, fp32 accumulation), whose error on unit vectors is bounded
by `first_pass_error(F)` = eps. The true top-k all score at least the first pass's k-th best minus
2 eps there (each true score is at least the exact k-th best, itself at least the first pass's k-th
best minus eps), so the first pass's top candidates, re-scored exactly in fp32, hold the exact top-k
whenever the last candidate scores below that line; a query where it does not is retried with more
candidates, then searched exactly.
The results are the exact search's, by construction. `precision="auto"` times both products once
per device and width and keeps bf16 only where it is clearly faster (`first_pass_precision`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from b2m.core.clips import sanitise
from b2m.data.stimuli import load_audio_file
from b2m.core.errors import B2MError
from b2m.core.io import atomic_path, file_digest, locked, save_npy, write_json, write_text
from b2m.core.log import progress
from b2m.core.runs import SubjectPredictions
from b2m.core.timing import fastest
from b2m.reconstruction import Manifest, inside
from b2m.targets.base import EmbeddingSpace

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")
INDEX_FILE = "index.json"
PARTS = "parts"
ERRORS_FILE = "errors.jsonl"
# Cap on one block of query-by-database similarities (float32 entries, 256 MiB).
_BLOCK_ENTRIES = 2 ** 26
PRECISIONS = ("auto", "fp32", "bf16")
_BF16_ROUNDOFF = 2.0 ** -8  # bfloat16 keeps 8 significant bits, rounded to nearest
# Candidates the first pass keeps per query, at least; only those that can still be in the top-k are
# re-scored (about 60 of 100,000 random 768-wide vectors).
MIN_CANDIDATES = 128
# bf16 is used only when its product takes at most this share of the fp32 product's time: the exact
# re-scoring of the candidates and the top-k must fit in what remains.
_BF16_WORTH = 0.6
_PROBED: dict[tuple[str, int, int], str] = {}


def first_pass_error(dim: int, magnitude: float | torch.Tensor = 1.0) -> float | torch.Tensor:
    """A bound on |bf16 - exact| cosine similarity of two unit vectors of `dim` values whose bf16
    similarity is at most `magnitude` in absolute value: each product of rounded inputs is off by at
    most (2u + u^2) of |q_i u_i| (whose sum is at most 1), the fp32 sum of `dim` terms by at most
    dim * 2^-24, and rounding the result to bf16 by u of its size (u = 2^-8)."""
    u = _BF16_ROUNDOFF
    return 2 * u + u * u + dim * 2.0 ** -24 + u * magnitude / (1 - u)


def first_pass_precision(unit: torch.Tensor) -> str:
    """`"bf16"` if a bfloat16 product of 64 queries with (a sample of) `unit` `[M, F]` takes at most
    `_BF16_WORTH` of the float32 product's time on this device beyond the spread of the timings
    (`b2m.core.timing.fastest`, fp32 the incumbent) and stays within `first_pass_error` of it, else
    `"fp32"`; measured once per device, width and thread count, never guessed. Timings that look
    disturbed give fp32 for this index and are measured again for the next."""
    key = (unit.device.type, unit.shape[1], torch.get_num_threads())
    if key not in _PROBED:
        sample = unit[: min(len(unit), 16384)]
        q = sample[:64].clone()
        products: dict[str, torch.Tensor] = {}

        def product(name: str, dtype: torch.dtype) -> Callable[[], None]:
            a, b = q.to(dtype), sample.to(dtype)

            def run() -> None:
                products[name] = (a @ b.T).float()
                products[name].sum().item()

            run()  # warms the kernel up
            return run

        measured = fastest({"fp32": product("fp32", torch.float32), "bf16": product("bf16", torch.bfloat16)},
                           needs=_BF16_WORTH)
        # The exactness argument needs the error bound to hold on this machine's kernels (fp32 accumulation).
        within = float((products["bf16"] - products["fp32"]).abs().max()) <= first_pass_error(unit.shape[1])
        if measured.disturbed:
            return "fp32"
        _PROBED[key] = measured.name if within else "fp32"
    return _PROBED[key]


def list_audio(root: str | Path) -> list[Path]:
    """Audio files under `root`, recursively, sorted (wav, flac, mp3, ogg; any case), hidden ones aside."""
    root = Path(root)
    if not root.is_dir():
        raise B2MError(f"{root}: audio folder not found")
    # Hidden files and folders (a temporary file a killed copy left, .git) are not part of the database.
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def track_key(name: str) -> str:
    """The track name of a path or name: its file name without an audio suffix (`blues.00012`)."""
    base = os.path.basename(name)
    stem, suffix = os.path.splitext(base)
    return stem if suffix.lower() in AUDIO_SUFFIXES else base


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of an index's `.jsonl`; a damaged one is a B2MError naming it."""
    try:
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise B2MError(f"{path}: unreadable index part ({err}); delete it to redo that chunk") from None
    if not all(isinstance(r, dict) and isinstance(r.get("path"), str) for r in records):
        raise B2MError(f"{path}: an index part holds a record without a path; delete it to redo that chunk")
    return records


def _read_meta(path: Path) -> dict[str, Any]:
    """An index's `index.json`; a damaged one is a B2MError naming it."""
    try:
        meta = json.loads(path.read_text())
        if not isinstance(meta, dict) or not isinstance(meta.get("audio_root"), str):
            raise ValueError("no audio_root")
        int(np.prod(meta["shape"]))
        return meta
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise B2MError(f"{path}: not a retrieval index description ({err}); use another index folder") from None


_PART = re.compile(r"(\d+of\d+-)?(\d+)")


def _complete_parts(index_dir: Path) -> list[Path]:
    """The `.jsonl` of each complete chunk, in order (`000000.jsonl`, `2of8-000000.jsonl`, ...; a temporary
    file a killed write left, `.000003.*.tmp.jsonl`, is not one)."""
    return sorted(p for p in (index_dir / PARTS).glob("*.jsonl") if _PART.fullmatch(p.stem))


def _index_meta(space: EmbeddingSpace, audio_dir: Path) -> dict[str, Any]:
    return {"space": space.name, "config": space.config, "cache_key": space.cache_key(),
            "shape": list(space.shape), "audio_root": str(audio_dir.resolve())}


@dataclass(frozen=True)
class Shard:
    """Shard `number` of `count` of a database: the files whose path (relative to the audio root) hashes
    to `number` modulo `count`, a split that does not move when files are added. `Shard()` is everything."""

    number: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.number < self.count:
            raise B2MError(f"retrieval: shard {self.number} of {self.count} does not exist; shards are 0 to "
                           f"{self.count - 1}")

    def holds(self, path: str) -> bool:
        if self.count == 1:  # the whole database: no file is hashed
            return True
        return int.from_bytes(hashlib.sha256(path.encode()).digest()[:8], "little") % self.count == self.number

    @property
    def prefix(self) -> str:
        """What names this shard's chunks apart from other shards' (none for the whole database)."""
        return "" if self.count == 1 else f"{self.number}of{self.count}-"


def build_index(audio_dir: str | Path, index_dir: str | Path, space: EmbeddingSpace, chunk_size: int = 16,
                workers: int = 0, shard: Shard = Shard()) -> dict[str, Any]:
    """Embed every audio file under `audio_dir` (of `shard`) into `index_dir`, resuming where a previous
    build stopped.

    `workers` processes decode and embed (0: this process does); `chunk_size` files are embedded in
    one batch. Returns a summary: `{"files": embedded in total (every shard), "new": embedded now,
    "errors": [{"path", "error"}]}`. Unreadable files are recorded in `errors.jsonl` and skipped
    (delete the chunk's `parts/*.jsonl` to redo that chunk). An index built with another space or
    audio folder is refused. Two builds of one shard at a time on one machine are refused (a
    B2MError); across machines, run each shard once.
    """
    audio_dir, index_dir = Path(audio_dir), Path(index_dir)
    if space.modality != "audio":
        raise B2MError(f"retrieval: space {space.name!r} embeds {space.modality}, not audio")
    meta = _index_meta(space, audio_dir)
    meta_path = index_dir / INDEX_FILE
    if meta_path.exists():
        old = _read_meta(meta_path)
        if (old.get("cache_key"), old["audio_root"]) != (meta["cache_key"], meta["audio_root"]):
            raise B2MError(f"{meta_path}: index was built with space {old.get('cache_key')} over {old['audio_root']}, "
                           f"not {meta['cache_key']} over {meta['audio_root']}; use another index folder")
    with locked(index_dir / PARTS / (shard.prefix or "all")):
        if not meta_path.exists():
            write_json(meta_path, meta)
        parts = _fresh_parts(audio_dir, _complete_parts(index_dir))  # {part's .jsonl: its entries}
        done = {entry["path"] for entries in parts.values() for entry in entries}
        files = [p for p in list_audio(audio_dir) if (rel := p.relative_to(audio_dir).as_posix()) not in done
                 and shard.holds(rel)]
        new = 0
        names = [_PART.fullmatch(p.stem) for p in parts]
        number = 1 + max((int(m[2]) for m in names if (m[1] or "") == shard.prefix), default=-1)
        # Chunks are written as they finish, in any order: the index's rows are in path order however
        # its chunks split the files (`RetrievalIndex.load`), and no worker waits for a slower one.
        chunks = DataLoader(_EmbeddedChunks(files, audio_dir, space, chunk_size), batch_size=None,
                            collate_fn=_as_is, num_workers=workers, in_order=False)
        for entries, emb in progress(chunks, f"index {space.name}", unit="chunks") if files else ():
            # The .npy first: the .jsonl is what marks the chunk complete.
            name = f"{shard.prefix}{number:06d}"
            number += 1
            save_npy(index_dir / PARTS / f"{name}.npy", emb)
            write_text(index_dir / PARTS / f"{name}.jsonl", "".join(json.dumps(e) + "\n" for e in entries))
            parts[index_dir / PARTS / f"{name}.jsonl"] = entries
            new += len(emb)

    entries = [e for part_entries in parts.values() for e in part_entries]
    errors = sorted((e for e in entries if "error" in e), key=lambda e: e["path"])
    write_text(index_dir / ERRORS_FILE, "".join(json.dumps(e) + "\n" for e in errors))
    for e in errors:
        tqdm.write(f"retrieval: skipped {e['path']}: {e['error']}", file=sys.stderr)
    return {"files": len(entries) - len(errors), "new": new, "errors": errors}


def _file_state(path: Path) -> dict[str, int] | None:
    """What tells a database file from its replacement: its size and modification time (ns); None if gone."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _fresh_parts(audio_dir: Path, parts: list[Path]) -> dict[Path, list[dict[str, Any]]]:
    """The entries of each complete chunk of `parts` whose files are all still in the database as they were
    embedded; the other chunks are deleted (their `.jsonl` first: it marks a chunk complete), to be
    embedded again (by the build of the shard that holds each file)."""
    kept = {}
    for part in parts:
        if not part.exists():  # another shard's build found it stale and deleted it
            continue
        entries = _read_jsonl(part)
        if all(_file_state(audio_dir / _entry_path(part, e)) == {k: e.get(k) for k in ("size", "mtime_ns")}
               for e in entries):
            kept[part] = entries
        else:
            part.unlink(missing_ok=True)
            part.with_suffix(".npy").unlink(missing_ok=True)
    return kept


class _EmbeddedChunks(Dataset):
    """Item i: chunk i of `files` decoded and embedded in `space`, `(entries, rows)`: every file's index
    entry (with the reason it could not be embedded, if so) and `[n_ok, L * D]` float32 rows. In worker
    processes both steps run there: every space embeds on the CPU, which the workers then share."""

    def __init__(self, files: Sequence[Path], audio_dir: Path, space: EmbeddingSpace, chunk_size: int) -> None:
        self.files, self.audio_dir, self.space, self.chunk_size = list(files), audio_dir, space, chunk_size

    def __len__(self) -> int:
        return -(-len(self.files) // self.chunk_size)

    def __getitem__(self, i: int) -> tuple[list[dict[str, Any]], np.ndarray]:
        entries: list[dict[str, Any]] = []
        waves: dict[int, np.ndarray] = {}
        for n, path in enumerate(self.files[i * self.chunk_size:(i + 1) * self.chunk_size]):
            entries.append({"path": path.relative_to(self.audio_dir).as_posix(), **(_file_state(path) or {})})
            try:
                waves[n] = load_audio_file(path, self.space.sample_rate)
            except (B2MError, OSError, ValueError, MemoryError) as err:  # a bad file costs only itself
                entries[n]["error"] = str(err)
        return entries, _embed(self.space, waves, entries)


def _as_is(chunk: Any) -> Any:
    """The DataLoader's collate function: a chunk stays as it is (module level: workers pickle it)."""
    return chunk


def _embed(space: EmbeddingSpace, waves: dict[int, np.ndarray], entries: list[dict[str, Any]]) -> np.ndarray:
    """`[n_ok, L * D]` float32 rows of `waves` (by position in the chunk), in order; a wave the space
    refuses or embeds to non-finite values gets its reason in `entries` instead."""
    try:
        rows = dict(zip(waves, space.embed_batch(list(waves.values()))))
    except B2MError:
        # One bad file must not sink the chunk: embed one at a time to find it.
        rows = {}
        for i, wave in waves.items():
            try:
                rows[i] = space.embed_batch([wave])[0]
            except B2MError as err:
                entries[i]["error"] = str(err)
    for i in [i for i, row in rows.items() if not np.isfinite(row).all()]:
        entries[i]["error"] = f"{space.name} embedding holds NaN or infinite values"
        del rows[i]
    dim = int(np.prod(space.shape))
    emb = np.stack([rows[i].reshape(-1) for i in sorted(rows)]) if rows else np.zeros((0, dim))
    return emb.astype(np.float32)


def _entry_path(part: Path, entry: Any) -> str:
    """An index entry's path relative to the audio root, as `build_index` writes it; one that could leave
    the root (absolute, `..`, hidden) is a B2MError: an index folder can come from someone else."""
    path = entry.get("path") if isinstance(entry, dict) else None
    parts = path.split("/") if isinstance(path, str) else []
    if not parts or path.startswith("/") or "\\" in path or any(p in ("", ".", "..") or p.startswith(".")
                                                                for p in parts):
        raise B2MError(f"{part}: index entry {path!r} is not a path inside the audio folder; the index is "
                       f"damaged or foreign, rebuild it")
    return path


class RetrievalIndex:
    """Database embeddings `[M, F]` (F = L * D) and their audio paths, ready for cosine top-k.

    `device` defaults to CUDA when present. The unit-normalised database is kept on it, and with
    `precision` `"bf16"` (or `"auto"` where the probe finds bf16 faster) a bfloat16 copy for the first
    pass (see the module doc); `"fp32"` searches with the exact product alone. Results are the same.
    """

    def __init__(self, embeddings: np.ndarray, paths: Sequence[str], device: str | None = None,
                 meta: dict[str, Any] | None = None, precision: str = "auto") -> None:
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or len(embeddings) != len(paths):
            raise ValueError(f"need embeddings [M, F] and M paths, got {embeddings.shape} and {len(paths)}")
        if precision not in PRECISIONS:
            raise B2MError(f"retrieval: precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.paths = [str(p) for p in paths]
        self.meta = meta or {}
        self.unit = F.normalize(torch.from_numpy(embeddings).to(self.device), dim=1)
        # A first pass only pays where the database is much larger than its candidate sets.
        if precision == "auto":
            precision = first_pass_precision(self.unit) if len(self) > 16 * MIN_CANDIDATES else "fp32"
        self.precision = precision
        self.low = self.unit.to(torch.bfloat16) if precision == "bf16" else None

    @functools.cached_property
    def _by_track(self) -> dict[str, list[int]]:
        """Database rows per track name, for exclusions (built on first use)."""
        rows: dict[str, list[int]] = {}
        for i, p in enumerate(self.paths):
            rows.setdefault(track_key(p), []).append(i)
        return rows

    @classmethod
    def load(cls, index_dir: str | Path, device: str | None = None, precision: str = "auto") -> "RetrievalIndex":
        """Load an index folder written by `build_index`."""
        index_dir = Path(index_dir)
        meta_path = index_dir / INDEX_FILE
        if not meta_path.is_file():
            raise B2MError(f"{index_dir}: not a retrieval index (no {INDEX_FILE}); build it first")
        meta = _read_meta(meta_path)
        root = Path(meta["audio_root"])
        dim = int(np.prod(meta["shape"]))
        chunks, paths = [np.zeros((0, dim), np.float32)], []
        for part in _complete_parts(index_dir):
            try:
                chunks.append(np.load(part.with_suffix(".npy"), allow_pickle=False))
            except (OSError, ValueError, EOFError) as err:
                raise B2MError(f"{part.with_suffix('.npy')}: unreadable index part ({err}); delete "
                               f"{part.name} to redo that chunk") from None
            paths.extend(_entry_path(part, e) for e in _read_jsonl(part) if "error" not in e)
        embeddings = np.concatenate(chunks)
        if len(paths) != len(embeddings) or embeddings.shape[1] != dim:
            raise B2MError(f"{index_dir}: {len(paths)} files but embeddings {embeddings.shape}; "
                           f"the index is damaged, rebuild it")
        if not paths:
            raise B2MError(f"{index_dir}: the index holds no embedded files")
        # Rows in path order, each file once: however shards and resumed builds split the files into
        # chunks, the index is the same.
        first = dict(zip(reversed(paths), range(len(paths) - 1, -1, -1)))  # path -> its first row
        rows = [first[path] for path in sorted(first, key=lambda path: path.split("/"))]  # as list_audio sorts
        return cls(embeddings[rows], [str(root / paths[i]) for i in rows], device=device, meta=meta,
                   precision=precision)

    def __len__(self) -> int:
        return len(self.paths)

    @torch.no_grad()
    def query(self, emb: np.ndarray | torch.Tensor, k: int, exclude: Sequence[str] | None = None
              ) -> tuple[np.ndarray, np.ndarray, list[list[str]]]:
        """Cosine top-k of each query: `emb` `[Q, L, D]` or `[Q, F]`.

        `exclude[q]` (a track name or a path) removes every database file of that
        track (same file name without suffix) from query q's results: pass the
        stimulus to keep it from retrieving itself. Returns `indices` int64 `[Q, k]`,
        `scores` float32 `[Q, k]` (best first) and the paths `[Q][k]`.
        """
        q = torch.as_tensor(np.asarray(emb, dtype=np.float32) if not torch.is_tensor(emb) else emb)
        q = q.reshape(len(q), -1).float()
        if q.shape[1] != self.unit.shape[1]:
            raise B2MError(f"retrieval: query vectors have {q.shape[1]} values, the index {self.unit.shape[1]}")
        if not 1 <= k <= len(self):
            raise B2MError(f"retrieval: k={k} must be between 1 and the database size {len(self)}")
        if exclude is not None and len(exclude) != len(q):
            raise ValueError(f"exclude has {len(exclude)} entries for {len(q)} queries")
        q = F.normalize(q.to(self.device), dim=1)
        step = max(1, _BLOCK_ENTRIES // len(self))
        indices, scores = [], []
        for lo in range(0, len(q), step):
            block = exclude[lo:lo + step] if exclude is not None else None
            top_i, top_v = (self._exact(q[lo:lo + step], block, k) if self.low is None
                            else self._two_pass(q[lo:lo + step], block, k))
            indices.append(top_i.cpu())
            scores.append(top_v.cpu())
        idx, top = torch.cat(indices).numpy(), torch.cat(scores).numpy()
        if not np.isfinite(top).all():  # excluded rows (-inf) filled the top-k
            q_bad = int(np.nonzero(~np.isfinite(top).all(axis=1))[0][0])
            left = len(self) - len(self._by_track.get(track_key(exclude[q_bad]), [])) if exclude is not None else 0
            raise B2MError(f"retrieval: k={k} is more than the {left} database files left for query {q_bad} once "
                           f"its stimulus track is excluded; lower k")
        return idx, top, [[self.paths[j] for j in row] for row in idx]

    def _mask(self, sims: torch.Tensor, exclude: Sequence[str] | None) -> torch.Tensor:
        """`sims` `[B, M]` with every row of each query's excluded track at -inf (in place)."""
        for row, name in enumerate(exclude or ()):
            sims[row, self._by_track.get(track_key(name), [])] = -torch.inf
        return sims

    def _exact(self, q: torch.Tensor, exclude: Sequence[str] | None, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k `(indices, scores)` `[B, k]` of unit queries `q` `[B, F]` by the fp32 product."""
        top = torch.topk(self._mask(q @ self.unit.T, exclude), k, dim=1)
        return top.indices, top.values

    def _two_pass(self, q: torch.Tensor, exclude: Sequence[str] | None, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The exact top-k through the bf16 first pass and an fp32 re-scoring of its candidates: queries
        whose candidates cannot prove their top-k are retried with 8 times as many, then searched exactly."""
        approx = self._mask(q.to(torch.bfloat16) @ self.low.T, exclude)  # [B, M] bf16
        indices = torch.empty((len(q), k), dtype=torch.long, device=q.device)
        scores = torch.empty((len(q), k), dtype=torch.float32, device=q.device)
        todo = torch.arange(len(q), device=q.device)
        n = min(len(self), max(4 * k, MIN_CANDIDATES))
        while len(todo) and n <= max(len(self) // 8, MIN_CANDIDATES):
            every = len(todo) == len(q)  # then no copy of the [B, M] first pass
            found, best, proven = self._rescore(q if every else q[todo], approx if every else approx[todo], n, k)
            indices[todo[proven]], scores[todo[proven]] = found[proven], best[proven]
            todo, n = todo[~proven], min(len(self), 8 * n)
        if len(todo):
            redo = [exclude[i] for i in todo.tolist()] if exclude is not None else None
            indices[todo], scores[todo] = self._exact(q[todo], redo, k)
        return indices, scores

    def _rescore(self, q: torch.Tensor, approx: torch.Tensor, n: int, k: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Top-k `(indices, scores)` `[B, k]` from the first pass's `n` best of `approx` `[B, M]`, re-scored
        in fp32, and which queries `[B]` they are provably exact for."""
        cand = torch.topk(approx, n, dim=1)  # [B, n], best first
        values = cand.values.float()
        # Every true top-k item scores at least `line` in the first pass (module doc); the error bound
        # grows with the scores' size, at most that of the best candidate or of the line itself.
        size = torch.maximum(values[:, 0].abs(), values[:, k - 1].abs() + 0.05).nan_to_num(1.0, 1.0, 1.0)
        line = values[:, k - 1] - 2 * first_pass_error(self.unit.shape[1], size)
        above = (values >= line[:, None]).sum(1)  # a prefix of the sorted candidates
        proven = (above < n) | (n == len(self))
        # Only the prefix that can hold the top-k (the widest over the proven queries) is re-scored.
        width = max(k, int(above[proven].max()) if proven.any() else k)
        cols = cand.indices[:, :width]
        exact = torch.empty(cols.shape, dtype=torch.float32, device=q.device)
        rows = max(1, _BLOCK_ENTRIES // (width * self.unit.shape[1]))
        for lo in range(0, len(q), rows):
            gathered = self.unit[cols[lo:lo + rows]]  # [b, width, F]
            exact[lo:lo + rows] = torch.einsum("bnf,bf->bn", gathered, q[lo:lo + rows])
        exact[values[:, :width] == -torch.inf] = -torch.inf
        best = torch.topk(exact, k, dim=1)
        return cols.gather(1, best.indices), best.values, proven


def retrieve_predictions(predictions: SubjectPredictions, index: RetrievalIndex, k: int, out_dir: str | Path,
                         exclude: Sequence[str] | None = None, link: str = "symlink") -> dict[str, Any]:
    """Retrieve the top-k database files for each predicted clip embedding of one subject.

    `predictions` holds `pred` float32 `[N, L, D]` and `clip_ids` `[N]` (`b2m.core.runs`).
    Writes `out_dir/retrieval_<subject>.json` (per clip id: the hash of its prediction row and, per
    rank, the source path, the linked file relative to `out_dir`, its sha256 and the score) and puts the audio at
    `out_dir/<subject>/<clip_id>_top<rank><suffix>`, as relative symlinks (`link="symlink"`)
    or copies (`link="copy"`). `exclude[n]`, a track name (`blues.00012`), is never retrieved
    for clip n: the stimulus track itself. Returns the manifest.
    """
    out_dir = Path(out_dir)
    if link not in ("symlink", "copy"):
        raise B2MError(f"retrieval.link: {link!r} is not 'symlink' or 'copy'")
    subject, clip_ids = sanitise(predictions.subject), predictions.clip_ids
    indices, scores, paths = index.query(predictions.pred, k, exclude=exclude)

    clips: dict[str, dict[str, Any]] = {}
    digests: dict[str, str] = {}
    for n, (clip_id, row_scores, row_paths) in enumerate(zip(clip_ids, scores, paths)):
        ranks = []
        for rank, (score, src) in enumerate(zip(row_scores, row_paths), start=1):
            dest = out_dir / subject / f"{sanitise(clip_id)}_top{rank}{Path(src).suffix.lower()}"
            _place(Path(src), dest, link)
            if src not in digests:
                digests[src] = file_digest(src)
            ranks.append({"rank": rank, "path": src, "file": dest.relative_to(out_dir).as_posix(),
                          "sha256": digests[src], "score": float(score)})
        clips[clip_id] = {"input_hash": predictions.input_hash(n), "ranks": ranks}
    manifest = {"subject": subject, "k": k, "exclude_stimulus": exclude is not None,
                "space": index.meta.get("cache_key"), "clips": clips}
    write_json(out_dir / f"retrieval_{subject}.json", manifest)
    return manifest


def _place(src: Path, dest: Path, link: str) -> None:
    """Put `src` at `dest` (replacing what is there) as a relative symlink or a copy."""
    if not src.is_file():  # deleted after the index was loaded
        raise B2MError(f"{src}: retrieved, but no longer in the database; run retrieve again to update the index")
    with atomic_path(dest) as tmp:
        if link == "copy":
            shutil.copyfile(src, tmp)
        else:
            tmp.unlink()
            os.symlink(os.path.relpath(src.resolve(), dest.parent.resolve()), tmp)


def read_retrieval(folder: str | Path, subjects: Sequence[str]) -> Manifest:
    """The retrieved files per subject and clip, by rank, from `<folder>/retrieval_<subject>.json`
    (subjects without one are left out: `Manifest.check` says what is missing)."""
    folder = Path(folder)
    out = Manifest(folder)
    for subject in subjects:
        path = folder / f"retrieval_{subject}.json"
        if not path.is_file():
            continue
        try:
            clips = json.loads(path.read_text())["clips"]
            out.files[subject], out.inputs[subject] = {}, {}
            for clip_id, clip in clips.items():
                ranks = sorted(clip["ranks"], key=lambda e: e["rank"])
                if [e["rank"] for e in ranks] != list(range(1, len(ranks) + 1)):
                    raise ValueError(f"clip {clip_id}: ranks are not 1 to {len(ranks)}")
                files = [inside(folder, e["file"], path) for e in ranks]
                out.files[subject][clip_id], out.inputs[subject][clip_id] = files, str(clip["input_hash"])
                out.digests.update((f, str(e["sha256"])) for f, e in zip(files, ranks))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
            raise B2MError(f"{path}: not a retrieval manifest of this b2m ({type(err).__name__}: {err}); "
                           f"run retrieve again") from None
        out.sources[subject], out.source_digests[subject] = path, file_digest(path)
    if not out.files:
        raise B2MError(f"{folder}: no retrieval_<subject>.json for subjects {', '.join(subjects)}")
    return out
