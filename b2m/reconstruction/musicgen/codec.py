"""EnCodec codes to waveforms with transformers' `EncodecModel`, a few items at a time."""

from __future__ import annotations

from typing import Any

import torch


@torch.no_grad()
def decode_codes(codec: Any, codes: torch.Tensor, max_samples_per_call: int = 4_000_000) -> torch.Tensor:
    """codes [B, K, F] (int64, 50 Hz frames) -> waveforms [B, samples] float32 at the codec's rate.

    Items are decoded in groups whose total output length stays under
    `max_samples_per_call`, which bounds the decoder's activation memory (its widest
    layers run at the audio rate); decoding is per item, so grouping does not change
    the result.
    """
    b, _, frames = codes.shape
    hop = int(codec.config.sampling_rate // codec.config.frame_rate)
    per_call = max(1, max_samples_per_call // max(1, frames * hop))
    device = next(codec.parameters()).device
    waves = []
    for start in range(0, b, per_call):
        chunk = codes[start:start + per_call].to(device)
        audio = codec.decode(chunk[None], [None]).audio_values  # [b, 1, samples]
        waves.append(audio[:, 0].float().cpu())
    return torch.cat(waves)
