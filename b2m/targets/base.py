"""The embedding-space interface and its per-clip disk cache.

A space maps a clip to an embedding of shape `[L, D]` (L = 1 for a pooled
vector). Audio spaces embed waveforms, text spaces embed captions; either way
`embed_clips` looks each clip up in the cache first and computes only what is
missing, in batches, with a progress bar.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from b2m.core.clips import Clip
from b2m.core.io import save_npy, write_text
from b2m.core.log import progress


class EmbeddingSpace(ABC):
    """One embedding space. Subclasses set `name`, `modality` and implement `embed_batch`.

    `modality` is "audio" (inputs: mono float32 waveforms at `sample_rate` Hz) or
    "text" (inputs: caption strings).
    """

    name: str = ""
    modality: str = "audio"
    sample_rate: int = 22050

    def __init__(self, **config: Any) -> None:
        self.config = dict(config)

    @property
    @abstractmethod
    def shape(self) -> tuple[int, int]:
        """Per-clip embedding shape `(L, D)`."""

    @abstractmethod
    def embed_batch(self, items: Sequence[Any]) -> np.ndarray:
        """Embed a batch of waveforms or captions: returns float32 `[N, L, D]`, deterministic."""

    def cache_key(self) -> str:
        """A short hash of the space's name and config: a cache folder per distinct space."""
        blob = json.dumps({"name": self.name, **self.config}, sort_keys=True, default=str)
        return f"{self.name}-{hashlib.sha1(blob.encode()).hexdigest()[:10]}"


def embed_clips(
    space: EmbeddingSpace,
    clips: Sequence[Clip],
    load_item: Callable[[Clip], Any],
    cache_dir: str | Path | None,
    batch_size: int = 16,
    source_key: Callable[[Clip], str] | None = None,
) -> np.ndarray:
    """Embeddings of `clips` in `space`, `[N, L, D]` float32, cached per clip under `cache_dir`.

    `load_item(clip)` returns what the space embeds (a waveform at
    `space.sample_rate`, or a caption). Cached clips are not loaded at all.
    `source_key(clip)` fingerprints what the clip is made from (its caption, its audio file), so that an
    edited source is embedded again. Cache files are `<clip_id>.npy` (the layout other tools read, such as
    ../shared/reference/plain_ridge.py) with the fingerprint in `<clip_id>.source`, written after the
    array. A cache file that cannot be read (truncated by a killed write, say), has another shape or
    another fingerprint is computed again.
    """
    folder = Path(cache_dir) / space.cache_key() if cache_dir is not None else None
    out = np.zeros((len(clips), *space.shape), dtype=np.float32)
    keys = [source_key(c) if source_key is not None else None for c in clips]
    missing = []
    for i, clip in enumerate(clips):
        cached = _read_cached(folder / f"{clip.clip_id}.npy", space.shape, keys[i]) if folder is not None else None
        if cached is not None:
            out[i] = cached
        else:
            missing.append(i)
    for lo in progress(range(0, len(missing), batch_size), f"embed {space.name}", unit="batches") if missing else ():
        idx = missing[lo:lo + batch_size]
        emb = space.embed_batch([load_item(clips[i]) for i in idx])
        for j, i in enumerate(idx):
            out[i] = emb[j]
            if folder is not None:
                save_npy(folder / f"{clips[i].clip_id}.npy", emb[j])
                if keys[i] is not None:
                    write_text(folder / f"{clips[i].clip_id}.source", keys[i])
    return out


def _read_cached(path: Path, shape: tuple[int, int], key: str | None) -> np.ndarray | None:
    """A cached embedding, or None if it is absent, unreadable, of another shape, or (with `key`) made
    from another source than `key` says."""
    if not path.is_file():
        return None
    if key is not None:
        source = path.with_suffix(".source")
        if not source.is_file() or source.read_text() != key:
            return None
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    return array if array.shape == tuple(shape) else None
