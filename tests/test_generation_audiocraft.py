"""The engine against audiocraft's `LMModel.generate` (optional: needs audiocraft installed).

A tiny audiocraft LM (delay pattern [0, 1, 2, 3], 4 x 2048 codes, LUT text conditioner with
the offline `noop` tokenizer, cross-attention) is saved as an audiocraft package, loaded by
our loader, and both generate greedily from the same conditioning.
"""

import pytest
import torch
from omegaconf import OmegaConf

pytest.importorskip("audiocraft", reason="audiocraft is not installed (the optional extra; README: Reconstruction)")

from audiocraft.models.lm import LMModel  # noqa: E402
from audiocraft.modules.codebooks_patterns import DelayedPatternProvider  # noqa: E402
from audiocraft.modules.conditioners import (ConditionFuser, ConditioningAttributes,  # noqa: E402
                                             ConditioningProvider, LUTConditioner)

from b2m.reconstruction.musicgen.lm import SamplingConfig  # noqa: E402
from b2m.reconstruction.musicgen.loaders import lm_from_audiocraft  # noqa: E402

LM_ARGS = dict(n_q=4, card=2048, dim=64, num_heads=4, num_layers=2, hidden_scale=2, norm_first=True,
               bias_ff=False, bias_attn=False, bias_proj=False, cross_attention=True, causal=True, custom=True,
               activation="gelu", positional_embedding="sin", weight_init="gaussian", depthwise_init="current",
               zero_bias_init=True)


@pytest.fixture(scope="module")
def audiocraft_lm():
    torch.manual_seed(0)
    provider = ConditioningProvider({"description": LUTConditioner(n_bins=64, dim=32, output_dim=64,
                                                                   tokenizer="noop")})
    fuser = ConditionFuser({"cross": ["description"], "prepend": [], "sum": [], "input_interpolate": []})
    return LMModel(DelayedPatternProvider(n_q=4), provider, fuser, **LM_ARGS).eval()


@pytest.mark.parametrize("cfg_coef", [1.0, 3.0])
def test_greedy_codes_identical_to_audiocraft(tmp_path, audiocraft_lm, cfg_coef):
    path = tmp_path / "state_dict.bin"
    xp_cfg = OmegaConf.create({"transformer_lm": {k: v for k, v in LM_ARGS.items() if k != "n_q"},
                               "codebooks_pattern": {"modeling": "delay", "delay": {"delays": [0, 1, 2, 3]}}})
    torch.save({"best_state": audiocraft_lm.state_dict(), "xp.cfg": xp_cfg}, path)
    ours = lm_from_audiocraft(path)

    texts = ["calm piano", "loud drums", "jazz trio"]
    conditions = [ConditioningAttributes(text={"description": t}) for t in texts]
    frames = 10
    with torch.no_grad():
        ref = audiocraft_lm.generate(conditions=conditions, max_gen_len=frames, use_sampling=False,
                                     cfg_coef=cfg_coef)
        lut = audiocraft_lm.condition_provider.conditioners["description"]
        tokens, _ = lut.tokenize(texts)
        cond = lut.embed(tokens)  # [B, 1, 32]: the LUT's output before its output_proj
    got = ours.generate(cond, frames, guidance_scale=cfg_coef, sampling=SamplingConfig(greedy=True))
    assert ref.shape == got.shape == (3, 4, frames)
    assert torch.equal(ref, got)
    assert not torch.equal(ref[0], ref[1])  # the conditioning reaches the codes


def test_codec_decodes_like_audiocraft(tmp_path):
    from audiocraft.models.builders import get_compression_model

    from b2m.reconstruction.musicgen.codec import decode_codes
    from b2m.reconstruction.musicgen.loaders import codec_from_audiocraft

    seanet = {"dimension": 16, "channels": 1, "causal": False, "n_filters": 4, "n_residual_layers": 1,
              "ratios": [8, 5, 4, 4], "activation": "ELU", "activation_params": {"alpha": 1.0}, "norm": "weight_norm",
              "norm_params": {}, "kernel_size": 7, "residual_kernel_size": 3, "last_kernel_size": 7,
              "dilation_base": 2, "pad_mode": "constant", "true_skip": True, "compress": 2, "lstm": 2,
              "disable_norm_outer_blocks": 0, "encoder": {},
              "decoder": {"trim_right_ratio": 1.0, "final_activation": None, "final_activation_params": None}}
    cfg = OmegaConf.create({
        "compression_model": "encodec", "device": "cpu", "seanet": seanet,
        "encodec": {"autoencoder": "seanet", "quantizer": "rvq", "sample_rate": 32000, "channels": 1,
                    "causal": False, "renormalize": False},
        "rvq": {"n_q": 4, "q_dropout": False, "bins": 2048, "decay": 0.99, "kmeans_init": False, "kmeans_iters": 50,
                "threshold_ema_dead_code": 2, "orthogonal_reg_weight": 0.0,
                "orthogonal_reg_active_codes_only": False}})
    torch.manual_seed(0)
    model = get_compression_model(cfg).eval()
    path = tmp_path / "compression_state_dict.bin"
    torch.save({"best_state": model.state_dict(), "xp.cfg": cfg}, path)
    codec = codec_from_audiocraft(path)
    codes = torch.randint(0, 2048, (2, 4, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model.decode(codes, None)[:, 0]
    got = decode_codes(codec, codes)
    assert got.shape == ref.shape == (2, 12 * 640)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
