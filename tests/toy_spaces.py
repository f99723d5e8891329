"""A tiny audio space for tests: mean over frames of per-frame band energies."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pytest

from b2m import targets
from b2m.targets.base import EmbeddingSpace


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


@pytest.fixture
def toy_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register the toy space; keep build_space from importing every space module (acoustic's included)."""
    import b2m.targets.windowed  # noqa: F401  (registers `windowed`)

    monkeypatch.setitem(targets.SPACES, BandEnergy.name, BandEnergy)
    monkeypatch.setattr(targets, "_import_all", lambda: None)
