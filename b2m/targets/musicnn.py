"""musicnn in torch: b2m's port of the music tagger of Pons & Serra (MTG-UPF), with its trained weights.

musicnn ("musician"; Pons & Serra, "musicnn: pre-trained convolutional neural networks for music audio
tagging", ISMIR 2019 late-breaking demo) is a CNN trained to tag 3 s of music with 50 tags, on
MagnaTagATune (`MTT_musicnn`) or the Million Song Dataset (`MSD_musicnn`). Its PyPI wheel
`musicnn==0.1.0` ships the trained TensorFlow 1 checkpoints. b2m reads those checkpoints itself
(`b2m.targets.tfbundle`, no TensorFlow), converts them once to safetensors under
`<B2M_CACHE>/models/musicnn-<model>-<digest>/` (with the licence notice below as `NOTICE`), and runs the
network in torch. Install the wheel without its dependencies (it pins TensorFlow 1 and numpy < 1.17):
`pip install --no-deps musicnn==0.1.0`; its `__init__.py` is empty, so locating it imports nothing.

Front end (`musicnn_patches`, as musicnn's `extractor.batch_data`): 16 kHz mono; STFT with n_fft 512
(32 ms), hop 256 (16 ms), periodic Hann window, centred frames with REFLECT padding of the edges (the
librosa 0.6/0.7 `melspectrogram` that musicnn called and was trained with; librosa >= 0.10 pads with
zeros instead, which changes the first and last frames); power spectrogram; 96 Slaney mel bands
(area-normalised, 0 to 8 kHz); rounded to float16 (musicnn stored its training spectrograms so), then
`log10(10000 x + 1)` in float32 (as numpy 1.x computed it; numpy 2 keeps float16 and overflows above
6.55); non-overlapping patches of 187 frames (3 s). A clip shorter than one patch is repeat-padded
(its frames repeated) to one patch, as musicnn's training (`pad_short: repeat-pad`) did.

Network (`MusicnnModel`, musicnn's `build_musicnn`), per patch [187 frames, 96 bands]: batch norm of the
input; front end of timbral convolutions (7 x 38 and 7 x 67 over time x frequency, 204 filters each)
and temporal ones (128, 64, 32 x 1, 51 filters each), each ReLU -> batch norm -> max over frequency:
561 channels per frame; mid end of three 1-D convolutions over time (7 frames, 64 channels, the 2nd
and 3rd residual), concatenated with the front end: 753 channels per frame; back end of max and mean
pooling over time (`max_pool`, `mean_pool`: 753 each; interleaved max, mean per channel: 1506), batch
norm, dense 200 + ReLU + batch norm (`penultimate`), dense 50 + sigmoid (`taggram`). Batch norms use
their trained moving statistics (eps 1e-3); dropout is off, as in musicnn's inference.

musicnn's licence (the wheel's LICENSE.md):

    Copyright (c) Music Technology Group, Universitat Pompeu Fabra 2019. Code developed by Jordi Pons
    (www.jordipons.me).

    Permission to use, copy, modify, and/or distribute this software for any purpose with or without
    fee is hereby granted, provided that the above copyright notice and this permission notice appear
    in all copies.

    THE SOFTWARE IS PROVIDED "AS IS" AND THE AUTHOR DISCLAIMS ALL WARRANTIES WITH REGARD TO THIS
    SOFTWARE INCLUDING ALL IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS. IN NO EVENT SHALL THE
    AUTHOR BE LIABLE FOR ANY SPECIAL, DIRECT, INDIRECT, OR CONSEQUENTIAL DAMAGES OR ANY DAMAGES
    WHATSOEVER RESULTING FROM LOSS OF USE, DATA OR PROFITS, WHETHER IN AN ACTION OF CONTRACT, NEGLIGENCE
    OR OTHER TORTIOUS ACTION, ARISING OUT OF OR IN CONNECTION WITH THE USE OR PERFORMANCE OF THIS
    SOFTWARE.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from b2m.core.errors import B2MError
from b2m.core.io import atomic_path, file_digest, write_text
from b2m.targets.pretrained import cache_root
from b2m.targets.tfbundle import read_bundle

SAMPLE_RATE = 16_000  # Hz
N_FFT = 512  # samples: 32 ms
HOP = 256  # samples: 16 ms, 62.5 frames/s
N_MELS = 96
PATCH_FRAMES = 187  # 3 s: librosa.time_to_frames(3 s) + 1, musicnn's n_frames
PATCH_SECONDS = PATCH_FRAMES * HOP / SAMPLE_RATE  # s between the starts of two patches (2.992 s)
FEATURE_SIZES = {"penultimate": 200, "mean_pool": 753, "max_pool": 753, "taggram": 50}
INSTALL_HINT = "pip install --no-deps musicnn==0.1.0"
# Bump when the conversion below changes: caches of another version are rebuilt, not trusted.
CONVERSION_VERSION = 1

# The 50 tags of each model's taggram, in order (musicnn's configuration.py, MTT_LABELS and MSD_LABELS).
_MTT_TAGS = ["guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast", "piano",
             "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male", "singing",
             "vocals", "no vocals", "harpsichord", "loud", "quiet", "flute", "woman", "male vocal", "no vocal",
             "pop", "soft", "sitar", "solo", "man", "classic", "choir", "voice", "new age", "dance", "male voice",
             "female vocal", "beats", "harp", "cello", "no voice", "weird", "country", "metal", "female voice",
             "choral"]
_MSD_TAGS = ["rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s",
             "alternative rock", "jazz", "beautiful", "metal", "chillout", "male vocalists", "classic rock",
             "soul", "indie rock", "Mellow", "electronica", "80s", "folk", "90s", "chill", "instrumental", "punk",
             "oldies", "blues", "hard rock", "ambient", "acoustic", "experimental", "female vocalist", "guitar",
             "Hip-Hop", "70s", "party", "country", "easy listening", "sexy", "catchy", "funk", "electro",
             "heavy metal", "Progressive rock", "60s", "rnb", "indie pop", "sad", "House", "happy"]
TAGS: dict[str, list[str]] = {"MTT_musicnn": _MTT_TAGS, "MSD_musicnn": _MSD_TAGS}

MUSICNN_LICENSE = """\
Copyright (c) Music Technology Group, Universitat Pompeu Fabra 2019. Code developed by Jordi Pons (www.jordipons.me).

Permission to use, copy, modify, and/or distribute this software for any purpose with or without fee is hereby granted, provided that the above copyright notice and this permission notice appear in all copies.

THE SOFTWARE IS PROVIDED "AS IS" AND THE AUTHOR DISCLAIMS ALL WARRANTIES WITH REGARD TO THIS SOFTWARE INCLUDING ALL IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS. IN NO EVENT SHALL THE AUTHOR BE LIABLE FOR ANY SPECIAL, DIRECT, INDIRECT, OR CONSEQUENTIAL DAMAGES OR ANY DAMAGES WHATSOEVER RESULTING FROM LOSS OF USE, DATA OR PROFITS, WHETHER IN AN ACTION OF CONTRACT, NEGLIGENCE OR OTHER TORTIOUS ACTION, ARISING OUT OF OR IN CONNECTION WITH THE USE OR PERFORMANCE OF THIS SOFTWARE.
"""  # noqa: E501  (verbatim)


# ----------------------------------------------------------------- front end: waveform -> log-mel patches
# Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz (200/3 Hz per mel), logarithmic
# above (27 mels per factor 6.4). The constants are computed as librosa computes them, for equal bits.
_HZ_PER_MEL = 200.0 / 3
_LOG_MEL_START = 1000.0 / _HZ_PER_MEL  # the mel of 1 kHz
_LOG_STEP = np.log(6.4) / 27.0


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    logarithmic = _LOG_MEL_START + np.log(np.maximum(hz, 1000.0) / 1000.0) / _LOG_STEP
    return np.where(hz >= 1000.0, logarithmic, hz / _HZ_PER_MEL)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    logarithmic = 1000.0 * np.exp(_LOG_STEP * (mel - _LOG_MEL_START))
    return np.where(mel >= _LOG_MEL_START, logarithmic, _HZ_PER_MEL * mel)


def mel_filterbank(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS,
                   fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """Slaney's triangular mel filters, area-normalised (each weighted by 2 / its width in Hz), on the
    `n_fft // 2 + 1` bins of an rFFT: `[n_mels, n_fft // 2 + 1]` float32, band edges `fmin`..`fmax` Hz
    (default: Nyquist). The filterbank of librosa's `filters.mel(htk=False, norm='slaney')`, float32
    rounding steps included (musicnn used librosa's)."""
    fmax = sample_rate / 2 if fmax is None else fmax
    bin_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges_hz = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges_hz)
    ramps = edges_hz[:, None] - bin_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    # librosa stores the triangles in float32, then scales them in float64: round twice as it does.
    triangles = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    area = 2.0 / (edges_hz[2:] - edges_hz[:-2])
    return (triangles * area[:, None]).astype(np.float32)


def log_mel(wave_16k: np.ndarray) -> np.ndarray:
    """musicnn's log-mel spectrogram of a 16 kHz mono waveform `[T]` (samples, full scale +-1):
    `[1 + T // 256, 96]` float32, 62.5 frames/s (see the module's docstring for each step)."""
    wave = np.asarray(wave_16k)
    if wave.ndim != 1 or wave.size == 0:
        raise B2MError(f"musicnn: a waveform must be 1-D and non-empty (16 kHz mono), got shape {wave.shape}")
    if not np.isfinite(wave).all():
        raise B2MError("musicnn: the waveform holds NaN or infinite samples")
    # librosa.load gives float32 samples; reflect padding centres frame t on sample t * HOP.
    padded = np.pad(wave.astype(np.float32), N_FFT // 2, mode="reflect")
    n_frames = 1 + (len(padded) - N_FFT) // HOP
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic Hann, float64
    filters = mel_filterbank()
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:n_frames]
    mel = np.empty((n_frames, N_MELS), dtype=np.float32)
    for start in range(0, n_frames, 4096):  # blocks bound the float64 FFT buffers of long clips
        block = frames[start:start + 4096] * window
        # librosa 0.7's dtypes: a complex64 STFT, its float32 power, a float32 product with the filters.
        power = np.abs(np.fft.rfft(block, axis=1).astype(np.complex64)) ** 2
        mel[start:start + 4096] = power @ filters.T
    # float16 as musicnn stored it (values above float16's largest, 65504, would be inf: held there).
    rounded = np.minimum(mel, np.finfo(np.float16).max).astype(np.float16)
    return np.log10(np.float32(10000) * rounded.astype(np.float32) + np.float32(1))


def musicnn_patches(wave_16k: np.ndarray) -> np.ndarray:
    """The network's inputs for a 16 kHz mono waveform `[T]`: non-overlapping 3 s patches of musicnn's
    log-mel spectrogram, `[P, 187, 96]` float32 (frames of 16 ms x mel bands), patch p starting at
    p * 2.992 s; the frames after the last whole patch are left out, as musicnn does. A clip shorter
    than 3 s (fewer than 187 frames) is its frames repeated to one patch."""
    spectrogram = log_mel(wave_16k)
    if len(spectrogram) < PATCH_FRAMES:
        repeats = -(-PATCH_FRAMES // len(spectrogram))
        spectrogram = np.tile(spectrogram, (repeats, 1))[:PATCH_FRAMES]
    n_patches = len(spectrogram) // PATCH_FRAMES
    return np.ascontiguousarray(spectrogram[:n_patches * PATCH_FRAMES].reshape(n_patches, PATCH_FRAMES, N_MELS))


# ----------------------------------------------------------------- the network
def _batch_norm(kind: type[nn.Module], channels: int) -> nn.Module:
    """TensorFlow's batch normalisation (`tf.layers.batch_normalization`: eps 1e-3)."""
    return kind(channels, eps=1e-3)


class ConvBlock(nn.Module):
    """musicnn's unit: convolution -> ReLU -> batch norm (in this order: the BN comes after the ReLU)."""

    def __init__(self, conv: nn.Conv1d | nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv
        self.bn = _batch_norm(nn.BatchNorm2d if isinstance(conv, nn.Conv2d) else nn.BatchNorm1d, conv.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.conv(x)))


class MusicnnModel(nn.Module):
    """musicnn's network (`build_musicnn` with 64 mid-end filters and 200 back-end units), in eval mode.

    `forward(patches [B, 187, 96])` (log-mel patches from `musicnn_patches`) returns a dict of
    `penultimate` [B, 200], `mean_pool` [B, 753], `max_pool` [B, 753] and `taggram` [B, 50] (sigmoid
    probabilities of the model's `TAGS`). Patches of another length than 187 frames work (all
    poolings are global) but are not what the model was trained on.
    """

    def __init__(self, n_tags: int = 50) -> None:
        super().__init__()
        self.input_bn = _batch_norm(nn.BatchNorm2d, 1)
        # Timbral: 7 frames x 40% / 70% of the 96 bands (38, 67), 204 filters (1.6 x 128).
        self.timbral_38 = ConvBlock(nn.Conv2d(1, 204, (7, 38)))
        self.timbral_67 = ConvBlock(nn.Conv2d(1, 204, (7, 67)))
        # Temporal: 128, 64, 32 frames x 1 band, 51 filters (1.6 x 32).
        self.temporal_128 = ConvBlock(nn.Conv2d(1, 51, (128, 1)))
        self.temporal_64 = ConvBlock(nn.Conv2d(1, 51, (64, 1)))
        self.temporal_32 = ConvBlock(nn.Conv2d(1, 51, (32, 1)))
        self.mid_1 = ConvBlock(nn.Conv1d(561, 64, 7))
        self.mid_2 = ConvBlock(nn.Conv1d(64, 64, 7))
        self.mid_3 = ConvBlock(nn.Conv1d(64, 64, 7))
        self.pool_bn = _batch_norm(nn.BatchNorm1d, 2 * 753)
        self.dense = nn.Linear(2 * 753, 200)
        self.dense_bn = _batch_norm(nn.BatchNorm1d, 200)
        self.out = nn.Linear(200, n_tags)
        self.eval()

    def forward(self, patches: torch.Tensor) -> dict[str, torch.Tensor]:
        """`patches` [B, T=187, 96] (frames x mel bands) -> features of each patch (see the class)."""
        x = self.input_bn(patches.unsqueeze(1))  # [B, 1, T, 96]
        # The timbral convolutions pad time only, 3 frames each side ('same' in time, 'valid' in
        # frequency, since each filter's output is maxed over frequency anyway); zeros come after the
        # input batch norm, as in musicnn.
        padded = F.pad(x, (0, 0, 3, 3))
        front = [self.timbral_38(padded).amax(dim=3), self.timbral_67(padded).amax(dim=3)]
        for block in (self.temporal_128, self.temporal_64, self.temporal_32):
            k = block.conv.kernel_size[0]
            # TensorFlow's 'same' padding of an even kernel puts the extra frame after: k/2 - 1 before.
            front.append(block(F.pad(x, (0, 0, (k - 1) // 2, k - 1 - (k - 1) // 2))).amax(dim=3))
        frontend = torch.cat(front, dim=1)  # [B, 561, T]
        mid_1 = self.mid_1(F.pad(frontend, (3, 3)))  # [B, 64, T]
        mid_2 = self.mid_2(F.pad(mid_1, (3, 3))) + mid_1
        mid_3 = self.mid_3(F.pad(mid_2, (3, 3))) + mid_2
        features = torch.cat([frontend, mid_1, mid_2, mid_3], dim=1)  # [B, 753, T]
        max_pool, mean_pool = features.amax(dim=2), features.mean(dim=2)
        # musicnn concatenates [B, 753, 1] max and mean on the last axis, then flattens: interleaved.
        pooled = torch.stack([max_pool, mean_pool], dim=2).flatten(1)  # [B, 1506]
        penultimate = self.dense_bn(F.relu(self.dense(self.pool_bn(pooled))))
        taggram = torch.sigmoid(self.out(penultimate))
        return {"penultimate": penultimate, "mean_pool": mean_pool, "max_pool": max_pool, "taggram": taggram}


def musicnn_features(model: MusicnnModel, wave_16k: np.ndarray, batch_size: int = 8) -> dict[str, np.ndarray]:
    """Every feature of `model` for each 3 s patch of a 16 kHz mono waveform `[T]`: `[P, D]` float32 arrays
    (D of `FEATURE_SIZES`), patches as `musicnn_patches` cuts them, `batch_size` patches at a time."""
    patches = torch.from_numpy(musicnn_patches(wave_16k))
    parameter = next(model.parameters())
    outputs: list[dict[str, torch.Tensor]] = []
    with torch.inference_mode():
        for start in range(0, len(patches), batch_size):
            batch = patches[start:start + batch_size].to(device=parameter.device, dtype=parameter.dtype)
            outputs.append(model(batch))
    return {name: torch.cat([o[name] for o in outputs]).float().cpu().numpy() for name in FEATURE_SIZES}


# ----------------------------------------------------------------- weights: TF checkpoint -> safetensors
# musicnn's TensorFlow layers in the order build_musicnn creates them -> this module's layers.
_CONVS = {"conv2d": "timbral_38", "conv2d_1": "timbral_67", "conv2d_2": "temporal_128", "conv2d_3": "temporal_64",
          "conv2d_4": "temporal_32", "conv2d_5": "mid_1", "conv2d_6": "mid_2", "conv2d_7": "mid_3"}
_NORMS = {"batch_normalization": "input_bn", **{f"batch_normalization_{i + 1}": f"{conv}.bn"
                                               for i, conv in enumerate(_CONVS.values())},
          "batch_normalization_9": "pool_bn", "batch_normalization_10": "dense_bn"}
_DENSES = {"dense": "dense", "dense_1": "out"}
_NORM_PARAMS = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}


def convert_checkpoint(tf_weights: dict[str, np.ndarray], origin: str | Path) -> dict[str, torch.Tensor]:
    """A `MusicnnModel` state dict from musicnn's TensorFlow variables (`read_bundle`'s output); a
    checkpoint that lacks one is a B2MError naming `origin`."""
    needed = ({f"{tf}/{p}" for tf in (*_CONVS, *_DENSES) for p in ("kernel", "bias")}
              | {f"{tf}/{p}" for tf in _NORMS for p in _NORM_PARAMS})
    missing = sorted(needed - set(tf_weights))
    if missing:
        raise B2MError(f"{origin}: not a musicnn checkpoint ({len(missing)} of its variables are missing, "
                       f"first {missing[0]})")
    state: dict[str, np.ndarray] = {}
    for tf_name, name in _CONVS.items():
        kernel = tf_weights[f"{tf_name}/kernel"]  # [time, width, in, out]
        if name.startswith("mid"):
            # The mid end convolves [time, channels] images with a kernel as wide as the channels (1 input
            # channel): a 1-D convolution over time with `width` input channels.
            state[f"{name}.conv.weight"] = kernel[:, :, 0, :].transpose(2, 1, 0)  # [out, channels, time]
        else:
            state[f"{name}.conv.weight"] = kernel.transpose(3, 2, 0, 1)  # [out, in, time, frequency]
        state[f"{name}.conv.bias"] = tf_weights[f"{tf_name}/bias"]
    for tf_name, name in _NORMS.items():
        for tf_param, param in _NORM_PARAMS.items():
            state[f"{name}.{param}"] = tf_weights[f"{tf_name}/{tf_param}"]
        state[f"{name}.num_batches_tracked"] = np.zeros((), dtype=np.int64)
    for tf_name, name in _DENSES.items():
        state[f"{name}.weight"] = tf_weights[f"{tf_name}/kernel"].T  # [in, out] -> [out, in]
        state[f"{name}.bias"] = tf_weights[f"{tf_name}/bias"]
    # np.array(copy) rather than ascontiguousarray, which turns the 0-d counters into 1-d arrays.
    return {name: torch.from_numpy(np.array(value, order="C")) for name, value in state.items()}


def checkpoint_folder(model: str) -> Path:
    """The folder of `model`'s TensorFlow checkpoint inside the installed musicnn wheel (found without
    importing musicnn, whose modules import TensorFlow)."""
    if model not in TAGS:
        raise B2MError(f"musicnn: unknown model {model!r}; choose one of {sorted(TAGS)}")
    spec = importlib.util.find_spec("musicnn")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        if (Path(location) / model / ".index").is_file():
            return Path(location) / model
    where = f" (the package at {locations[0]} has no {model}/.index)" if locations else ""
    raise B2MError(f"musicnn: the checkpoints of the musicnn wheel are not installed{where}; "
                   f"install them with `{INSTALL_HINT}`")


def load_musicnn(model: str) -> MusicnnModel:
    """`model` (`MTT_musicnn` or `MSD_musicnn`) with its trained weights, in eval mode on the CPU.

    The first call converts the wheel's TensorFlow checkpoint to `model.safetensors` in a cache folder
    keyed by the checkpoint files' sha256 and the conversion's version (a reinstalled or changed wheel,
    or a new b2m conversion, gets a new folder); later calls read that file. The folder also holds the
    licence notice of musicnn (`NOTICE`). Files follow the umask and are written atomically.
    """
    source = checkpoint_folder(model)
    files = [source / ".index", *sorted(source.glob(".data-*"))]
    digest = hashlib.sha256(f"musicnn conversion {CONVERSION_VERSION}".encode())
    for file in files:
        digest.update(f"{file.name}:{file_digest(file)}\n".encode())
    key = digest.hexdigest()
    folder = cache_root() / "models" / f"musicnn-{model}-{key[:12]}"
    weights = folder / "model.safetensors"
    state = _read_cache(weights, key)
    if state is None:
        state = convert_checkpoint(read_bundle(source), source)
        write_text(folder / "NOTICE", f"model.safetensors: the weights of musicnn's {model} (musicnn 0.1.0, "
                                      f"https://github.com/jordipons/musicnn), converted by b2m from the "
                                      f"TensorFlow checkpoint in {source}, under musicnn's licence:\n\n"
                                      f"{MUSICNN_LICENSE}")
        from safetensors.torch import save

        # Bytes into atomic_path's file (which has the umask's permissions): save_file would make its own.
        with atomic_path(weights) as tmp:
            tmp.write_bytes(save(state, metadata={"source_sha256": key, "model": model}))
    network = MusicnnModel(n_tags=len(TAGS[model]))
    expected = network.state_dict()
    wrong = sorted(set(expected) ^ set(state)) or [n for n, t in expected.items() if state[n].shape != t.shape]
    if wrong:  # a converter bug, or a cache file edited by hand
        raise B2MError(f"{weights}: the weights do not fit musicnn's network ({len(wrong)} tensors missing, "
                       f"unexpected or of another shape, first {wrong[0]}); delete the folder to convert again")
    network.load_state_dict(state)
    return network.eval()


def _read_cache(path: Path, key: str) -> dict[str, torch.Tensor] | None:
    """The cached state dict at `path` if it is readable and was converted from the checkpoint files
    `key` names; None (convert again) otherwise."""
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            if (handle.metadata() or {}).get("source_sha256") != key:
                return None
            return {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception:  # a truncated or damaged cache file (safetensors raises its own error types)
        return None
