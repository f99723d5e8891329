"""Formula-defined test signals for musicnn parity (pure numpy; no randomness, no files).

`scripts/musicnn_golden.py` computes musicnn's own TensorFlow outputs for these waveforms once and stores them in
`tests/data/musicnn_golden.npz`; the torch port's tests regenerate the same waveforms here and compare. The
golden file stores `SIGNAL_PARAMS` as JSON (`signal_params`), so a test can check that these definitions have not
changed since the file was made.

Every signal is float32, mono, at 16 kHz (musicnn's rate: nothing is resampled):

- `chord`: 7 s, an A major chord (220, 277.18, 329.63, 440 Hz sines, 0.15 each) struck once a second (attack
  10 ms, exponential decay) — 2 patches.
- `chirp`: 6.5 s, a linear sweep 100 Hz -> 6 kHz at 0.5 — 2 patches.
- `square`: 6 s, a full-scale (+-1) 100 Hz square wave (integer-defined: 80 samples +1, 80 samples -1): its mel
  power is far above 6.55, where float16 arithmetic on 10000 x overflows — 2 patches.
- `pulses`: 10 s, a Schroeder-phase multisine (harmonics of 50 Hz up to 7 kHz, flat spectrum) gated by decaying
  bursts twice a second, a drum-like broadband signal — 3 patches.
- `tone2s`: 2 s, a 440 Hz sine at 0.5 with 10 ms fades: shorter than one 3 s patch (126 mel frames < 187), so it
  is repeat-padded to one patch (see `repeat_pad_frames`) — 1 patch.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000
N_FRAMES = 187  # one musicnn patch: 3 s of 256-sample hops (librosa.time_to_frames(3, 16000, 256, 512) + 1)

SIGNAL_PARAMS: dict[str, dict] = {
    "chord": {"seconds": 7.0, "freqs_hz": [220.0 * 2 ** (k / 12) for k in (0, 4, 7, 12)], "amplitude": 0.15,
              "strike_period_s": 1.0, "attack_s": 0.01, "decay_per_s": 3.0},
    "chirp": {"seconds": 6.5, "f0_hz": 100.0, "f1_hz": 6000.0, "amplitude": 0.5},
    "square": {"seconds": 6.0, "half_period_samples": 80, "amplitude": 1.0},
    "pulses": {"seconds": 10.0, "f0_hz": 50.0, "fmax_hz": 7000.0, "rms": 0.2, "burst_period_s": 0.5,
               "decay_per_s": 12.0},
    "tone2s": {"seconds": 2.0, "freq_hz": 440.0, "amplitude": 0.5, "fade_s": 0.01},
}
SIGNALS = tuple(SIGNAL_PARAMS)


def _time(seconds: float) -> np.ndarray:
    return np.arange(int(round(seconds * SAMPLE_RATE)), dtype=np.float64) / SAMPLE_RATE


def chord(seconds, freqs_hz, amplitude, strike_period_s, attack_s, decay_per_s) -> np.ndarray:
    t = _time(seconds)
    since = np.mod(t, strike_period_s)
    envelope = np.minimum(since / attack_s, 1.0) * np.exp(-decay_per_s * since)
    return envelope * sum(amplitude * np.sin(2 * np.pi * f * t) for f in freqs_hz)


def chirp(seconds, f0_hz, f1_hz, amplitude) -> np.ndarray:
    t = _time(seconds)
    return amplitude * np.sin(2 * np.pi * (f0_hz * t + (f1_hz - f0_hz) * t ** 2 / (2 * seconds)))


def square(seconds, half_period_samples, amplitude) -> np.ndarray:
    n = np.arange(int(round(seconds * SAMPLE_RATE)))
    return amplitude * np.where((n // half_period_samples) % 2 == 0, 1.0, -1.0)


def pulses(seconds, f0_hz, fmax_hz, rms, burst_period_s, decay_per_s) -> np.ndarray:
    t = _time(seconds)
    k = np.arange(1, int(fmax_hz // f0_hz) + 1)
    phases = np.pi * k * (k - 1) / len(k)  # Schroeder phases: a low crest factor
    tone = np.zeros_like(t)
    for kk, ph in zip(k, phases):
        tone += np.cos(2 * np.pi * kk * f0_hz * t + ph)
    tone *= rms / np.sqrt(len(k) / 2)
    return tone * np.exp(-decay_per_s * np.mod(t, burst_period_s))


def tone2s(seconds, freq_hz, amplitude, fade_s) -> np.ndarray:
    t = _time(seconds)
    fade = np.minimum(1.0, np.minimum(t, seconds - t) / fade_s)
    return amplitude * fade * np.sin(2 * np.pi * freq_hz * t)


def signal(name: str) -> np.ndarray:
    """The waveform `name` (one of `SIGNALS`): float32, mono, 16 kHz."""
    return globals()[name](**SIGNAL_PARAMS[name]).astype(np.float32)


def repeat_pad_frames(rep: np.ndarray, n_frames: int = N_FRAMES) -> np.ndarray:
    """musicnn's training `pad_short: repeat-pad`: a [T, bands] representation with T < n_frames tiled along time
    and cut to n_frames (longer ones are returned as they are). The golden file applies it to the float16 mel
    power before the log, which is the same as applying it after (the log is elementwise)."""
    if rep.shape[0] >= n_frames:
        return rep
    reps = -(-n_frames // rep.shape[0])
    return np.concatenate([rep] * reps, axis=0)[:n_frames]
