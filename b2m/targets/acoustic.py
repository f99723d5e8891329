"""`acoustic`: spectro-temporal statistics of a clip, computed in torch.

Per clip (16 kHz mono): a log-mel spectrogram (`n_mels` bands, 100 frames/s),
summarised by each band's mean and standard deviation over time, plus the
modulation spectrum of the band envelopes (energy in octave-spaced modulation
bands from 0.5 to 32 Hz, for `n_groups` groups of adjacent mel bands). This is
the SoundStream-avg analogue of Brain2Music: what the auditory cortex tracks
(spectrum and its temporal modulation), pooled over the clip.
Shape `[1, 2 * n_mels + n_groups * len(MOD_BANDS_HZ)]`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from b2m.core.errors import B2MError
from b2m.targets.base import EmbeddingSpace

MOD_BANDS_HZ = ((0.5, 1.0), (1.0, 2.0), (2.0, 4.0), (4.0, 8.0), (8.0, 16.0), (16.0, 32.0))


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int, f_min: float = 40.0) -> torch.Tensor:
    """Triangular mel filters (HTK mel scale), `[n_fft // 2 + 1, n_mels]`."""
    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(sample_rate / 2), n_mels + 2))
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (freqs[:, None] - lower) / (centre - lower)
    falling = (upper - freqs[:, None]) / (upper - centre)
    return torch.from_numpy(np.clip(np.minimum(rising, falling), 0, None)).float()


class AcousticSpace(EmbeddingSpace):
    name = "acoustic"
    modality = "audio"
    sample_rate = 16000

    def __init__(self, n_mels: int, n_groups: int) -> None:
        super().__init__(n_mels=n_mels, n_groups=n_groups)
        if n_mels % n_groups:
            raise B2MError(f"acoustic: n_mels ({n_mels}) must be a multiple of n_groups ({n_groups})")
        self.n_mels, self.n_groups = n_mels, n_groups
        self.n_fft, self.hop = 512, 160  # 32 ms frames, 100 frames/s
        self.filters = mel_filterbank(n_mels, self.n_fft, self.sample_rate)

    @property
    def shape(self) -> tuple[int, int]:
        return 1, 2 * self.n_mels + self.n_groups * len(MOD_BANDS_HZ)

    def embed_batch(self, items: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack([self._features(torch.as_tensor(np.asarray(w, dtype=np.float32)))
                         for w in items])[:, None, :]

    @torch.no_grad()
    def _features(self, wave: torch.Tensor) -> np.ndarray:
        window = torch.hann_window(self.n_fft)
        spec = torch.stft(wave, self.n_fft, self.hop, window=window, return_complex=True).abs() ** 2
        logmel = torch.log(self.filters.T @ spec + 1e-8)                     # [n_mels, frames]
        mean, std = logmel.mean(dim=1), logmel.std(dim=1)
        envelopes = logmel.reshape(self.n_groups, -1, logmel.shape[1]).mean(dim=1)
        envelopes = envelopes - envelopes.mean(dim=1, keepdim=True)
        # A taper keeps the clip's edges from leaking into every modulation band.
        taper = torch.hann_window(envelopes.shape[1], periodic=False)
        power = torch.fft.rfft(envelopes * taper, dim=1).abs() ** 2 / envelopes.shape[1]
        mod_freqs = torch.fft.rfftfreq(envelopes.shape[1], d=self.hop / self.sample_rate)
        bands = [power[:, (mod_freqs >= lo) & (mod_freqs < hi)].mean(dim=1) for lo, hi in MOD_BANDS_HZ]
        modulation = torch.log(torch.stack(bands, dim=1) + 1e-6).flatten()  # [n_groups * n_bands]
        return torch.cat([mean, std, modulation]).numpy().astype(np.float32)
