"""Stimulus features that drive the simulated BOLD, and the run design matrix.

Acoustic features come from the clip waveform as presented (fades included) at
`FEATURE_RATE_HZ`: log band energies on a log-frequency axis (what tonotopic
voxels see) and envelope modulation energies per band (spectro-temporal
modulation). Semantic features are constant over a clip: genre one-hot,
instrument families of the track's style and tempo. A run's features are
convolved with a canonical double-gamma HRF and averaged over each TR.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.fft
from scipy.signal import fftconvolve
from scipy.stats import gamma

from b2m.core.clips import GENRES

AUDIO_RATE = 22050  # Hz, GTZAN's: the analysis rate (other stimuli are resampled to it)
FEATURE_RATE_HZ = 10  # feature samples per second
ENVELOPE_RATE_HZ = 50  # STFT frames per second, the envelope resolution for modulation
N_FFT = 1024  # 46 ms window, 21.5 Hz bins
BAND_EDGES_HZ = np.geomspace(100.0, 6400.0, 17)  # 16 bands of 3/8 octave
MODULATION_EDGES_HZ = np.array([0.6, 1.6, 4.0, 10.0, 24.0])  # 4 modulation bands, up to the envelope Nyquist
POWER_FLOOR = 1e-4  # mean power per bin below which a band counts as silent (about -40 dB re the RMS 0.1 clip)
MODULATION_FLOOR = 1e-6  # well below the quietest 1 % of modulation energies in music
HRF_SECONDS = 32.0

N_BANDS = len(BAND_EDGES_HZ) - 1
N_MODULATIONS = len(MODULATION_EDGES_HZ) - 1
BAND_CENTRES_HZ = np.sqrt(BAND_EDGES_HZ[:-1] * BAND_EDGES_HZ[1:])
MODULATION_CENTRES_HZ = np.sqrt(MODULATION_EDGES_HZ[:-1] * MODULATION_EDGES_HZ[1:])

# General MIDI instrument classes (program // 8), plus drums: the semantic "instrument family" features.
INSTRUMENT_FAMILIES: tuple[str, ...] = (
    "piano", "chromatic_percussion", "organ", "guitar", "bass", "strings", "ensemble", "brass",
    "reed", "pipe", "synth_lead", "synth_pad", "synth_effects", "ethnic", "percussive", "sound_effects",
    "drums",
)


def acoustic_feature_names() -> list[str]:
    bands = [f"band_{hz:.0f}Hz" for hz in BAND_CENTRES_HZ]
    mods = [f"mod_{hz:.0f}Hz_{rate:.1f}Hz" for hz in BAND_CENTRES_HZ for rate in MODULATION_CENTRES_HZ]
    return bands + mods


def semantic_feature_names() -> list[str]:
    return [f"genre_{g}" for g in GENRES] + [f"instrument_{f}" for f in INSTRUMENT_FAMILIES] + ["tempo"]


def feature_names() -> list[str]:
    """Names of the design-matrix columns: acoustic first, then semantic."""
    return acoustic_feature_names() + semantic_feature_names()


def _band_filters() -> np.ndarray:
    """Triangular filters on log-frequency, `[N_FFT // 2 + 1, N_BANDS]`, each normalised to unit sum."""
    freqs = np.fft.rfftfreq(N_FFT, 1.0 / AUDIO_RATE)
    log_f = np.log2(np.maximum(freqs, 1.0))
    log_edges = np.log2(BAND_EDGES_HZ)
    centres = 0.5 * (log_edges[:-1] + log_edges[1:])
    width = log_edges[1] - log_edges[0]
    weights = np.clip(1.0 - np.abs(log_f[:, None] - centres[None, :]) / width, 0.0, None)
    return weights / weights.sum(axis=0, keepdims=True)


_BAND_FILTERS = _band_filters().astype(np.float32)
_WINDOW = np.hanning(N_FFT).astype(np.float32)


def _block_mean(x: np.ndarray, block: int) -> np.ndarray:
    n = x.shape[0] // block
    return x[: n * block].reshape(n, block, *x.shape[1:]).mean(axis=1)


def clip_acoustic_features(wave: np.ndarray) -> np.ndarray:
    """Acoustic features of one presented clip, `wave` mono `[samples]` at `AUDIO_RATE` Hz.

    Returns float32 `[round(seconds * FEATURE_RATE_HZ), N_BANDS * (1 + N_MODULATIONS)]`:
    log10 band power, then per band the log10 energy of its log-envelope in each
    modulation band (band-major, as `acoustic_feature_names()`).
    """
    hop = AUDIO_RATE // ENVELOPE_RATE_HZ
    n_frames = len(wave) // hop
    padded = np.pad(np.asarray(wave, dtype=np.float32), (N_FFT // 2, N_FFT // 2 + hop))
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::hop][:n_frames]
    spectrum = scipy.fft.rfft(frames * _WINDOW, axis=1)
    power = spectrum.real ** 2 + spectrum.imag ** 2
    band_power = power @ _BAND_FILTERS  # [frames, bands] at ENVELOPE_RATE_HZ, mean power per bin
    log_band = np.log10(band_power + POWER_FLOOR)

    # Modulation of each band's compressed envelope (power^0.25, loudness-like), so that louder
    # passages carry more modulation energy and fades to silence carry less; zero-phase band-pass
    # in the frequency domain.
    envelope = band_power ** 0.25
    envelope_spectrum = scipy.fft.rfft(envelope - envelope.mean(axis=0), axis=0)
    mod_freqs = np.fft.rfftfreq(n_frames, 1.0 / ENVELOPE_RATE_HZ)
    modulation = np.empty((n_frames, N_BANDS, N_MODULATIONS), dtype=np.float32)
    for m in range(N_MODULATIONS):
        keep = (mod_freqs >= MODULATION_EDGES_HZ[m]) & (mod_freqs < MODULATION_EDGES_HZ[m + 1])
        modulation[:, :, m] = scipy.fft.irfft(envelope_spectrum * keep[:, None], n=n_frames, axis=0) ** 2

    block = ENVELOPE_RATE_HZ // FEATURE_RATE_HZ
    bands = _block_mean(log_band, block)
    mods = np.log10(_block_mean(modulation, block) + MODULATION_FLOOR).reshape(len(bands), -1)
    return np.concatenate([bands, mods], axis=1).astype(np.float32)


def instrument_family(program: int, is_drum: bool = False) -> str:
    """The General MIDI class of a program number 0-127 (drum kits are their own family)."""
    return "drums" if is_drum else INSTRUMENT_FAMILIES[program // 8]


def semantic_vector(genre: str, families: Sequence[str], tempo_bpm: float) -> np.ndarray:
    """Semantic features of one clip, float32 `[len(semantic_feature_names())]`: genre one-hot,
    instrument-family multi-hot, tempo in units of 100 bpm."""
    vec = np.zeros(len(GENRES) + len(INSTRUMENT_FAMILIES) + 1, dtype=np.float32)
    vec[GENRES.index(genre)] = 1.0
    for family in families:
        vec[len(GENRES) + INSTRUMENT_FAMILIES.index(family)] = 1.0
    vec[-1] = tempo_bpm / 100.0
    return vec


def canonical_hrf(rate_hz: float = FEATURE_RATE_HZ, peak_s: float = 5.0) -> np.ndarray:
    """SPM's double-gamma HRF (peak near `peak_s` = 5 s, undershoot 10 s later), `[HRF_SECONDS * rate_hz]`,
    unit sum; another `peak_s` shifts both gammas' shapes (the mode of gamma(a) is a - 1 s)."""
    t = np.arange(0.0, HRF_SECONDS, 1.0 / rate_hz)
    h = gamma.pdf(t, peak_s + 1.0) - gamma.pdf(t, peak_s + 11.0) / 6.0
    return h / h.sum()


def _zscore_columns(x: np.ndarray) -> np.ndarray:
    sd = x.std(axis=0)
    return np.divide(x - x.mean(axis=0), sd, out=np.zeros_like(x), where=sd > 0)


def run_design(clip_features: Sequence[np.ndarray], onsets_s: Sequence[float], n_volumes: int,
               tr_s: float, hrf_peak_s: float = 5.0) -> np.ndarray:
    """The predicted response to each feature over one run, float64 `[n_volumes, F]`, for an HRF
    peaking at `hrf_peak_s` seconds.

    `clip_features[i]` is `[n_i, F]` at `FEATURE_RATE_HZ`, presented at `onsets_s[i]`
    seconds. Features are z-scored over the run (so before the run counts as the
    mean level, with no artificial onset transient), convolved with the HRF,
    averaged over each TR and z-scored again: a voxel's drive is `design @ weights`.
    """
    per_tr = tr_s * FEATURE_RATE_HZ
    if abs(per_tr - round(per_tr)) > 1e-9:
        raise ValueError(f"TR {tr_s} s is not a whole number of feature samples")
    per_tr = int(round(per_tr))
    n_samples = n_volumes * per_tr
    timeline = np.zeros((n_samples, clip_features[0].shape[1]))
    covered = np.zeros(n_samples, dtype=bool)
    for feats, onset in zip(clip_features, onsets_s):
        lo = int(round(onset * FEATURE_RATE_HZ))
        hi = min(lo + len(feats), n_samples)
        timeline[lo:hi] = feats[: hi - lo]
        covered[lo:hi] = True
    timeline[covered] = _zscore_columns(timeline[covered])
    response = fftconvolve(timeline, canonical_hrf(peak_s=hrf_peak_s)[:, None], axes=0)[:n_samples]
    return _zscore_columns(_block_mean(response, per_tr))
