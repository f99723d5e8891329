"""The acoustic embedding space and the per-clip cache."""

from __future__ import annotations

import numpy as np

from b2m.core.clips import Clip
from b2m.targets import embed_clips
from b2m.targets.acoustic import MOD_BANDS_HZ
from helpers.spaces import packaged_space


def tone(freq, rate=16000, seconds=3.0, am_hz=0.0):
    t = np.arange(int(rate * seconds)) / rate
    wave = np.sin(2 * np.pi * freq * t)
    if am_hz:
        wave *= 0.5 * (1 + np.sin(2 * np.pi * am_hz * t))
    return wave.astype(np.float32)


def test_acoustic_shape_determinism_and_tonotopy():
    space = packaged_space("acoustic", n_mels=32, n_groups=8)
    emb = space.embed_batch([tone(200), tone(3000), tone(200)])
    assert emb.shape == (3, *space.shape) == (3, 1, 64 + 8 * len(MOD_BANDS_HZ))
    np.testing.assert_array_equal(emb[0], emb[2])
    means_low, means_high = emb[0, 0, :32], emb[1, 0, :32]
    assert np.argmax(means_low) < np.argmax(means_high)  # the band of peak energy follows the pitch


def test_acoustic_modulation_features_see_amplitude_modulation():
    space = packaged_space("acoustic")
    steady, modulated = space.embed_batch([tone(500), tone(500, am_hz=4.0)])[:, 0, 64:]
    band = [i for i, (lo, hi) in enumerate(MOD_BANDS_HZ) if lo <= 4.0 < hi][0]
    per_band = (modulated - steady).reshape(8, len(MOD_BANDS_HZ))
    assert per_band[:, band].max() > 3.0  # log energy at 4 Hz modulation rises by > e^3


def test_cache_hits_skip_loading_and_embedding(tmp_path):
    space = packaged_space("acoustic")
    clips = [Clip("blues", i, 0.0, 3.0) for i in range(3)]
    loads = []

    def load(clip):
        loads.append(clip)
        return tone(200 + 100 * clip.track)

    first = embed_clips(space, clips, load, tmp_path)
    assert len(loads) == 3
    second = embed_clips(space, clips + [Clip("rock", 9, 0.0, 3.0)], load, tmp_path)
    assert len(loads) == 4  # only the new clip
    np.testing.assert_array_equal(first, second[:3])
    other = packaged_space("acoustic", n_mels=16, n_groups=4)
    assert other.cache_key() != space.cache_key()
