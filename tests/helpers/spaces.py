"""Embedding spaces for tests: the packaged ones with overrides, and a tiny toy audio space."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from omegaconf import OmegaConf

from b2m.core.config import group_config
from b2m.targets import build_space
from b2m.targets.base import EmbeddingSpace


def packaged_space(name: str, **overrides) -> EmbeddingSpace:
    """The space of `b2m/conf/target/<name>.yaml` with some keys overridden."""
    return build_space(OmegaConf.merge(group_config("target", name), overrides))


class BandEnergy(EmbeddingSpace):
    """Per frame of `frame` samples, the energy in `bands` equal FFT bands; the mean over frames: `(1, bands)`."""

    name = "test_band_energy"
    modality = "audio"

    def __init__(self, sample_rate: int = 800, frame: int = 40, bands: int = 4) -> None:
        super().__init__(sample_rate=sample_rate, frame=frame, bands=bands)
        self.sample_rate, self.frame, self.bands = sample_rate, frame, bands

    @property
    def shape(self) -> tuple[int, int]:
        return 1, self.bands

    def embed_batch(self, items: Sequence[np.ndarray]) -> np.ndarray:
        out = []
        for wave in items:
            n = len(wave) // self.frame
            frames = np.asarray(wave[: n * self.frame], np.float64).reshape(n, self.frame)
            power = np.abs(np.fft.rfft(frames, axis=1)[:, 1:]) ** 2
            bands = power.reshape(n, self.bands, -1).sum(-1)
            out.append(bands.mean(0))
        return np.asarray(out, np.float32)[:, None, :]
