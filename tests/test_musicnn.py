"""musicnn in torch (b2m/targets/musicnn.py) and the TensorFlow checkpoint reader (b2m/targets/tfbundle.py),
on the real checkpoints of the `musicnn==0.1.0` wheel (scripts/setup.sh installs it with --no-deps)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from b2m.core.errors import B2MError
from b2m.targets import musicnn as mn
from b2m.targets.tfbundle import masked_crc32c, read_bundle

SR = mn.SAMPLE_RATE


def sine(seconds: float, hz: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.fixture(scope="module")
def mtt_checkpoint() -> Path:
    return mn.checkpoint_folder("MTT_musicnn")


@pytest.fixture(scope="module")
def mtt() -> mn.MusicnnModel:
    return mn.load_musicnn("MTT_musicnn")


def copy_checkpoint(source: Path, target: Path) -> Path:
    target.mkdir()
    for name in (".index", ".data-00000-of-00001"):
        shutil.copyfile(source / name, target / name)
    return target


def assert_one_line_error(call, *words: str) -> str:
    with pytest.raises(B2MError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message
    return message


# ----------------------------------------------------------------- the checkpoint reader
def test_crc32c_of_the_known_vector():
    import google_crc32c

    assert google_crc32c.value(b"123456789") == 0xE3069283  # RFC 3720's check value
    crc = 0xE3069283
    assert masked_crc32c(b"123456789") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def test_reader_on_the_wheels_checkpoint(mtt_checkpoint):
    weights = read_bundle(mtt_checkpoint)
    assert len(weights) == 64
    assert sum(w.size for w in weights.values()) == 792_079
    assert all(w.dtype == np.float32 for w in weights.values())
    assert weights["conv2d/kernel"].shape == (7, 38, 1, 204)
    assert weights["dense/kernel"].shape == (1506, 200)
    assert np.isfinite(weights["conv2d_5/kernel"]).all() and weights["conv2d_5/kernel"].std() > 0
    everything = read_bundle(mtt_checkpoint, optimizer=True)
    assert len(everything) == 150 and {"beta1_power", "dense/kernel/Adam", "dense/kernel/Adam_1"} <= set(everything)
    np.testing.assert_array_equal(everything["conv2d/kernel"], weights["conv2d/kernel"])


@pytest.mark.parametrize("where", [0.05, 0.5, 0.95])  # model tensors and Adam slots: every byte is checked
def test_a_flipped_byte_in_the_data_is_refused(mtt_checkpoint, tmp_path, where):
    folder = copy_checkpoint(mtt_checkpoint, tmp_path / "ckpt")
    data = folder / ".data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[int(where * len(raw))] ^= 0x01
    data.write_bytes(bytes(raw))
    assert_one_line_error(lambda: read_bundle(folder), str(data), "CRC32C")


def test_a_truncated_index_and_data_are_refused(mtt_checkpoint, tmp_path):
    folder = copy_checkpoint(mtt_checkpoint, tmp_path / "ckpt")
    index, data = folder / ".index", folder / ".data-00000-of-00001"
    good = index.read_bytes()
    index.write_bytes(good[:-100])
    assert_one_line_error(lambda: read_bundle(folder), str(index))
    index.write_bytes(good)
    data.write_bytes(data.read_bytes()[:1000])
    assert_one_line_error(lambda: read_bundle(folder), str(data), "truncated")


def test_damage_anywhere_in_the_index_is_refused_or_harmless(mtt_checkpoint, tmp_path):
    """A flipped byte fails a block's CRC, the footer's magic or its handles; a flip in the footer's unused
    padding changes nothing that is read (the same tensors come back)."""
    folder = copy_checkpoint(mtt_checkpoint, tmp_path / "ckpt")
    index = folder / ".index"
    good = index.read_bytes()
    reference = read_bundle(mtt_checkpoint)
    positions = sorted({*range(0, len(good), len(good) // 24), *range(len(good) - 48, len(good), 4)})
    refused = 0
    for position in positions:
        raw = bytearray(good)
        raw[position] ^= 0x10
        index.write_bytes(bytes(raw))
        try:
            weights = read_bundle(folder)
        except B2MError as err:
            assert "\n" not in str(err) and str(index) in str(err)
            refused += 1
        else:
            assert weights.keys() == reference.keys()
            assert all(np.array_equal(weights[k], reference[k]) for k in reference)
    assert refused >= len(positions) // 2


def test_foreign_and_missing_files_are_refused(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    assert_one_line_error(lambda: read_bundle(folder), str(folder / ".index"), "cannot read")
    (folder / ".index").write_text("model_checkpoint_path: 'x'\n" * 10)
    assert_one_line_error(lambda: read_bundle(folder), str(folder / ".index"), "not a TensorFlow checkpoint")
    # A prefix that is not a folder names files beside it: <prefix>.index
    assert_one_line_error(lambda: read_bundle(tmp_path / "model.ckpt"), str(tmp_path / "model.ckpt.index"))


# ----------------------------------------------------------------- the front end
def test_the_mel_filterbank_is_librosas():
    librosa = pytest.importorskip("librosa")
    reference = librosa.filters.mel(sr=16000, n_fft=512, n_mels=96, htk=False, norm="slaney")
    ours = mn.mel_filterbank()
    assert ours.shape == (96, 257) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=0)
    # Another rate and band limits take the same path.
    np.testing.assert_allclose(mn.mel_filterbank(22050, 1024, 40, fmin=50.0, fmax=9000.0),
                               librosa.filters.mel(sr=22050, n_fft=1024, n_mels=40, fmin=50.0, fmax=9000.0,
                                                   htk=False, norm="slaney"), rtol=1e-6, atol=0)


def test_the_log_mel_is_musicnns_with_reflect_padding():
    """musicnn's batch_data: librosa (0.7's reflect padding of the edges) -> float16 -> log10(10000 x + 1)."""
    librosa = pytest.importorskip("librosa")
    wave = (0.1 * np.random.default_rng(0).standard_normal(5 * SR)).astype(np.float32) + sine(5, 1000.0, 0.3)
    mel = librosa.feature.melspectrogram(y=wave, sr=SR, n_fft=512, hop_length=256, n_mels=96, pad_mode="reflect")
    reference = np.log10(10000 * mel.T.astype(np.float16).astype(np.float32) + 1)
    ours = mn.log_mel(wave)
    assert ours.shape == reference.shape == (1 + len(wave) // 256, 96) and ours.dtype == np.float32
    # Identical but where a float summation order moves a value across a float16 rounding step.
    assert np.abs(ours - reference).max() < 5e-4
    assert (ours == reference).mean() > 0.999
    # Loud input stays finite (numpy 2 would overflow float16 in musicnn's own formula).
    assert np.isfinite(mn.log_mel(sine(1, 100.0, 1.0) * 50)).all()


def test_patches():
    assert mn.musicnn_patches(np.zeros(60 * SR, np.float32)).shape == (20, 187, 96)
    assert mn.musicnn_patches(np.zeros(186 * 256, np.float32)).shape == (1, 187, 96)  # exactly 187 frames
    # Shorter than a patch: its frames repeated to one patch.
    short = sine(1.0)
    frames = mn.log_mel(short)
    (patch,) = mn.musicnn_patches(short)
    n = len(frames)
    np.testing.assert_array_equal(patch[:n], frames)
    np.testing.assert_array_equal(patch[n:2 * n], frames)
    # The tail after the last whole patch is left out, as musicnn does.
    wave = sine(7.0)
    np.testing.assert_array_equal(mn.musicnn_patches(wave)[1], mn.log_mel(wave)[187:374])
    assert_one_line_error(lambda: mn.musicnn_patches(np.zeros(0, np.float32)), "1-D and non-empty")
    assert_one_line_error(lambda: mn.musicnn_patches(np.zeros((2, SR), np.float32)), "1-D")
    assert_one_line_error(lambda: mn.musicnn_patches(np.full(SR, np.nan, np.float32)), "NaN")


# ----------------------------------------------------------------- the network
@pytest.mark.parametrize("model", ["MTT_musicnn", "MSD_musicnn"])
def test_output_shapes(model):
    network = mn.load_musicnn(model)
    assert not network.training
    patches = torch.from_numpy(mn.musicnn_patches(np.random.default_rng(1).standard_normal(7 * SR) * 0.1))
    with torch.inference_mode():
        out = network(patches)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "penultimate": (2, 200), "mean_pool": (2, 753), "max_pool": (2, 753), "taggram": (2, 50)}
    assert all(torch.isfinite(v).all() for v in out.values())
    assert len(mn.TAGS[model]) == 50


def test_a_sine_is_tagged_deterministically_and_signals_differ(mtt):
    first = mn.musicnn_features(mtt, sine(6.0))
    assert {k: v.shape for k, v in first.items()} == {
        "penultimate": (2, 200), "mean_pool": (2, 753), "max_pool": (2, 753), "taggram": (2, 50)}
    again = mn.musicnn_features(mtt, sine(6.0))
    for name in first:
        np.testing.assert_array_equal(again[name], first[name])
    # Another batch size changes only the float rounding of the convolutions.
    one_by_one = mn.musicnn_features(mtt, sine(6.0), batch_size=1)
    for name in first:
        np.testing.assert_allclose(one_by_one[name], first[name], rtol=1e-5, atol=2e-5)
    assert ((first["taggram"] > 0) & (first["taggram"] < 1)).all()
    # max_pool >= mean_pool channel by channel: they are the max and the mean over the same frames.
    assert (first["max_pool"] >= first["mean_pool"] - 1e-6).all()
    noise = mn.musicnn_features(mtt, (0.1 * np.random.default_rng(2).standard_normal(6 * SR)).astype(np.float32))
    distance = np.linalg.norm(noise["penultimate"] - first["penultimate"], axis=1)
    assert (distance > 0.1 * np.linalg.norm(first["penultimate"], axis=1)).all()


def test_the_tags_and_licence_are_the_wheels(mtt_checkpoint):
    from musicnn import configuration  # no TensorFlow in this module of the wheel

    assert mn.TAGS == {"MTT_musicnn": configuration.MTT_LABELS, "MSD_musicnn": configuration.MSD_LABELS}
    from importlib.metadata import distribution

    licence = distribution("musicnn").read_text("LICENSE.md")
    assert licence is not None and licence.split() == mn.MUSICNN_LICENSE.split()
    assert " ".join(licence.split()) in " ".join(mn.__doc__.split())


# ----------------------------------------------------------------- the cache
def test_the_conversion_is_cached_with_the_licence(tmp_path, monkeypatch):
    monkeypatch.setenv("B2M_CACHE", str(tmp_path))
    old = os.umask(0o027)
    try:
        first = mn.load_musicnn("MTT_musicnn")
    finally:
        os.umask(old)
    (folder,) = (tmp_path / "models").glob("musicnn-MTT_musicnn-*")
    weights = folder / "model.safetensors"
    assert stat.S_IMODE(weights.stat().st_mode) == 0o640
    assert stat.S_IMODE((folder / "NOTICE").stat().st_mode) == 0o640
    assert "Universitat Pompeu Fabra" in (folder / "NOTICE").read_text()
    # The second load reads the cache (no conversion).
    monkeypatch.setattr(mn, "read_bundle", lambda *a, **k: pytest.fail("converted again"))
    second = mn.load_musicnn("MTT_musicnn")
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_damaged_or_foreign_cache_is_converted_again(tmp_path, monkeypatch):
    monkeypatch.setenv("B2M_CACHE", str(tmp_path))
    reference = mn.load_musicnn("MTT_musicnn").state_dict()
    (weights,) = (tmp_path / "models").glob("musicnn-MTT_musicnn-*/model.safetensors")
    from safetensors.torch import save_file

    for damage in ("truncated", "foreign"):
        if damage == "truncated":
            weights.write_bytes(weights.read_bytes()[:5000])
        else:  # written by another conversion: its metadata names no source digest
            save_file({k: torch.zeros_like(v) for k, v in reference.items()}, str(weights))
        reloaded = mn.load_musicnn("MTT_musicnn").state_dict()
        assert all(torch.equal(reloaded[k], v) for k, v in reference.items()), damage


def test_without_the_wheel(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "musicnn" else real(name, *a))
    assert_one_line_error(lambda: mn.load_musicnn("MTT_musicnn"), "pip install --no-deps musicnn==0.1.0")
    assert_one_line_error(lambda: mn.load_musicnn("MTT_vgg"), "unknown model")


# ----------------------------------------------------------------- parity with musicnn's TensorFlow code
GOLDEN = Path(__file__).parent / "data" / "musicnn_golden.npz"


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    """musicnn's own outputs (TensorFlow 2.15.1, librosa 0.10 with reflect padding), written by
    scripts/musicnn_golden.py for the signals of tests/helpers/musicnn_signals.py."""
    import json

    from helpers import musicnn_signals as ms

    with np.load(GOLDEN, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    # The waveforms are regenerated here: their definitions must be the ones the file was made from.
    assert json.loads(str(arrays["signal_params"])) == json.loads(json.dumps(ms.SIGNAL_PARAMS, sort_keys=True))
    assert list(arrays["signals"]) == list(ms.SIGNALS)
    assert json.loads(str(arrays["preprocessing"]))["pad_mode"] == "reflect"
    return arrays


def test_patches_equal_musicnns(golden):
    from helpers import musicnn_signals as ms

    for name in ms.SIGNALS:
        wave = ms.signal(name)
        assert len(mn.log_mel(wave)) == int(golden[f"n_frames/{name}"])
        ours, theirs = mn.musicnn_patches(wave), golden[f"patches/{name}"]
        assert ours.shape == theirs.shape, name
        # Bit for bit but where float32 sums in another order land a mel value on the other side of a
        # float16 rounding step (a few values of tone2s: 2.9e-4 in the log).
        assert np.abs(ours - theirs).max() < 5e-4, name
        assert (ours == theirs).mean() > 0.999, name


@pytest.mark.parametrize("model", ["MTT_musicnn", "MSD_musicnn"])
def test_outputs_equal_musicnns(golden, model):
    """Every feature of every patch against TensorFlow's, on its patches and end to end (our patches of the
    regenerated waveforms): the taggram and penultimate within 1e-4; the pools within 1e-4 of their largest
    value. The pools are raw activations up to 90, where float32 rounding over the convolutions leaves
    TensorFlow itself 2.9e-4 from a float64 evaluation of the same network: an absolute 1e-4 there would
    test rounding, not the port (the port's worst is 1.6e-5 of the scale). Top-5 tags of every patch identical."""
    from helpers import musicnn_signals as ms

    network = mn.load_musicnn(model)
    assert list(golden[f"{model}/tags"]) == mn.TAGS[model]
    for name in ms.SIGNALS:
        theirs = {f: golden[f"{model}/{name}/{f}"] for f in mn.FEATURE_SIZES}
        with torch.inference_mode():
            ours = {f: v.numpy() for f, v in network(torch.from_numpy(golden[f"patches/{name}"])).items()}
        end_to_end = mn.musicnn_features(network, ms.signal(name))
        for outputs in (ours, end_to_end):
            for feature in ("taggram", "penultimate"):
                np.testing.assert_allclose(outputs[feature], theirs[feature], rtol=0, atol=1e-4,
                                           err_msg=f"{model} {name} {feature}")
            for feature in ("mean_pool", "max_pool"):
                scale = max(1.0, float(np.abs(theirs[feature]).max()))
                np.testing.assert_allclose(outputs[feature], theirs[feature], rtol=0, atol=1e-4 * scale,
                                           err_msg=f"{model} {name} {feature}")
            np.testing.assert_array_equal(np.argsort(-outputs["taggram"], axis=1)[:, :5],
                                          np.argsort(-theirs["taggram"], axis=1)[:, :5], err_msg=f"{model} {name}")


@pytest.mark.parametrize("layer", ["penultimate", "taggram"])
def test_the_musicnn_space_averages_the_patches_of_each_window(layer):
    from b2m.core.config import group_config
    from b2m.targets import build_space
    from omegaconf import OmegaConf

    cfg = OmegaConf.merge(group_config("target", "musicnn"), {"layer": layer, "window_s": 6.0, "stride_s": 3.0,
                                                              "clip_s": 9.0})
    space = build_space(cfg)
    wave = sine(9.0, 330.0)
    emb = space.embed_batch([wave, sine(4.0, 880.0)])
    assert emb.shape == (2, 2, mn.FEATURE_SIZES[layer]) == (2, *space.shape)
    per_patch = mn.musicnn_features(mn.load_musicnn("MTT_musicnn"), wave)[layer]  # 3 patches of 2.99 s
    # Window [0, 6) s holds the patches centred at 1.5 and 4.5 s; [3, 9) those at 4.5 and 7.5 s.
    assert np.allclose(emb[0, 0], per_patch[:2].mean(0), atol=1e-5)
    assert np.allclose(emb[0, 1], per_patch[1:].mean(0), atol=1e-5)
    assert len(space.tags) == 50 and space.modality == "audio"


def test_a_bad_musicnn_config_is_one_line():
    from b2m.targets.frames import MusicnnSpace

    assert_one_line_error(lambda: MusicnnSpace("mtx", "taggram", 15.0, 15.0, 15.0), "musicnn.weights", "mtx")
    assert_one_line_error(lambda: MusicnnSpace("mtt", "logits", 15.0, 15.0, 15.0), "musicnn.layer", "logits")
