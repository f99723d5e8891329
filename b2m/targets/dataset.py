"""The embeddings of a dataset's clips: stimulus audio or captions, through the per-clip cache."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
from omegaconf import DictConfig

from b2m.core.clips import Clip
from b2m.core.errors import B2MError
from b2m.data.captions import read_captions
from b2m.data.stimuli import StimulusSet
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
