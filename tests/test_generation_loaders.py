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


@pytest.fixture(scope="module")
def saved(tmp_path_factory, reference):
    """The tiny reference saved as a transformers MusicGen folder (copy it before breaking it)."""
    folder = tmp_path_factory.mktemp("saved") / "musicgen"
    reference.save_pretrained(folder)
    return folder


def broken_copy(saved, tmp_path, case: str):
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    folder = shutil.copytree(saved, tmp_path / "broken")
    weights, config = folder / "model.safetensors", folder / "config.json"
    if case == "config not JSON":
        config.write_text(config.read_text()[:-20])
    elif case == "config a list":
        config.write_text(json.dumps([json.loads(config.read_text())]))
    elif case == "config missing":
        config.unlink()
    elif case == "weights truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif case == "weights empty":
        weights.write_bytes(b"")
    elif case == "no weights":
        weights.unlink()
    elif case == "another model":  # the MusicGen's own codec, saved alone: a model of type encodec
        shutil.rmtree(folder)
        random_musicgen("tiny").audio_encoder.save_pretrained(folder)
    elif case == "third of the tensors removed":
        tensors = load_file(weights)
        save_file({k: v for i, (k, v) in enumerate(sorted(tensors.items())) if i % 3}, weights, {"format": "pt"})
    return folder


@pytest.mark.parametrize("case,message", [
    ("config not JSON", r"broken/config\.json: not valid JSON \(.* at line \d+, column \d+\)"),
    ("config a list", r"broken/config\.json: a JSON list where a model config \(a JSON object\) belongs"),
    ("config missing", r"broken/config\.json: model config missing"),
    ("weights truncated", r"broken/model\.safetensors: not a readable safetensors file \(.*not fully covered\)"),
    ("weights empty", r"broken/model\.safetensors: not a readable safetensors file \(.*header too small\)"),
    ("no weights", r"broken: cannot load MusicgenForConditionalGeneration \(.*no file named model\.safetensors"),
    ("another model", r"broken/config\.json: a 'encodec' model, not the 'musicgen' model that "
                      r"MusicgenForConditionalGeneration loads"),
    ("third of the tensors removed", r"broken: \d+ tensors of MusicgenForConditionalGeneration are missing from "
                                     r"the weights files \(audio_encoder\..*, .*, .* and \d+ more\)"),
])
def test_transformers_folders_that_cannot_load_are_one_line_errors(saved, tmp_path, case, message):
    folder = broken_copy(saved, tmp_path, case)
    with pytest.raises(B2MError, match=message) as err:
        load_transformers(folder)
    assert "\n" not in str(err.value)


def test_transformers_folder_with_reshaped_or_extra_tensors(saved, tmp_path, reference):
    import shutil

    from safetensors.torch import load_file, save_file

    folder = shutil.copytree(saved, tmp_path / "musicgen")
    tensors = load_file(folder / "model.safetensors")
    name = "decoder.lm_heads.0.weight"
    save_file({**tensors, name: tensors[name][:10]}, folder / "model.safetensors", {"format": "pt"})
    with pytest.raises(B2MError, match=rf"1 tensors of MusicgenForConditionalGeneration have another shape .* "
                                       rf"\(first: {name} \(10, 64\), expected \(2048, 64\)\)"):
        load_transformers(folder)
    # Tensors the model does not use (a pretraining head) are left aside with a warning; the rest loads.
    save_file({**tensors, "extra_head.weight": torch.zeros(2, 2)}, folder / "model.safetensors", {"format": "pt"})
    with pytest.warns(UserWarning, match=r"1 tensors of the weights files are not part of "
                                         r"MusicgenForConditionalGeneration and were left aside \(extra_head.weight\)"):
        loaded = load_transformers(folder)
    assert torch.equal(loaded.decoder.lm_heads[0].weight, reference.decoder.lm_heads[0].weight)


def test_audiocraft_packages_that_cannot_load_are_one_line_errors(tmp_path, reference):
    path = tmp_path / "state_dict.bin"
    state = audiocraft_state(reference)
    torch.save({"best_state": state, "xp.cfg": xp_cfg(4)}, path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(B2MError, match=r"state_dict\.bin: not a loadable audiocraft checkpoint \(\w+: .+\)"):
        lm_from_audiocraft(path)
    # The codec's package where the LM's belongs (the two files swapped).
    torch.save({"best_state": {"encoder.model.0.conv.conv.bias": torch.zeros(4)}, "xp.cfg": xp_cfg(4)}, path)
    with pytest.raises(B2MError, match="state_dict.bin: not an audiocraft MusicGen LM"):
        lm_from_audiocraft(path)
    torch.save({"best_state": state, "xp.cfg": ["not", "a", "mapping"]}, path)
    with pytest.raises(B2MError, match="state_dict.bin: xp.cfg is a list, not a config mapping"):
        lm_from_audiocraft(path)
    removed = [name for name in state if name.endswith(("linear2.weight", "norm2.bias"))]
    torch.save({"best_state": {k: v for k, v in state.items() if k not in removed}, "xp.cfg": xp_cfg(4)}, path)
    with pytest.raises(B2MError, match=rf"state_dict.bin: {len(removed)} tensors of the MusicGen LM are missing "
                                       r"from the weights files \(transformer.layers.0.linear2.weight, "):
        lm_from_audiocraft(path)


def test_audiocraft_codec_with_missing_tensors(tmp_path):
    from b2m.reconstruction.musicgen.loaders import codec_from_audiocraft

    seanet = {"dimension": 16, "n_filters": 4, "n_residual_layers": 1, "ratios": [8, 5, 4, 4], "norm": "weight_norm",
              "kernel_size": 7, "residual_kernel_size": 3, "last_kernel_size": 7, "dilation_base": 2,
              "pad_mode": "constant", "true_skip": True, "compress": 2, "lstm": 1, "causal": False}
    cfg = {"seanet": seanet, "encodec": {"sample_rate": 32000, "channels": 1, "renormalize": False},
           "rvq": {"n_q": 4, "bins": 2048}}
    path = tmp_path / "compression_state_dict.bin"
    torch.save({"best_state": {"encoder.model.0.conv.conv.bias": torch.zeros(4)}, "xp.cfg": cfg}, path)
    with pytest.raises(B2MError, match=r"compression_state_dict.bin: \d+ tensors of EncodecModel are missing from "
                                       r"the weights files \(decoder\..* and \d+ more\)"):
        codec_from_audiocraft(path)
    cfg["seanet"] = ["not", "a", "mapping"]
    torch.save({"best_state": {}, "xp.cfg": cfg}, path)
    with pytest.raises(B2MError, match="compression_state_dict.bin: xp.cfg holds an unusable EnCodec config"):
        codec_from_audiocraft(path)
