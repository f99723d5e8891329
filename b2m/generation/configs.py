"""MusicGen architectures by name: `tiny` (tests, demo) and `small` (benchmarks), random weights.

Both build a transformers `MusicgenConfig` (T5 text encoder, EnCodec 32 kHz codec, MusicGen
decoder) so that the random model is a real `MusicgenForConditionalGeneration`: the engine
loads it through the same name table as a pretrained checkpoint, and transformers'
`generate` on the same object is the reference.
"""

from __future__ import annotations

import torch
from transformers import (EncodecConfig, MusicgenConfig, MusicgenDecoderConfig, MusicgenForConditionalGeneration,
                          T5Config)

from b2m.errors import B2MError

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
