"""Model weights: a folder, a Hugging Face hub id from the local cache, or a small offline model.

`model_folder(weights, key)` turns a config's `weights` into a folder that transformers'
`from_pretrained` reads: a local folder holding `config.json`, or a hub id (`org/name`)
found in the local Hugging Face cache (`huggingface_hub`, local files only: nothing is
downloaded). `weights: tiny` is a small seeded random model of the same class, written
once in the real format (`save_pretrained`, safetensors) under `<B2M_CACHE>/models/`
(default `~/.cache/b2m`), so that offline runs load through the very code path that
real weights take. Its files get the permissions the umask allows, as every output of b2m.

`from_pretrained` is the one loader of a folder: a broken `config.json`, a config of another model
type, an unreadable safetensors file, and weights that lack tensors of the model or give them
another shape are one-line B2MErrors naming the folder or file, not layers left silently random;
tensors the model does not use are a warning (`check_weights`, which the loaders of other formats
share).

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
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch

from b2m.core.errors import B2MError
from b2m.core.io import current_umask, read_json_object

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


def model_config(folder: Path) -> dict:
    """The folder's `config.json` as a dict; a missing file, a file that is not JSON or JSON that is
    not an object is a B2MError naming the file."""
    return read_json_object(folder / "config.json", "model config")


def safetensors_files(folder: Path) -> list[Path]:
    """The folder's `*.safetensors` files, each with a readable header; a truncated or foreign file is a
    B2MError naming it (transformers' own error names neither the file nor the folder)."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    for file in files:
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except Exception as err:  # SafetensorError for a bad header, OSError for an unreadable file
            raise B2MError(f"{file}: not a readable safetensors file ({' '.join(str(err).split())})") from None
    return files


def check_weights(origin: str | Path, what: str, missing: Iterable[str], unexpected: Iterable[str] = (),
                  mismatched: Iterable[tuple[str, Any, Any]] = ()) -> None:
    """Refuse weights that leave part of the model `what` at its random initialisation: tensors
    `missing` from the files of `origin`, or `mismatched` ones (name, shape in the files, shape the
    config gives). Tensors of the files that the model does not use (`unexpected`) are a warning only:
    checkpoints carry pretraining heads (HuBERT's projection, T5's decoder) that a feature extractor
    leaves aside, and a folder of another model is refused for its missing tensors anyway."""
    missing, unexpected, mismatched = sorted(missing), sorted(unexpected), sorted(mismatched)
    if missing:
        raise B2MError(f"{origin}: {len(missing)} tensors of {what} are missing from the weights files "
                       f"({_first(missing)}); the files are incomplete or hold another model")
    if mismatched:
        name, found, expected = mismatched[0]
        raise B2MError(f"{origin}: {len(mismatched)} tensors of {what} have another shape in the weights files "
                       f"than config.json gives (first: {name} {tuple(found)}, expected {tuple(expected)})")
    if unexpected:
        warnings.warn(f"{origin}: {len(unexpected)} tensors of the weights files are not part of {what} and "
                      f"were left aside ({_first(unexpected)})", stacklevel=3)


def _first(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def from_pretrained(cls: Any, folder: Path, **kwargs: Any) -> Any:
    """`cls.from_pretrained(folder)` from local files only, quietly; models come back in eval mode.

    Every loader of a folder goes through here: a broken `config.json`, a config of another model
    type, an unreadable safetensors file, and weights that miss tensors or give them another shape
    (transformers would leave those layers random) are B2MErrors naming the folder or file."""
    from transformers import PreTrainedModel
    from transformers.models.auto.auto_factory import _BaseAutoModelClass

    config = model_config(folder)
    is_model = issubclass(cls, (PreTrainedModel, _BaseAutoModelClass))
    if is_model:
        # transformers only logs a mismatch of model types, and quietly, here.
        expected, found = getattr(getattr(cls, "config_class", None), "model_type", ""), config.get("model_type")
        if expected and found is not None and found != expected:
            raise B2MError(f"{folder / 'config.json'}: a {found!r} model, not the {expected!r} model that "
                           f"{cls.__name__} loads")
        safetensors_files(folder)
        # Mismatched shapes come back in the loading info, to be refused below with their names.
        kwargs = {"output_loading_info": True, "ignore_mismatched_sizes": True, **kwargs}
    try:
        with quiet_transformers():
            obj = cls.from_pretrained(folder, local_files_only=True, **kwargs)
    except Exception as err:  # transformers and huggingface_hub raise many types for a broken folder
        message = " ".join(str(err).split())[:300]
        raise B2MError(f"{folder}: cannot load {cls.__name__} ({message})") from None
    if is_model:
        obj, info = obj
        if info.get("error_msgs"):
            raise B2MError(f"{folder}: cannot load {cls.__name__} ({' '.join(str(info['error_msgs'][0]).split())})")
        check_weights(folder, type(obj).__name__, info["missing_keys"], info["unexpected_keys"],
                      info["mismatched_keys"])
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
        _follow_umask(tmp)
        try:
            tmp.rename(folder)
        except OSError:  # another process finished first: keep its folder
            if not (folder / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _follow_umask(folder: Path) -> None:
    """Give `folder` and all it holds the permissions the umask allows, like any output of b2m: mkdtemp
    makes a 0700 folder and transformers writes model.safetensors 0600."""
    umask = current_umask()
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


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
