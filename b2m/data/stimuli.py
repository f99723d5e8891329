"""Stimuli in the GTZAN layout: `<stimuli>/genres/<genre>/<genre>.000NN.wav`.

A clip is `[start, end)` seconds of its 30 s track with 2 s fades in and out,
RMS-normalised, as presented in ds003720. Audio at any sample rate is
resampled on load.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from b2m.core.clips import Clip
from b2m.core.errors import B2MError

TARGET_RMS = 0.1


def excerpt(wave: np.ndarray, sample_rate: int, start: float, end: float, fade_s: float = 2.0) -> np.ndarray:
    """Cut `[start, end)` seconds of a mono track, fade in/out over `fade_s` seconds, RMS-normalise.

    Returns float32 `[round((end - start) * sample_rate)]`. The caller checks that the
    track is long enough (see `StimulusSet.load_clip`).
    """
    lo = int(round(start * sample_rate))
    n = int(round((end - start) * sample_rate))
    clip = np.asarray(wave[lo:lo + n], dtype=np.float64).copy()
    n_fade = min(int(round(fade_s * sample_rate)), len(clip) // 2)
    if n_fade > 0:
        ramp = np.linspace(0.0, 1.0, n_fade, endpoint=False)
        clip[:n_fade] *= ramp
        clip[len(clip) - n_fade:] *= ramp[::-1]
    rms = np.sqrt(np.mean(clip ** 2)) if len(clip) else 0.0
    if rms > 0:
        clip *= TARGET_RMS / rms
    return clip.astype(np.float32)


def resample(wave: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Polyphase resampling of a mono float waveform `[samples]` from `from_rate` to `to_rate` Hz."""
    if from_rate == to_rate:
        return np.asarray(wave, dtype=np.float32)
    ratio = Fraction(to_rate, from_rate)
    return resample_poly(wave, ratio.numerator, ratio.denominator).astype(np.float32)


# What one audio file may claim in its header: anything else is refused before it is read or resampled.
AUDIO_LIMITS = {"rate_hz": (100, 384000), "channels": 16, "duration_s": 1800}


def read_mono(path: Path) -> tuple[np.ndarray, int]:
    """Read an audio file as mono float32 `[samples]` and its sample rate (Hz).

    The header is checked first (`AUDIO_LIMITS`), so a file that claims a rate of 1 Hz or an hour of
    audio costs nothing before it is refused; a file with a NaN or infinite sample is refused too.
    """
    try:
        info = sf.info(str(path))
        low, high = AUDIO_LIMITS["rate_hz"]
        if not low <= info.samplerate <= high or not 1 <= info.channels <= AUDIO_LIMITS["channels"] \
                or info.frames > AUDIO_LIMITS["duration_s"] * info.samplerate:
            raise B2MError(f"{path}: audio of {info.samplerate} Hz, {info.channels} channel(s), "
                           f"{info.frames / max(info.samplerate, 1):.0f} s is out of range (rate {low}-{high} Hz, "
                           f"at most {AUDIO_LIMITS['channels']} channels and {AUDIO_LIMITS['duration_s']} s)")
        wave, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise B2MError(f"{path}: unreadable audio ({err})") from None
    if not np.isfinite(wave).all():
        raise B2MError(f"{path}: audio holds NaN or infinite samples")
    return wave.mean(axis=1), rate


def load_audio_file(path: Path, sample_rate: int) -> np.ndarray:
    """A whole audio file (a database entry, a reconstruction) as mono float32 `[samples]` at `sample_rate` Hz.

    The whole file is prepared like a stimulus clip (fades, RMS normalisation) so
    that stimuli and database files reach the space with the same processing.
    """
    wave, rate = read_mono(path)
    if len(wave) == 0:
        raise B2MError(f"{path}: no audio samples")
    return resample(excerpt(wave, rate, 0.0, len(wave) / rate), rate, sample_rate)


class StimulusSet:
    """The stimulus folder of a dataset (the one holding `genres/`)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def track_path(self, clip: Clip) -> Path:
        return self.root / "genres" / clip.genre / f"{clip.track_name}.wav"

    def load_clip(self, clip: Clip, sample_rate: int) -> np.ndarray:
        """The clip as presented, mono float32 `[samples]` at `sample_rate` Hz."""
        path = self.track_path(clip)
        if not path.exists():
            raise B2MError(f"{path}: stimulus wav missing for clip {clip.clip_id}")
        wave, rate = read_mono(path)
        if len(wave) < int(round(clip.end * rate)) - 1:
            raise B2MError(
                f"{path}: stimulus is {len(wave) / rate:.2f} s long, shorter than the clip end {clip.end:.2f} s"
            )
        return resample(excerpt(wave, rate, clip.start, clip.end), rate, sample_rate)
