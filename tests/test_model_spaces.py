"""The field's embedding spaces (CLAP, MERT-class, EnCodec, MusicGen LM): parity with transformers'
own forward, windows, weights from a folder or the Hugging Face cache, and train.py end to end."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from b2m.core.config import compose
from b2m.core.errors import B2MError
from b2m.targets.frames import delayed_codes, musicgen_folder, pool_windows
from b2m.targets.pretrained import model_folder
from helpers.spaces import packaged_space

SPACES = ("clap", "clap_text", "mert", "encodec", "musicgen_lm")


def waves(space, n: int = 3, seconds: float = 15.0, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * space.sample_rate)) / space.sample_rate
    return [(0.3 * np.sin(2 * np.pi * (110 * (i + 1)) * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
            for i in range(n)]


def test_clap_audio_and_text_match_transformers():
    audio, text = packaged_space("clap"), packaged_space("clap_text")
    assert audio.model is text.model  # one joint space
    items = waves(audio, 2)
    got = audio.embed_batch(items)
    sr = audio.sample_rate
    expected = []
    for wave in items:
        windows = [wave[int(s * sr):int(s * sr) + 10 * sr] for s in (0.0, 5.0)]
        with torch.no_grad():
            out = audio.model.get_audio_features(**audio.processor(audio=windows, sampling_rate=sr,
                                                                   return_tensors="pt"))
        emb = F.normalize(getattr(out, "pooler_output", out), dim=-1).mean(0)
        expected.append(F.normalize(emb, dim=-1).numpy())
    np.testing.assert_allclose(got[:, 0], np.stack(expected), atol=1e-5)
    captions = ["a calm jazz track with piano", "loud metal with guitar and drums"]
    with torch.no_grad():
        out = text.model.get_text_features(**text.processor(text=captions, padding=True, return_tensors="pt"))
    np.testing.assert_allclose(text.embed_batch(captions)[:, 0],
                               F.normalize(getattr(out, "pooler_output", out), dim=-1).numpy(), atol=1e-5)
    assert got.shape == (2, 1, 32) and np.allclose(np.linalg.norm(got, axis=-1), 1.0, atol=1e-5)


def test_frame_spaces_match_transformers_and_pool_per_window():
    mert = packaged_space("mert")
    items = waves(mert, 2)
    inputs = mert.extractor(items, sampling_rate=24_000, return_tensors="pt")
    with torch.no_grad():
        hidden = mert.model(inputs["input_values"], output_hidden_states=True).hidden_states[2]
    np.testing.assert_allclose(mert.embed_batch(items)[:, 0], hidden.mean(1).numpy(), atol=1e-5)

    codec = packaged_space("encodec")
    items = waves(codec, 2)
    with torch.no_grad():
        latents = codec.codec.encoder(torch.from_numpy(np.stack(items))[:, None])  # [N, D, T]
    np.testing.assert_allclose(codec.embed_batch(items)[:, 0], latents.mean(-1).numpy(), atol=1e-5)
    # Brain2Music's windows: 10 s every 1.5 s over 15 s, four of them, each the mean of its frames.
    windowed = packaged_space("encodec", window_s=10.0, stride_s=1.5)
    emb = windowed.embed_batch(items)
    assert emb.shape == (2, 4, codec.dim)
    frames = latents.transpose(1, 2)  # 50 Hz
    np.testing.assert_allclose(emb[:, 1], frames[:, 75:575].mean(1).numpy(), atol=1e-5)
    with pytest.raises(B2MError, match="encodec: need 0 < window_s <= clip_s"):
        packaged_space("encodec", window_s=20.0)


def test_musicgen_lm_is_teacher_forced_with_the_delay_pattern():
    codes = torch.tensor([[[1, 2, 3], [4, 5, 6]]])  # [N=1, K=2, T=3]
    pad = 9
    # Codebook k's frame f at position f + k + 1, the start token (pad) at 0: MusicGen's delay pattern.
    np.testing.assert_array_equal(delayed_codes(codes, pad).numpy(),
                                  [[[9, 1, 2, 3, 9], [9, 9, 4, 5, 6]]])
    lm = packaged_space("musicgen_lm")
    items = waves(lm, 2, seconds=15.0)
    emb = lm.embed_batch(items)
    assert emb.shape == (2, 1, 64) and np.isfinite(emb).all()
    # Causal: the state of the first frames does not depend on the audio that follows them.
    x = torch.from_numpy(np.stack(items))
    changed = x.clone()
    changed[:, 10 * 32_000:] = 0.0
    with torch.no_grad():
        a, b = lm.frames(x), lm.frames(changed)
    np.testing.assert_allclose(a[:, :400].numpy(), b[:, :400].numpy(), atol=1e-5)
    assert not np.allclose(a[:, -50:].numpy(), b[:, -50:].numpy())
    with pytest.raises(B2MError, match="musicgen_lm.layer: 5 is outside 0-2"):
        packaged_space("musicgen_lm", layer=5)


def test_pool_windows_needs_frames_in_each_window():
    states = torch.arange(10, dtype=torch.float32).reshape(1, 10, 1)  # 10 frames at 2 Hz: 5 s
    np.testing.assert_allclose(pool_windows(states, 2.0, [0.0, 2.5], 2.5)[0, :, 0].numpy(), [2.0, 7.0])
    with pytest.raises(B2MError, match="holds no frame"):
        pool_windows(states, 2.0, [6.0], 2.5)


def test_mert_refuses_remote_code_unless_asked(tmp_path):
    folder = tmp_path / "mert-v1"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "mert_model"}')
    with pytest.raises(B2MError, match="own code; set target.trust_remote_code=true"):
        packaged_space("mert", weights=str(folder))


def fake_hub_cache(root: Path, repo: str, source: Path) -> Path:
    """The local Hugging Face cache layout (models--org--name/snapshots/<rev>, refs/main) holding `source`."""
    folder = root / f"models--{repo.replace('/', '--')}"
    shutil.copytree(source, folder / "snapshots" / "0123abcd")
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0123abcd")
    return folder / "snapshots" / "0123abcd"


def test_hub_ids_resolve_through_the_local_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from b2m.reconstruction.musicgen.builders import build_generator

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    lm = packaged_space("musicgen_lm")
    source = musicgen_folder("tiny", "test")  # the offline model, in the real format
    snapshot = fake_hub_cache(tmp_path / "hub", "facebook/musicgen-small", source)
    assert model_folder("facebook/musicgen-small", "generator.weights") == snapshot
    space = packaged_space("musicgen_lm", weights="facebook/musicgen-small")
    items = waves(space, 1)
    np.testing.assert_allclose(space.embed_batch(items), lm.embed_batch(items), atol=1e-6)
    engine, codec = build_generator(compose("generate", ["generator=tiny", "generator.name=pretrained",
                                                         "generator.weights=facebook/musicgen-small"]).generator)
    assert engine.cfg.n_layers == 2
    with pytest.raises(B2MError, match=r"facebook/musicgen-medium is not in the local Hugging Face cache .*"
                                       r"huggingface-cli download facebook/musicgen-medium"):
        model_folder("facebook/musicgen-medium", "generator.weights")
    with pytest.raises(B2MError, match="target.weights: no/such/thing is neither a model folder nor a"):
        model_folder("no/such/thing", "target.weights")


@pytest.mark.parametrize("name", SPACES)
def test_train_runs_offline_in_every_space(name, bids, tmp_path):
    from b2m.jobs.train import train

    cfg = compose("train", [f"data.root={bids}", "data.preprocess.mask=null", f"target={name}",
                            f"out_dir={tmp_path / 'run'}", "decoder.n_folds=3", "trainer.logger=none"])
    metrics = train(cfg)
    assert 0.0 <= metrics["test/id_acc"] <= 1.0
    saved = np.load(tmp_path / "run" / "predictions" / "sub-001.npz")
    assert saved["pred"].shape[1:] == packaged_space(name).shape


def test_mert_without_an_extractor_file_uses_the_configs_rate(tmp_path):
    import json

    folder = Path(shutil.copytree(model_folder_of_tiny_mert(), tmp_path / "mert-v0"))
    (folder / "preprocessor_config.json").unlink()
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "sample_rate": 16_000}))
    space = packaged_space("mert", weights=str(folder))
    assert space.sample_rate == 16_000 and space.embed_batch(waves(space, 1)).shape == (1, 1, 32)


def model_folder_of_tiny_mert() -> Path:
    from b2m.targets.frames import write_tiny_hubert
    from b2m.targets.pretrained import offline_model

    return offline_model("hubert-tiny", {}, write_tiny_hubert)


def test_brain2music_comparison_end_to_end(bids, tmp_path, monkeypatch, capsys):
    from b2m.experiments import brain2music

    out = tmp_path / "b2m"
    args = ["--spaces", "acoustic", "clap", "musicnn", "--out", str(out), "--n-boot", "20", f"data.root={bids}",
            "data.preprocess.mask=null", "decoder.n_folds=3"]
    assert brain2music.main(args) == 0
    table = (out / "table.md").read_text()
    assert "| acoustic | audio | ridge |" in table and "| clap | audio | ridge |" in table
    assert "| musicnn | audio | ridge |" in table  # the trained tagger, offline
    assert (out / "table.png").read_bytes()[:4] == b"\x89PNG"
    # A second call finds every run done and trains nothing.
    monkeypatch.setattr(brain2music, "train", lambda cfg: (_ for _ in ()).throw(AssertionError("retrained")))
    assert brain2music.main(args) == 0
    assert brain2music.main(["--spaces", "nope", "--out", str(out)]) == 2
    assert "--spaces: no target config 'nope'" in capsys.readouterr().err
    assert brain2music.main(["--spaces", "clap", "--weights", "mert=x", "--out", str(out)]) == 2


def test_broken_model_folders_are_one_line_errors(tmp_path):
    folder = Path(shutil.copytree(musicgen_folder("tiny", "test"), tmp_path / "broken"))
    (folder / "config.json").write_text('{"model_type": "musicgen", "decoder": 3}')
    with pytest.raises(B2MError, match="broken: cannot load MusicgenForConditionalGeneration") as err:
        packaged_space("musicgen_lm", weights=str(folder))
    assert "\n" not in str(err.value)
    with pytest.raises(B2MError, match="clap: need 0 < window_s <= clip_s and stride_s > 0"):
        packaged_space("clap", stride_s=0.0)


def tiny_folder(name: str) -> Path:
    """The offline model folder that space `name` reads with `weights: tiny` (encodec: the tiny
    MusicGen's codec, saved alone as an EnCodec folder)."""
    from b2m.targets.clap import write_tiny_clap
    from b2m.targets.pretrained import offline_model

    if name == "clap":
        return offline_model("clap-tiny", {}, write_tiny_clap)
    if name == "mert":
        return model_folder_of_tiny_mert()
    if name == "encodec":
        return offline_model("encodec-tiny", {}, _write_tiny_encodec)
    return musicgen_folder("tiny", "test")


def _write_tiny_encodec(folder: Path) -> None:
    from transformers import EncodecFeatureExtractor

    from b2m.targets.pretrained import random_musicgen

    random_musicgen("tiny").audio_encoder.save_pretrained(folder)
    EncodecFeatureExtractor(feature_size=1, sampling_rate=32_000).save_pretrained(folder)


# Each space with the transformers class that loads its weights.
MODEL_CLASSES = {"clap": "ClapModel", "mert": "HubertModel", "encodec": "EncodecModel",
                 "musicgen_lm": "MusicgenForConditionalGeneration"}


@pytest.mark.parametrize("name", MODEL_CLASSES)
def test_weights_with_missing_tensors_are_refused(name, tmp_path):
    from safetensors.torch import load_file, save_file

    packaged_space(name, weights=str(tiny_folder(name)))  # the intact folder loads: no tensor reported missing
    folder = Path(shutil.copytree(tiny_folder(name), tmp_path / name))
    tensors = load_file(folder / "model.safetensors")
    kept = {k: v for i, (k, v) in enumerate(sorted(tensors.items())) if i % 3}
    save_file(kept, folder / "model.safetensors", {"format": "pt"})
    with pytest.raises(B2MError, match=rf"{name}: {len(tensors) - len(kept)} tensors of {MODEL_CLASSES[name]} are "
                                       r"missing from the weights files \(.+, .+, .+ and \d+ more\); the files are "
                                       r"incomplete or hold another model") as err:
        packaged_space(name, weights=str(folder))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", MODEL_CLASSES)
@pytest.mark.parametrize("text,message", [
    ('{"model_type": "clap",', r"not valid JSON \(.+ at line 1, column \d+\)"),
    ('[{"model_type": "clap"}]', r"a JSON list where a model config \(a JSON object\) belongs"),
    ('"clap"', r"a JSON str where a model config \(a JSON object\) belongs"),
])
def test_a_broken_config_json_names_the_file(name, text, message, tmp_path):
    folder = Path(shutil.copytree(tiny_folder(name), tmp_path / name))
    (folder / "config.json").write_text(text)
    with pytest.raises(B2MError, match=rf"{folder / 'config.json'}: {message}"):
        packaged_space(name, weights=str(folder))


def test_weights_of_another_model_type_are_refused(tmp_path):
    with pytest.raises(B2MError, match=r"config.json: a 'hubert' model, not the 'clap' model that ClapModel loads"):
        packaged_space("clap", weights=str(model_folder_of_tiny_mert()))
    with pytest.raises(B2MError, match=r"model.safetensors: not a readable safetensors file \(.*header"):
        folder = Path(shutil.copytree(tiny_folder("mert"), tmp_path / "mert"))
        (folder / "model.safetensors").write_bytes(b"\x00" * 64)
        packaged_space("mert", weights=str(folder))


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_offline_models_follow_the_umask(umask, tmp_path, monkeypatch):
    import os
    import tempfile

    from b2m.targets.frames import write_tiny_hubert
    from b2m.targets.pretrained import offline_model

    def build(folder: Path) -> None:
        write_tiny_hubert(folder)  # transformers writes model.safetensors 0600
        extra = Path(tempfile.mkdtemp(dir=folder))  # a 0700 folder, as a builder may leave one
        (extra / "notes.txt").write_text("x")

    monkeypatch.setenv("B2M_CACHE", str(tmp_path))
    before = os.umask(umask)
    try:
        folder = offline_model("hubert-umask", {}, build)
    finally:
        os.umask(before)
    paths = [folder, *folder.rglob("*")]
    assert {p.name for p in paths} >= {"model.safetensors", "notes.txt"} and len(paths) == 6
    for path in paths:
        mode = path.stat().st_mode & 0o777
        assert mode == (0o777 if path.is_dir() else 0o666) & ~umask, (path, oct(mode))
