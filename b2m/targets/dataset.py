"""The embeddings of a dataset's clips (stimulus audio or captions, through the per-clip cache) and of
audio files (reconstructions, retrieval candidates)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from b2m.core.clips import Clip
from b2m.core.errors import B2MError
from b2m.data.captions import read_captions
from b2m.data.stimuli import StimulusSet, load_audio_file
from b2m.data.subjects import data_paths
from b2m.targets.base import EmbeddingSpace, embed_clips


def clip_targets(data_cfg: DictConfig, space: EmbeddingSpace, clips: list[Clip]) -> dict[Clip, np.ndarray]:
    """Each clip's embedding `[L, D]` in `space`, cached under
    `<cache>/targets/<space>-<hash>/<clip_id>.npy`, with `<clip_id>.source` fingerprinting the caption
    text or the audio file (name, size, modification time): an edited caption or a replaced file is
    embedded again."""
    paths = data_paths(data_cfg)
    if space.modality == "text":
        captions = read_captions(paths["captions"])

        def load_item(clip: Clip) -> Any:
            key = (clip.genre, clip.track)
            if key not in captions:
                raise B2MError(f"{paths['captions']}: no caption for {clip.track_name}")
            return captions[key]

        def source_key(clip: Clip) -> str:
            return _fingerprint(str(captions.get((clip.genre, clip.track))))
    else:
        stimuli = StimulusSet(paths["stimuli"])

        def load_item(clip: Clip) -> Any:
            return stimuli.load_clip(clip, space.sample_rate)

        def source_key(clip: Clip) -> str:
            path = stimuli.track_path(clip)
            stat = path.stat() if path.is_file() else None
            return _fingerprint(f"{clip.genre}/{path.name}:{stat and stat.st_size}:{stat and stat.st_mtime_ns}")

    emb = embed_clips(space, clips, load_item, paths["cache"] / "targets", source_key=source_key)
    return dict(zip(clips, emb))


def _fingerprint(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:12]


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
        emb = space.embed_batch([load_audio_file(path, space.sample_rate) for path in batch])
        for path, row in zip(batch, emb):
            if not np.isfinite(row).all():
                raise B2MError(f"{path}: its {space.name} embedding is not finite (audio too short?)")
        out.append(emb)
    return np.concatenate(out) if out else np.zeros((0, *space.shape), np.float32)
