import numpy as np
import pytest

from b2m.core.errors import B2MError
from b2m.targets.windowed import WindowedSpace
from helpers.spaces import BandEnergy, packaged_space

SR = 800


def _waves(n: int, seconds: float, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(int(seconds * SR)).astype(np.float32) for _ in range(n)]


def test_brain2music_windows_shape_and_bounds():
    space = WindowedSpace(BandEnergy(), window_s=10.0, stride_s=1.5, clip_s=15.0)
    assert space.shape == (4, 4)  # windows start at 0, 1.5, 3, 4.5 s
    assert space.sample_rate == SR
    assert space.window_bounds() == [(0, 8000), (1200, 9200), (2400, 10400), (3600, 11600)]
    waves = _waves(3, 15.0)
    emb = space.embed_batch(waves)
    assert emb.shape == (3, 4, 4) and emb.dtype == np.float32
    inner = BandEnergy()
    for i, wave in enumerate(waves):
        for w, (lo, hi) in enumerate(space.window_bounds()):
            np.testing.assert_allclose(emb[i, w], inner.embed_batch([wave[lo:hi]])[0, 0], rtol=1e-6)
    np.testing.assert_array_equal(emb, space.embed_batch(waves))  # deterministic


def test_window_over_whole_clip_equals_pooled():
    waves = _waves(2, 15.0, seed=1)
    pooled = BandEnergy().embed_batch(waves)
    whole = WindowedSpace(BandEnergy(), window_s=15.0, stride_s=1.5, clip_s=15.0)
    assert whole.shape == (1, 4)
    np.testing.assert_allclose(whole.embed_batch(waves), pooled, rtol=1e-6)
    # A mean-pooling space: the mean of windows that tile the clip is the pooled embedding.
    tiles = WindowedSpace(BandEnergy(), window_s=5.0, stride_s=5.0, clip_s=15.0)
    assert tiles.shape == (3, 4)
    np.testing.assert_allclose(tiles.embed_batch(waves).mean(1), pooled[:, 0], rtol=1e-5)


def test_short_waveform_and_bad_config_raise():
    space = WindowedSpace(BandEnergy(), window_s=10.0, stride_s=1.5, clip_s=15.0)
    # A few samples short of 15 s (rounding) is padded; seconds short is an error.
    assert space.embed_batch([np.ones(15 * SR - 3, np.float32)]).shape == (1, 4, 4)
    with pytest.raises(B2MError, match="shorter than its windows"):
        space.embed_batch([np.ones(12 * SR, np.float32)])
    with pytest.raises(B2MError, match="window_s"):
        WindowedSpace(BandEnergy(), window_s=20.0, stride_s=1.5, clip_s=15.0)
    with pytest.raises(B2MError, match="L = 1"):
        WindowedSpace(WindowedSpace(BandEnergy(), window_s=10.0, stride_s=1.5, clip_s=15.0), window_s=10.0,
                      stride_s=1.5, clip_s=15.0)


def test_windowed_acoustic_composes_the_acoustic_config():
    space = packaged_space("acoustic_windows")  # Brain2Music's 10 s windows every 1.5 s of 15 s
    inner = packaged_space("acoustic")
    assert space.config["inner"] == "acoustic" and space.config["inner_config"] == inner.config
    assert space.sample_rate == inner.sample_rate and space.shape == (4, inner.shape[1])
    wave = np.random.default_rng(2).standard_normal(15 * inner.sample_rate).astype(np.float32)
    emb = space.embed_batch([wave])
    lo, hi = space.window_bounds()[2]
    np.testing.assert_allclose(emb[0, 2], inner.embed_batch([wave[lo:hi]])[0, 0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("choice, shape", [
    ("caption", (1, 384)), ("musicgen_text", (1, 32)), ("acoustic_windows", (4, 64 + 8 * 6)),
])
def test_target_configs_build_their_space(choice, shape):
    assert packaged_space(choice).shape == shape
