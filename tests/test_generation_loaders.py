"""Weight loading: transformers' folder format, audiocraft packages, safe unpickling, shape checks."""

import collections
import os

import pytest
import torch
from omegaconf import OmegaConf

from b2m.core.errors import B2MError
from b2m.targets.pretrained import random_musicgen
from b2m.reconstruction.musicgen.lm import SamplingConfig
from b2m.reconstruction.musicgen.loaders import lm_from_audiocraft, lm_from_transformers, load_transformers


@pytest.fixture(scope="module")
def reference():
    return random_musicgen("tiny", seed=3)


def audiocraft_state(model) -> dict:
    """The tiny transformers model's decoder under audiocraft's names, following transformers'
    conversion script (convert_musicgen_transformers.py) in reverse."""
    sd = model.state_dict()
    out = {}
    for name, value in sd.items():
        if name.startswith("decoder.model.decoder.embed_tokens."):
            out["emb." + name.split("embed_tokens.")[1]] = value
        elif name.startswith("decoder.lm_heads."):
            out["linears." + name.split("lm_heads.")[1]] = value
        elif name.startswith("decoder.model.decoder.layer_norm."):
            out["out_norm." + name.rsplit(".", 1)[1]] = value
        elif name.startswith("enc_to_dec_proj."):
            out["condition_provider.conditioners.description.output_proj." + name.rsplit(".", 1)[1]] = value
    renames = {"self_attn_layer_norm": "norm1", "encoder_attn_layer_norm": "norm_cross", "final_layer_norm": "norm2",
               "fc1": "linear1", "fc2": "linear2"}
    for i in range(model.config.decoder.num_hidden_layers):
        src = f"decoder.model.decoder.layers.{i}."
        dst = f"transformer.layers.{i}."
        for theirs, ours in renames.items():
            for suffix in ("weight", "bias"):
                if f"{src}{theirs}.{suffix}" in sd:
                    out[f"{dst}{ours}.{suffix}"] = sd[f"{src}{theirs}.{suffix}"]
        for theirs, ours in (("self_attn", "self_attn"), ("encoder_attn", "cross_attention")):
            out[f"{dst}{ours}.in_proj_weight"] = torch.cat([sd[f"{src}{theirs}.{p}_proj.weight"] for p in "qkv"])
            out[f"{dst}{ours}.out_proj.weight"] = sd[f"{src}{theirs}.out_proj.weight"]
    return out


def xp_cfg(num_heads: int):
    return OmegaConf.create({
        "transformer_lm": {"num_heads": num_heads, "activation": "gelu", "norm_first": True, "bias_ff": False,
                           "bias_attn": False, "positional_embedding": "sin", "cross_attention": True},
        "codebooks_pattern": {"modeling": "delay", "delay": {"delays": [0, 1, 2, 3]}}})


def test_transformers_folder_round_trip(tmp_path, reference):
    reference.save_pretrained(tmp_path / "musicgen")
    loaded = lm_from_transformers(load_transformers(tmp_path / "musicgen"))
    direct = lm_from_transformers(reference)
    for name, value in direct.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[name]), name


def test_transformers_folder_missing(tmp_path):
    with pytest.raises(B2MError, match="config.json"):
        load_transformers(tmp_path)


def test_audiocraft_package_gives_the_same_model(tmp_path, reference):
    path = tmp_path / "state_dict.bin"
    torch.save({"best_state": audiocraft_state(reference), "xp.cfg": xp_cfg(4), "version": "1.0"}, path)
    lm = lm_from_audiocraft(path)
    direct = lm_from_transformers(reference)
    cond = torch.randn(2, 3, 32, generator=torch.Generator().manual_seed(0))
    greedy = SamplingConfig(greedy=True)
    assert torch.equal(lm.generate(cond, 8, sampling=greedy), direct.generate(cond, 8, sampling=greedy))
    for name, value in direct.state_dict().items():
        assert torch.equal(value, lm.state_dict()[name]), name


def test_audiocraft_wrong_heads_or_shapes(tmp_path, reference):
    state = audiocraft_state(reference)
    state["transformer.layers.1.linear2.weight"] = state["transformer.layers.1.linear2.weight"][:, :100]
    path = tmp_path / "state_dict.bin"
    torch.save({"best_state": state, "xp.cfg": xp_cfg(4)}, path)
    with pytest.raises(B2MError, match=r"linear2\.weight.*shape"):
        lm_from_audiocraft(path)
    cfg = xp_cfg(4)
    cfg.codebooks_pattern.delay.delays = [0, 0, 0, 0]
    torch.save({"best_state": audiocraft_state(reference), "xp.cfg": cfg}, path)
    with pytest.raises(B2MError, match="delays"):
        lm_from_audiocraft(path)


class Payload:
    """A class outside the allow-list: unpickling it would run its code."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_audiocraft_refuses_arbitrary_pickles(tmp_path):
    path = tmp_path / "state_dict.bin"
    torch.save({"best_state": {}, "xp.cfg": collections.OrderedDict(a=Payload())}, path)
    with pytest.raises(B2MError, match="not a loadable audiocraft checkpoint"):
        lm_from_audiocraft(path)


def test_caption_conditioning_matches_transformers_text_path(reference):
    from b2m.reconstruction.musicgen.loaders import caption_conditioning

    def tokenizer(captions, padding, return_tensors):  # stands in for the folder's T5 tokenizer
        ids = [[3 + ord(c) % 100 for c in caption] for caption in captions]
        width = max(map(len, ids))
        return {"input_ids": torch.tensor([row + [0] * (width - len(row)) for row in ids]),
                "attention_mask": torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids])}

    captions = ["slow blues", "fast jazz with brass"]
    cond, mask = caption_conditioning(reference, tokenizer, captions)
    assert cond.shape == (2, len(captions[1]), 32) and mask[0].sum() == len(captions[0])
    inputs = tokenizer(captions, padding=True, return_tensors="pt")
    captured = {}
    decode = reference.audio_encoder.decode

    def spy(codes, *args, **kwargs):
        captured["codes"] = codes
        return decode(codes, *args, **kwargs)

    reference.audio_encoder.decode = spy
    try:
        with torch.no_grad():
            reference.generate(**inputs, do_sample=False, guidance_scale=3.0, max_new_tokens=10)
    finally:
        reference.audio_encoder.decode = decode
    lm = lm_from_transformers(reference)
    ours = lm.generate(cond, 7, cond_mask=mask, guidance_scale=3.0, sampling=SamplingConfig(greedy=True))
    assert torch.equal(ours, captured["codes"][0])


@pytest.mark.parametrize("audiocraft_name,expected", [
    # expected names from transformers' convert_encodec_checkpoint_to_pytorch.py tables
    ("decoder.model.3.convtr.convtr.weight_g", "decoder.layers.3.conv.parametrizations.weight.original0"),
    ("decoder.model.15.conv.conv.weight_v", "decoder.layers.15.conv.parametrizations.weight.original1"),
    ("encoder.model.1.block.3.conv.conv.bias", "encoder.layers.1.block.3.conv.bias"),
    ("encoder.model.4.shortcut.conv.conv.bias", "encoder.layers.4.shortcut.conv.bias"),
    ("decoder.model.1.lstm.weight_hh_l1", "decoder.layers.1.lstm.weight_hh_l1"),
    ("quantizer.vq.layers.2._codebook.embed", "quantizer.layers.2.codebook.embed"),
    ("condition_provider.conditioners.description.embed.weight", None),
])
def test_codec_names_follow_transformers_conversion_table(audiocraft_name, expected):
    from b2m.reconstruction.musicgen.loaders import codec_name_from_audiocraft

    assert codec_name_from_audiocraft(audiocraft_name) == expected


def test_codec_config_refuses_other_variants():
    from b2m.reconstruction.musicgen.loaders import codec_config_from_audiocraft

    with pytest.raises(B2MError, match="lacks EnCodec key"):
        codec_config_from_audiocraft({"seanet": {}, "rvq": {}}, "compression_state_dict.bin")
    cfg = {"encodec": {"sample_rate": 32000, "channels": 1, "renormalize": False},
           "rvq": {"n_q": 4, "bins": 2048}, "seanet": {"norm": "time_group_norm", "ratios": [8, 5, 4, 4]}}
    with pytest.raises(B2MError, match="norm"):
        codec_config_from_audiocraft(cfg, "compression_state_dict.bin")
