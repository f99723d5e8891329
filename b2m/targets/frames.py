"""Audio models with frame-level states, averaged per window of the clip: `mert`, `encodec`, `musicgen_lm`,
`musicnn`.

Each space computes one state per model frame over the whole clip, `[frames, D]` at the
model's frame rate, and averages the frames whose centres fall in each window (`window_s`
every `stride_s` over `clip_s`, as `windowed`): shape `(L, D)`. The defaults (one 15 s
window) give `(1, D)`; `window_s: 10, stride_s: 1.5` gives Brain2Music's four windows.

- `mert`: the hidden states of layer `layer` of a self-supervised music model at 24 kHz
  (the w2v-BERT analogue). transformers' `HubertModel` runs MERT-v0-class checkpoints and
  the offline model; MERT-v1 checkpoints ship their own modelling code, which runs only
  with `trust_remote_code: true` (it executes code from the snapshot).
- `encodec`: the MusicGen codec's encoder latents before quantisation (transformers'
  `EncodecModel`, 32 kHz, 50 Hz frames): the SoundStream analogue.
- `musicgen_lm`: the hidden states of layer `layer` of the MusicGen LM over the clip's own
  codec tokens, teacher-forced with MusicGen's delay pattern and no text condition: which
  component of the generator the brain follows.
- `musicnn`: a trained music tagger's features per 3 s patch (penultimate layer, pooled front-end
  features or the 50 tag probabilities): the one model here that learned about music with no download.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from b2m.core.errors import B2MError
from b2m.targets.base import EmbeddingSpace
from b2m.targets.pretrained import from_pretrained, model_config, model_folder, offline_model, random_musicgen
from b2m.targets.windowed import window_starts


def pool_windows(states: torch.Tensor, frame_rate: float, starts: list[float], window_s: float) -> torch.Tensor:
    """`[N, T, D]` frame states at `frame_rate` Hz -> `[N, L, D]`: the mean of the frames whose
    centres `(t + 0.5) / frame_rate` lie in `[start, start + window_s)`, per window."""
    centres = (torch.arange(states.shape[1], dtype=torch.float64) + 0.5) / frame_rate
    out = []
    for start in starts:
        inside = (centres >= start) & (centres < start + window_s)
        if not inside.any():
            raise B2MError(f"a {window_s} s window at {start} s holds no frame of a "
                           f"{states.shape[1] / frame_rate:.2f} s clip")
        out.append(states[:, inside].mean(dim=1))
    return torch.stack(out, dim=1)


class FrameSpace(EmbeddingSpace):
    """Shared window pooling; subclasses set `sample_rate`, `frame_rate`, `dim` and `frames`."""

    modality = "audio"

    def __init__(self, window_s: float, stride_s: float, clip_s: float, **config: Any) -> None:
        super().__init__(window_s=window_s, stride_s=stride_s, clip_s=clip_s, **config)
        self.starts = window_starts(window_s, stride_s, clip_s, self.name)
        self.window_s = window_s
        self.clip_samples = int(round(clip_s * self.sample_rate))

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.starts), self.dim

    def frames(self, waves: torch.Tensor) -> torch.Tensor:
        """`[N, samples]` at `sample_rate` -> frame states `[N, T, D]` at `frame_rate` Hz."""
        raise NotImplementedError

    @torch.no_grad()
    def embed_batch(self, items: Sequence[np.ndarray]) -> np.ndarray:
        """Waveforms `[samples]` at `sample_rate` Hz -> float32 `[N, L, D]` (cut or zero-padded to `clip_s`)."""
        waves = np.zeros((len(items), self.clip_samples), dtype=np.float32)
        for i, wave in enumerate(items):
            wave = np.asarray(wave, dtype=np.float32)[: self.clip_samples]
            waves[i, : len(wave)] = wave
        states = self.frames(torch.from_numpy(waves)).float()
        return pool_windows(states, self.frame_rate, self.starts, self.window_s).numpy()


def write_tiny_hubert(folder) -> None:
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    config = HubertConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
                          conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                          feat_extract_norm="layer", do_stable_layer_norm=True)
    HubertModel(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=24_000, do_normalize=True,
                             return_attention_mask=True).save_pretrained(folder)


class MertSpace(FrameSpace):
    """Config: `weights` (tiny | folder | hub id: m-a-p/MERT-v0 is in HuBERT's format, 16 kHz; m-a-p/MERT-v1-95M
    needs `trust_remote_code`, 24 kHz), `layer` (0: the
    feature projection; n: the n-th transformer layer), `trust_remote_code`, windows."""

    name = "mert"

    def __init__(self, weights: str, layer: int, trust_remote_code: bool, window_s: float, stride_s: float,
                 clip_s: float) -> None:
        from transformers import AutoFeatureExtractor, AutoModel, HubertModel, Wav2Vec2FeatureExtractor

        folder = offline_model("hubert-tiny", {}, write_tiny_hubert) if weights == "tiny" else model_folder(weights,
                                                                                                   "mert.weights")
        config = model_config(folder)
        model_type = config.get("model_type")
        if model_type != "hubert" and not trust_remote_code:
            raise B2MError(f"mert.weights: {weights} is a {model_type!r} model with its own code; set "
                           f"target.trust_remote_code=true to run it (it executes code from the snapshot)")
        if (folder / "preprocessor_config.json").is_file():
            self.extractor = from_pretrained(AutoFeatureExtractor, folder, trust_remote_code=trust_remote_code)
        else:  # MERT-v0 ships no extractor: HuBERT's, at the rate its config names
            rate = int(config.get("sample_rate", 16_000))
            self.extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=rate, do_normalize=True)
        self.model = from_pretrained(HubertModel if model_type == "hubert" else AutoModel, folder,
                                     **({} if model_type == "hubert" else {"trust_remote_code": True}))
        n_layers = int(self.model.config.num_hidden_layers)
        if not 0 <= layer <= n_layers:
            raise B2MError(f"mert.layer: {layer} is outside 0-{n_layers} for {weights}")
        self.sample_rate = int(self.extractor.sampling_rate)
        self.frame_rate = self.sample_rate / float(np.prod(self.model.config.conv_stride))
        self.dim = int(self.model.config.hidden_size)
        self.layer = layer
        super().__init__(window_s, stride_s, clip_s, weights=str(weights), model=folder.name, layer=layer)

    def frames(self, waves: torch.Tensor) -> torch.Tensor:
        inputs = self.extractor(list(waves.numpy()), sampling_rate=self.sample_rate, return_tensors="pt")
        out = self.model(inputs["input_values"], output_hidden_states=True)
        return out.hidden_states[self.layer]


def write_tiny_musicgen(folder) -> None:
    """The tiny random MusicGen, its codebooks drawn from its encoder's own latents (a random
    codebook lies so far from them that every frame gets the same code; a trained one covers them)."""
    from transformers import EncodecFeatureExtractor

    model = random_musicgen("tiny")
    codec = model.audio_encoder
    rate = codec.config.sampling_rate
    t = torch.arange(64 * rate) / rate
    f0 = 55.0 * 2.0 ** (torch.randint(0, 48, (64, 1)) / 12.0)  # a different note each second
    tones = torch.sin(2 * torch.pi * f0 * t.reshape(64, rate)).reshape(-1) * torch.rand(64).repeat_interleave(rate)
    audio = 0.5 * tones + 0.05 * torch.randn(len(t))
    with torch.no_grad():
        residual = codec.encoder(audio[None, None])[0].T  # [frames, D]
        for layer in codec.quantizer.layers:
            embed = layer.codebook.embed
            embed.copy_(residual[torch.randperm(len(residual))[: len(embed)]])
            residual = residual - layer.codebook.decode(layer.codebook.encode(residual))
    model.save_pretrained(folder)
    EncodecFeatureExtractor(feature_size=1, sampling_rate=rate).save_pretrained(folder)


def musicgen_folder(weights: str, key: str):
    """`tiny`: the tiny MusicGen's folder (its `audio_encoder` is the codec); else a folder or hub id."""
    return offline_model("musicgen-tiny", {}, write_tiny_musicgen) if weights == "tiny" else model_folder(weights, key)


def load_codec(weights: str, key: str):
    """(folder, `EncodecModel`) from an EnCodec checkpoint or from the codec inside a MusicGen checkpoint."""
    from transformers import EncodecModel, MusicgenForConditionalGeneration

    folder = musicgen_folder(weights, key)
    model_type = model_config(folder).get("model_type")
    if model_type == "encodec":
        return folder, from_pretrained(EncodecModel, folder)
    if model_type == "musicgen":
        return folder, from_pretrained(MusicgenForConditionalGeneration, folder).audio_encoder
    raise B2MError(f"{key}: {weights} holds a {model_type!r} model, not EnCodec or MusicGen")


class EncodecSpace(FrameSpace):
    """Config: `weights` (tiny: the tiny MusicGen's codec | an EnCodec folder or hub id, e.g.
    facebook/encodec_32khz | a MusicGen checkpoint, whose codec is used), windows."""

    name = "encodec"

    def __init__(self, weights: str, window_s: float, stride_s: float, clip_s: float) -> None:
        folder, self.codec = load_codec(weights, "encodec.weights")
        self.sample_rate = int(self.codec.config.sampling_rate)
        self.frame_rate = self.sample_rate / float(np.prod(self.codec.config.upsampling_ratios))
        self.dim = int(self.codec.config.hidden_size)
        super().__init__(window_s, stride_s, clip_s, weights=str(weights), model=folder.name)

    def frames(self, waves: torch.Tensor) -> torch.Tensor:
        return self.codec.encoder(waves[:, None, :]).transpose(1, 2)  # [N, D, T] -> [N, T, D]


def delayed_codes(codes: torch.Tensor, pad: int) -> torch.Tensor:
    """MusicGen's delay pattern for teacher forcing: codes `[N, K, T]` -> inputs `[N, K, T + K]`
    with codebook k's frame f at position f + k + 1 and `pad` elsewhere (position 0 is the start
    token of every codebook)."""
    n, k, t = codes.shape
    out = torch.full((n, k, t + k), pad, dtype=codes.dtype)
    for i in range(k):
        out[:, i, i + 1:i + 1 + t] = codes[:, i]
    return out


class MusicgenLMSpace(FrameSpace):
    """Config: `weights` (tiny | a MusicGen folder or hub id, e.g. facebook/musicgen-small), `layer`
    (0: the token embeddings; n: after the n-th decoder layer), windows. Frame f's state is the
    decoder's at position f + K, the first that has read all K codes of frame f."""

    name = "musicgen_lm"

    def __init__(self, weights: str, layer: int, window_s: float, stride_s: float, clip_s: float) -> None:
        from transformers import MusicgenForConditionalGeneration

        folder = musicgen_folder(weights, "musicgen_lm.weights")
        model = from_pretrained(MusicgenForConditionalGeneration, folder)
        self.codec, self.decoder = model.audio_encoder, model.decoder
        n_layers = int(self.decoder.config.num_hidden_layers)
        if not 0 <= layer <= n_layers:
            raise B2MError(f"musicgen_lm.layer: {layer} is outside 0-{n_layers} for {weights}")
        self.layer = layer
        self.sample_rate = int(self.codec.config.sampling_rate)
        self.frame_rate = self.sample_rate / float(np.prod(self.codec.config.upsampling_ratios))
        self.dim = int(self.decoder.config.hidden_size)
        super().__init__(window_s, stride_s, clip_s, weights=str(weights), model=folder.name, layer=layer)

    def frames(self, waves: torch.Tensor) -> torch.Tensor:
        codes = self.codec.encode(waves[:, None, :]).audio_codes[0]  # [N, K, T]
        n, k, t = codes.shape
        inputs = delayed_codes(codes, int(self.decoder.config.pad_token_id))
        hidden = self.decoder(input_ids=inputs.reshape(n * k, t + k), output_hidden_states=True).hidden_states
        return hidden[self.layer][:, k:k + t]  # [N, T, D]


class MusicnnSpace(FrameSpace):
    """Config: `weights` (mtt | msd: musicnn trained on MagnaTagATune or the Million Song Dataset, from the
    `musicnn` wheel), `layer` (penultimate | mean_pool | max_pool | taggram), windows. One state per 3 s
    patch (187 frames of 256 samples at 16 kHz); a clip shorter than a patch is repeat-padded to one, as
    musicnn was trained."""

    name = "musicnn"
    LAYERS = {"penultimate": 200, "mean_pool": 753, "max_pool": 753, "taggram": 50}
    MODELS = {"mtt": "MTT_musicnn", "msd": "MSD_musicnn"}

    def __init__(self, weights: str, layer: str, window_s: float, stride_s: float, clip_s: float) -> None:
        if weights not in self.MODELS:
            raise B2MError(f"musicnn.weights: {weights!r} is not one of {sorted(self.MODELS)}")
        if layer not in self.LAYERS:
            raise B2MError(f"musicnn.layer: {layer!r} is not one of {sorted(self.LAYERS)}")
        from b2m.targets import musicnn  # reads the wheel's checkpoint: only for this space

        self.model = musicnn.load_musicnn(self.MODELS[weights])
        self.tags = list(musicnn.TAGS[self.MODELS[weights]])
        self.features = musicnn.musicnn_features
        self.sample_rate = musicnn.SAMPLE_RATE
        self.frame_rate = musicnn.SAMPLE_RATE / (musicnn.PATCH_FRAMES * musicnn.HOP)
        self.layer, self.dim = layer, self.LAYERS[layer]
        super().__init__(window_s, stride_s, clip_s, weights=weights, layer=layer)

    def frames(self, waves: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.from_numpy(self.features(self.model, w)[self.layer]) for w in waves.numpy()])
