"""`windowed`: any pooled audio space applied to sliding windows of the clip.

Turns an inner space of shape `(1, D)` into `(L, D)`, one vector per window, where
`L = 1 + floor((clip_s - window_s) / stride_s)` (Brain2Music: 10 s windows every 1.5 s
over a 15 s clip gives L = 4).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from b2m.core.errors import B2MError
from b2m.targets.base import EmbeddingSpace

# Clip lengths rounded to whole samples may miss a few samples of the last window.
_TOLERANCE_S = 0.01


def window_starts(window_s: float, stride_s: float, clip_s: float, key: str) -> list[float]:
    """Start times (s) of the windows of `window_s` every `stride_s` that fit in `clip_s`:
    `L = 1 + floor((clip_s - window_s) / stride_s)`; bad values are a B2MError naming `key`."""
    if not 0 < window_s <= clip_s or stride_s <= 0:
        raise B2MError(f"{key}: need 0 < window_s <= clip_s and stride_s > 0, "
                       f"got window_s={window_s}, stride_s={stride_s}, clip_s={clip_s}")
    # A small epsilon so that e.g. (15 - 10) / 2.5 = 2 is not floored to 1 by rounding.
    return [i * stride_s for i in range(1 + math.floor((clip_s - window_s) / stride_s + 1e-9))]


class WindowedSpace(EmbeddingSpace):
    """An inner audio space on windows of `window_s` seconds every `stride_s` seconds.

    Config: `inner` (the inner space's config, built first), `window_s`, `stride_s`,
    `clip_s` (seconds; `clip_s` fixes L, later samples are ignored). The cache key holds
    the inner space's name and config.
    """

    name = "windowed"
    modality = "audio"

    def __init__(self, inner: EmbeddingSpace, window_s: float, stride_s: float, clip_s: float) -> None:
        super().__init__(inner=inner.name, inner_config=inner.config, window_s=window_s, stride_s=stride_s,
                         clip_s=clip_s)
        self.starts = window_starts(window_s, stride_s, clip_s, "windowed")
        self.inner = inner
        if self.inner.modality != "audio" or self.inner.shape[0] != 1:
            raise B2MError(f"windowed.inner: {inner.name!r} must be an audio space with L = 1, "
                           f"got modality {self.inner.modality!r}, shape {self.inner.shape}")
        self.sample_rate = self.inner.sample_rate
        self.window_s, self.stride_s, self.clip_s = window_s, stride_s, clip_s
        self.n_windows = len(self.starts)

    @property
    def shape(self) -> tuple[int, int]:
        return self.n_windows, self.inner.shape[1]

    def window_bounds(self) -> list[tuple[int, int]]:
        """`[start, end)` sample indices of each window at `sample_rate`."""
        sr = self.sample_rate
        n = int(round(self.window_s * sr))
        return [(int(round(start * sr)), int(round(start * sr)) + n) for start in self.starts]

    def embed_batch(self, items: Sequence[np.ndarray]) -> np.ndarray:
        """Waveforms `[samples]` at `sample_rate` Hz -> float32 `[N, L, D]`."""
        bounds = self.window_bounds()
        need = bounds[-1][1]
        windows = []
        for wave in items:
            wave = np.asarray(wave, dtype=np.float32)
            if len(wave) < need - _TOLERANCE_S * self.sample_rate:
                raise B2MError(f"windowed: a waveform of {len(wave) / self.sample_rate:.2f} s is shorter "
                               f"than its windows need ({need / self.sample_rate:.2f} s, clip_s={self.clip_s})")
            wave = np.pad(wave, (0, max(0, need - len(wave))))
            windows.extend(wave[lo:hi] for lo, hi in bounds)
        emb = self.inner.embed_batch(windows)  # [N * L, 1, D]
        return emb.reshape(len(items), self.n_windows, -1).astype(np.float32)
