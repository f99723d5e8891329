"""Model weights: a folder, a Hugging Face hub id from the local cache, or a small offline model.

`model_folder(weights, key)` turns a config's `weights` into a folder that transformers'
`from_pretrained` reads: a local folder holding `config.json`, or a hub id (`org/name`)
found in the local Hugging Face cache (`huggingface_hub`, local files only: nothing is
downloaded). `weights: tiny` is a small seeded random model of the same class, written
once in the real format (`save_pretrained`, safetensors) under `<B2M_CACHE>/models/`
(default `~/.cache/b2m`), so that offline runs load through the very code path that
real weights take.

The tiny architectures of MusicGen (`musicgen_config`, `random_musicgen`) live here too:
the `encodec` and `musicgen_lm` spaces read the generator's own codec and LM.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from b2m.core.errors import B2MError
from b2m.core.io import current_umask

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def cache_root() -> Path:
    """`$B2M_CACHE`, else `$XDG_CACHE_HOME/b2m`, else `~/.cache/b2m`."""
    if os.environ.get("B2M_CACHE"):
        return Path(os.environ["B2M_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "b2m"


def model_folder(weights: str, key: str) -> Path:
    """The folder of `weights` (a path, or a hub id in the local Hugging Face cache); `key` names the
    config entry in errors."""
    path = Path(str(weights)).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise B2MError(f"{key}: {path} is not a model folder (no config.json)")
        return path
    if HUB_ID.match(str(weights)) and not path.exists():
        from huggingface_hub import constants, snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            folder = Path(snapshot_download(str(weights), local_files_only=True))
        except (LocalEntryNotFoundError, OSError, ValueError):
            raise B2MError(f"{key}: {weights} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}); "
                           f"fetch it once with `huggingface-cli download {weights}`, or give a folder") from None
        if not (folder / "config.json").is_file():
            raise B2MError(f"{key}: the cached snapshot of {weights} ({folder}) has no config.json")
        return folder
    raise B2MError(f"{key}: {weights} is neither a model folder nor a Hugging Face hub id (org/name)")


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers without its loading progress bars and config notices (b2m's terminal stays quiet)."""
    from transformers.utils import logging

    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def from_pretrained(cls: Any, folder: Path, **kwargs: Any) -> Any:
    """`cls.from_pretrained(folder)` from local files only, quietly; models come back in eval mode."""
    try:
        with quiet_transformers():
            obj = cls.from_pretrained(folder, local_files_only=True, **kwargs)
    except Exception as err:  # transformers and huggingface_hub raise many types for a broken folder
        message = " ".join(str(err).split())[:300]
        raise B2MError(f"{folder}: cannot load {cls.__name__} ({message})") from None
    return obj.eval() if isinstance(obj, torch.nn.Module) else obj


def offline_model(kind: str, spec: dict, build: Callable[[Path], None]) -> Path:
    """The folder of a small random model: `build(folder)` writes it (once per `spec` and version of
    `build`'s code) under `<B2M_CACHE>/models/<kind>-<hash>`, atomically (a rename of a finished folder)."""
    blob = json.dumps({"kind": kind, **spec, "build": inspect.getsource(build)}, sort_keys=True)
    digest = hashlib.sha1(blob.encode()).hexdigest()[:10]
    folder = cache_root() / "models" / f"{kind}-{digest}"
    if (folder / "config.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        with torch.random.fork_rng(devices=[]), quiet_transformers():
            torch.manual_seed(int(spec.get("seed", 0)))
            build(tmp)
        _readable(tmp)
        try:
            tmp.rename(folder)
        except OSError:  # another process finished first: keep its folder
            if not (folder / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _readable(folder: Path) -> None:
    """mkdtemp makes a 0700 folder: give it the permissions the umask allows, like any new folder."""
    folder.chmod(0o777 & ~current_umask())


# ----------------------------------------------------------------- MusicGen architectures
# EnCodec 32 kHz as MusicGen uses it: hop 8*5*4*4 = 640 samples = 50 Hz frames, 4 codebooks of 2048.
CODEC_32KHZ = dict(sampling_rate=32_000, upsampling_ratios=[8, 5, 4, 4], target_bandwidths=[2.2],
                   codebook_size=2048, use_causal_conv=False, normalize=False, use_conv_shortcut=False)

# Per architecture: text encoder (T5), codec (EnCodec) and decoder sizes.
ARCHITECTURES: dict[str, dict[str, dict]] = {
    "tiny": {
        # d_model 32 matches the tiny `musicgen_text` embedding space.
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


def musicgen_config(name: str):
    """The transformers `MusicgenConfig` of a named architecture (`tiny` or `small`)."""
    from transformers import EncodecConfig, MusicgenConfig, MusicgenDecoderConfig, T5Config

    if name not in ARCHITECTURES:
        raise B2MError(f"generator.name: unknown architecture {name!r}; choose one of {sorted(ARCHITECTURES)}")
    arch = ARCHITECTURES[name]
    text = T5Config(**arch["text_encoder"])
    codec = EncodecConfig(**CODEC_32KHZ, **arch["audio_encoder"])
    decoder = MusicgenDecoderConfig(vocab_size=2048, num_codebooks=4, pad_token_id=2048, bos_token_id=2048,
                                    dropout=0.0, **arch["decoder"])
    return MusicgenConfig(text_encoder=text, audio_encoder=codec, decoder=decoder,
                          initializer_factor=decoder.initializer_factor)


def random_musicgen(name: str, seed: int = 0):
    """A `MusicgenForConditionalGeneration` of architecture `name` with seeded random weights (offline)."""
    from transformers import MusicgenForConditionalGeneration

    config = musicgen_config(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MusicgenForConditionalGeneration(config)
        # transformers leaves EnCodec's codebooks at zero (they come from checkpoints): without
        # this every code would decode to the same waveform.
        for layer in model.audio_encoder.quantizer.layers:
            layer.codebook.embed.normal_()
    model.generation_config.decoder_start_token_id = 2048
    model.generation_config.pad_token_id = 2048
    return model.eval()
