"""Reconstructed audio (retrieved or generated) of each test clip, and its embeddings.

Inputs read (nothing else is relied on):

- retrieval (`b2m.generation.retrieval.retrieve_predictions`): `<dir>/retrieval_<subject>.json`
  with `clips: {clip_id: [{rank, file}]}`, `file` relative to `<dir>`.
- generation (`b2m.generation.run`): `<dir>/manifest.jsonl`, one JSON record per wav with
  `subject`, `clip_id`, `path` (relative to `<dir>`) and, for ordering, `k` (sample index).

A reconstruction set maps subject -> clip id -> audio files (best rank / sample 0 first).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from b2m.errors import B2MError
from b2m.generation.retrieval import load_database_audio
from b2m.targets import EmbeddingSpace

Reconstructions = dict[str, dict[str, list[Path]]]


def read_retrieval(folder: str | Path, subjects: list[str]) -> Reconstructions:
    """Retrieved files per subject and clip, by rank; every listed file must exist."""
    folder = Path(folder)
    out: Reconstructions = {}
    for subject in subjects:
        manifest = folder / f"retrieval_{subject}.json"
        if not manifest.is_file():
            continue
        try:
            clips = json.loads(manifest.read_text())["clips"]
            out[subject] = {clip_id: [folder / e["file"] for e in sorted(entries, key=lambda e: e["rank"])]
                            for clip_id, entries in clips.items()}
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise B2MError(f"{manifest}: not a retrieval manifest ({type(err).__name__}: {err})") from None
        _check_exist(manifest, out[subject])
    if not out:
        raise B2MError(f"{folder}: no retrieval_<subject>.json for subjects {', '.join(subjects)}")
    return out


def read_generated(folder: str | Path) -> Reconstructions:
    """Generated wavs per subject and clip, by sample index `k`; every listed wav must exist."""
    folder = Path(folder)
    manifest = folder / "manifest.jsonl"
    if not manifest.is_file():
        raise B2MError(f"{manifest}: generation manifest not found (run generate.py first)")
    records = []
    for line_no, line in enumerate(manifest.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            records.append((str(rec["subject"]), str(rec["clip_id"]), int(rec.get("k", 0)), folder / rec["path"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise B2MError(f"{manifest}: line {line_no}: not a generation record ({type(err).__name__}: {err})") \
                from None
    if not records:
        raise B2MError(f"{manifest}: no records")
    out: Reconstructions = {}
    for subject, clip_id, _, path in sorted(records):
        out.setdefault(subject, {}).setdefault(clip_id, []).append(path)
    for per_clip in out.values():
        _check_exist(manifest, per_clip)
    return out


def _check_exist(manifest: Path, per_clip: dict[str, list[Path]]) -> None:
    for clip_id, files in per_clip.items():
        for path in files:
            if not path.is_file():
                raise B2MError(f"{manifest}: {path} (clip {clip_id}) not found")


def embed_files(space: EmbeddingSpace, files: list[Path], batch_size: int = 16) -> np.ndarray:
    """Embeddings `[N, L, D]` of audio files, processed as the retrieval database is (whole file,
    fades, RMS-normalised, resampled to the space's rate); an unreadable file, or one whose embedding
    is not finite, is a B2MError."""
    if space.modality != "audio":
        raise B2MError(f"spaces: {space.name!r} embeds {space.modality}, not audio; reconstructions need an "
                       f"audio space")
    out = []
    for lo in range(0, len(files), batch_size):
        batch = files[lo:lo + batch_size]
        emb = space.embed_batch([load_database_audio(path, space.sample_rate) for path in batch])
        for path, row in zip(batch, emb):
            if not np.isfinite(row).all():
                raise B2MError(f"{path}: its {space.name} embedding is not finite (audio too short?)")
        out.append(emb)
    return np.concatenate(out) if out else np.zeros((0, *space.shape), np.float32)


def reconstruction_draws(space: EmbeddingSpace, per_clip: dict[str, list[Path]], clip_ids: list[str],
                         max_draws: int) -> np.ndarray:
    """Embeddings `[K, N, L, D]`: draw k is each clip's k-th file (rank k+1 or sample k), for the
    `N` clips `clip_ids`; K is the smallest file count over the clips, capped at `max_draws`."""
    k = min(max_draws, min(len(per_clip[c]) for c in clip_ids))
    files = [per_clip[c][j] for j in range(k) for c in clip_ids]
    return embed_files(space, files).reshape(k, len(clip_ids), *space.shape)
