"""Config to MusicGen engine: named random architectures, pretrained weights, the precision.

`tiny` (tests, demo) and `small` (benchmarks) are random architectures. Both build a transformers `MusicgenConfig` (T5 text encoder, EnCodec 32 kHz codec, MusicGen
decoder) so that the random model is a real `MusicgenForConditionalGeneration`: the engine
loads it through the same name table as a pretrained checkpoint, and transformers'
`generate` on the same object is the reference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from transformers import (EncodecConfig, MusicgenConfig, MusicgenDecoderConfig, MusicgenForConditionalGeneration,
                          T5Config)

from b2m.core.errors import B2MError
from b2m.reconstruction.musicgen.lm import MusicGenLM
from b2m.reconstruction.musicgen.loaders import (codec_from_audiocraft, lm_from_audiocraft, lm_from_transformers,
                                                 load_transformers)

# EnCodec 32 kHz as MusicGen uses it: hop 8*5*4*4 = 640 samples = 50 Hz frames, 4 codebooks of 2048.
_CODEC_32KHZ = dict(sampling_rate=32_000, upsampling_ratios=[8, 5, 4, 4], target_bandwidths=[2.2],
                    codebook_size=2048, use_causal_conv=False, normalize=False, use_conv_shortcut=False)

# Per architecture: text encoder (T5), codec (EnCodec) and decoder sizes.
ARCHITECTURES: dict[str, dict[str, dict]] = {
    "tiny": {
        # d_model 32 matches the tiny `musicgen_text` embedding space of b2m.targets.
        "text_encoder": dict(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4),
        "audio_encoder": dict(num_filters=4, hidden_size=16, num_lstm_layers=1),
        # Weights 10x larger than transformers' default init so that the conditioning and the
        # guidance visibly change the tokens of a random model.
        "decoder": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, ffn_dim=128,
                        initializer_factor=0.2),
    },
    "small": {  # facebook/musicgen-small: t5-base, encodec_32khz, 24 x 1024 decoder
        "text_encoder": dict(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12),
        "audio_encoder": dict(num_filters=64, hidden_size=128, num_lstm_layers=2),
        "decoder": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, ffn_dim=4096),
    },
}


def musicgen_config(name: str) -> MusicgenConfig:
    """The transformers config of a named architecture (`tiny` or `small`)."""
    if name not in ARCHITECTURES:
        raise B2MError(f"generator.name: unknown architecture {name!r}; choose one of {sorted(ARCHITECTURES)}")
    arch = ARCHITECTURES[name]
    text = T5Config(**arch["text_encoder"])
    codec = EncodecConfig(**_CODEC_32KHZ, **arch["audio_encoder"])
    decoder = MusicgenDecoderConfig(vocab_size=2048, num_codebooks=4, pad_token_id=2048, bos_token_id=2048,
                                    dropout=0.0, **arch["decoder"])
    config = MusicgenConfig(text_encoder=text, audio_encoder=codec, decoder=decoder,
                            initializer_factor=decoder.initializer_factor)
    return config


def random_musicgen(name: str, seed: int = 0) -> MusicgenForConditionalGeneration:
    """A `MusicgenForConditionalGeneration` of architecture `name` with seeded random weights (offline)."""
    config = musicgen_config(name)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = MusicgenForConditionalGeneration(config)
        # transformers leaves EnCodec's codebooks at zero (they come from checkpoints): without
        # this every code would decode to the same waveform.
        for layer in model.audio_encoder.quantizer.layers:
            layer.codebook.embed.normal_()
    model.generation_config.decoder_start_token_id = 2048
    model.generation_config.pad_token_id = 2048
    return model.eval()


def auto_precision(precision: str, device: torch.device) -> torch.dtype:
    """fp32/bf16/fp16 by name; `auto`: bf16 where the device supports it, else fp16 (CUDA) or fp32."""
    named = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision in named:
        return named[precision]
    if precision != "auto":
        raise B2MError(f"generator.precision: {precision!r} is not one of auto, fp32, bf16, fp16")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.bfloat16
    return torch.float32


def build_generator(gen: DictConfig) -> tuple[MusicGenLM, Any]:
    """(LM in fp32, EnCodec model) for `generator.name` tiny|small (random) or pretrained."""
    if gen.name in ("tiny", "small"):
        model = random_musicgen(gen.name)
        return lm_from_transformers(model, f"random {gen.name}"), model.audio_encoder
    if gen.name != "pretrained":
        raise B2MError(f"generator.name: {gen.name!r} is not one of tiny, small, pretrained")
    if not gen.weights:
        raise B2MError("generator.weights: a pretrained generator needs a local path")
    if gen.format == "transformers":
        model = load_transformers(gen.weights)
        return lm_from_transformers(model, str(gen.weights)), model.audio_encoder
    if gen.format == "audiocraft":  # a folder with audiocraft's two files
        folder = Path(gen.weights)
        lm = lm_from_audiocraft(folder / "state_dict.bin")
        return lm, codec_from_audiocraft(folder / "compression_state_dict.bin")
    raise B2MError(f"generator.format: {gen.format!r} is not one of transformers, audiocraft")
