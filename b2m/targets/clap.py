"""CLAP: the joint audio-text space (`clap` on the clip's audio, `clap_text` on its caption).

transformers' `ClapModel` with its own processor: the audio tower and projection
(`get_audio_features`) on log-mel features at the extractor's sample rate (48 kHz), and
the text tower and projection (`get_text_features`) on the tokenised caption. Both are
L2-normalised, as CLAP compares them, so that text-to-music retrieval and text-vs-audio
comparisons work in one space. CLAP hears `max_length_s` (10 s) at a time: a 15 s clip is
cut into windows of that length every `stride_s` seconds, embedded, averaged and
renormalised: shape `(1, D)`.

`weights`: `tiny` (a small random CLAP with a byte-level BPE tokenizer, written once in the
real format) or a folder or hub id, e.g. `laion/larger_clap_music_and_speech`. The audio and
text spaces of one `weights` share one model, hence one space.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from b2m.core.errors import B2MError
from b2m.targets.base import EmbeddingSpace
from b2m.targets.pretrained import from_pretrained, model_folder, offline_model
from b2m.targets.windowed import window_starts

# What the tiny tokenizer learns its merges from: the words captions are made of.
_TOKENIZER_CORPUS = ("a blues classical country disco hiphop jazz metal pop reggae rock song track with piano "
                     "guitar bass drums strings voice synth brass slow fast tempo bpm loud soft bright dark "
                     "calm energetic upbeat melody rhythm beat groove instrumental")


def write_tiny_clap(folder: Path) -> None:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import (ClapAudioConfig, ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor,
                              ClapTextConfig, RobertaTokenizerFast)

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([_TOKENIZER_CORPUS] * 4, vocab_size=400, min_frequency=1, show_progress=False,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save(str(folder / "bpe.json"))
    tokenizer = RobertaTokenizerFast(tokenizer_file=str(folder / "bpe.json"), model_max_length=77)
    (folder / "bpe.json").unlink()
    audio = ClapAudioConfig(patch_embeds_hidden_size=16, hidden_size=128, depths=[1, 1, 1, 1],
                            num_attention_heads=[1, 1, 2, 2], enable_fusion=False, projection_hidden_size=64)
    text = ClapTextConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          intermediate_size=64, max_position_embeddings=80, projection_hidden_size=64,
                          pad_token_id=tokenizer.pad_token_id)
    ClapModel(ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=32)).save_pretrained(
        folder)
    # rand_trunc only crops inputs longer than max_length_s; b2m hands it exact windows.
    extractor = ClapFeatureExtractor(truncation="rand_trunc")
    ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)


def load_clap(weights: str, key: str):
    """(folder, ClapModel in eval mode, ClapProcessor) of `weights`, shared by the audio and text spaces."""
    folder = offline_model("clap-tiny", {}, write_tiny_clap) if weights == "tiny" else model_folder(weights, key)
    return (folder, *_load(folder))


@lru_cache(maxsize=2)
def _load(folder: Path):
    from transformers import ClapModel, ClapProcessor

    return from_pretrained(ClapModel, folder), from_pretrained(ClapProcessor, folder)


class ClapAudioSpace(EmbeddingSpace):
    """CLAP's audio embedding of the clip, averaged over windows of `max_length_s`: `(1, D)`.

    Config: `weights`, `stride_s` (s between windows), `clip_s` (s of audio used).
    """

    name = "clap"
    modality = "audio"

    def __init__(self, weights: str, stride_s: float, clip_s: float) -> None:
        folder, self.model, self.processor = load_clap(str(weights), "clap.weights")
        # The folder's name (a snapshot's revision, the offline model's version) keys the embedding cache.
        super().__init__(weights=str(weights), model=folder.name, stride_s=stride_s, clip_s=clip_s)
        extractor = self.processor.feature_extractor
        self.sample_rate = int(extractor.sampling_rate)
        self.window_s = float(extractor.nb_max_samples) / self.sample_rate
        self.starts = window_starts(self.window_s, stride_s, clip_s, "clap")

    @property
    def shape(self) -> tuple[int, int]:
        return 1, int(self.model.config.projection_dim)

    @torch.no_grad()
    def embed_batch(self, items: Sequence[np.ndarray]) -> np.ndarray:
        """Waveforms `[samples]` at `sample_rate` Hz -> float32 `[N, 1, D]`, unit norm."""
        n = int(round(self.window_s * self.sample_rate))
        windows = []
        for wave in items:
            wave = np.asarray(wave, dtype=np.float32)
            for start in self.starts:
                lo = int(round(start * self.sample_rate))
                piece = wave[lo:lo + n]
                if len(piece) < n // 2:
                    raise B2MError(f"clap: a waveform of {len(wave) / self.sample_rate:.2f} s is too short "
                                   f"for a window at {start} s")
                windows.append(piece)
        inputs = self.processor.feature_extractor(windows, sampling_rate=self.sample_rate, return_tensors="pt")
        emb = _features(self.model.get_audio_features(**inputs))
        emb = F.normalize(emb, dim=-1).reshape(len(items), len(self.starts), -1).mean(dim=1)
        return F.normalize(emb, dim=-1)[:, None, :].float().numpy()


class ClapTextSpace(EmbeddingSpace):
    """CLAP's text embedding of the caption, in the audio space's joint space: `(1, D)`.

    Config: `weights` (the same as `clap`'s for a joint space), `max_length` (tokens).
    """

    name = "clap_text"
    modality = "text"

    def __init__(self, weights: str, max_length: int) -> None:
        folder, self.model, self.processor = load_clap(str(weights), "clap_text.weights")
        super().__init__(weights=str(weights), model=folder.name, max_length=max_length)
        self.max_length = max_length

    @property
    def shape(self) -> tuple[int, int]:
        return 1, int(self.model.config.projection_dim)

    @torch.no_grad()
    def embed_batch(self, items: Sequence[str]) -> np.ndarray:
        """Captions -> float32 `[N, 1, D]`, unit norm."""
        inputs = self.processor.tokenizer([str(t) for t in items], padding=True, truncation=True,
                                          max_length=self.max_length, return_tensors="pt")
        emb = _features(self.model.get_text_features(**inputs))
        return F.normalize(emb, dim=-1)[:, None, :].float().numpy()


def _features(out) -> torch.Tensor:
    """The projected embedding `[N, D]`: a tensor in transformers 4, `pooler_output` of an output in 5."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output
