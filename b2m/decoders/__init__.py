"""Decoders from fMRI windows `[B, W, V]` to embeddings `[B, L, D]`, built from `b2m/conf/decoder/<name>.yaml`."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import DictConfig

from b2m.core.config import instantiate
from b2m.core.errors import B2MError
from b2m.core.io import atomic_path
from b2m.core.runs import PREDICTIONS, prediction_files, read_config, read_predictions
from b2m.decoders.base import Decoder

DECODER_FILE = "decoder.safetensors"


def build_decoder(cfg: DictConfig, n_voxels: list[int], n_window: int, target_shape: tuple[int, int]) -> Decoder:
    """The decoder a `decoder` config section names with `_target_`, sized for the subjects' voxel
    counts, the window length (TRs) and the target shape `(L, D)`."""
    decoder = instantiate(cfg, "decoder", n_voxels=list(n_voxels), n_window=int(n_window),
                          target_shape=tuple(target_shape))
    if not isinstance(decoder, Decoder):
        raise B2MError(f"config: decoder: {cfg._target_} is not a Decoder")
    return decoder


def save_decoder(run_dir: str | Path, decoder: Decoder) -> Path:
    """Write the fitted decoder's tensors to `<run_dir>/decoder.safetensors`, with its sizes as metadata."""
    from safetensors.torch import save_file

    path = Path(run_dir) / DECODER_FILE
    meta = {"n_voxels": json.dumps(decoder.n_voxels), "n_window": str(decoder.n_window),
            "target_shape": json.dumps(list(decoder.target_shape))}
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in decoder.state_dict().items()}, str(tmp), metadata=meta)
    return path


def load_decoder(run_dir: str | Path) -> Decoder:
    """The decoder a `train.py` run fitted, from its `config.yaml` and `decoder.safetensors` (no pickle),
    in eval mode: `load_decoder(run).predict_windows(x [N, W, V], subject_index)`."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    path, config = run_dir / DECODER_FILE, run_dir / "config.yaml"
    for needed in (path, config):
        if not needed.is_file():
            raise B2MError(f"{needed}: missing; is {run_dir} a train.py run folder?")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
        n_voxels, target_shape = json.loads(meta["n_voxels"]), json.loads(meta["target_shape"])
        n_window = int(meta["n_window"])
    except Exception as err:  # safetensors raises its own types for truncated or foreign files
        raise B2MError(f"{path}: not a b2m decoder file ({' '.join(str(err).split())[:200]})") from None
    if (run_dir / PREDICTIONS).is_dir():  # the run's own predictions say what size its decoder is
        shapes = {p.subject: list(p.pred.shape[1:]) for p in map(read_predictions, prediction_files(run_dir))}
        if len(shapes) != len(n_voxels) or any(s != list(target_shape) for s in shapes.values()):
            raise B2MError(f"{path}: a decoder of {len(n_voxels)} subject(s) and target shape {list(target_shape)}, "
                           f"but the run predicted {shapes}: the file is another run's")
    decoder = build_decoder(read_config(config).get("decoder"), n_voxels, n_window, tuple(target_shape))
    try:
        missing, unexpected = decoder.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()}, strict=False)
    except RuntimeError as err:  # torch's size mismatch: the file and the config describe different decoders
        raise B2MError(f"{path}: tensors do not fit the config's decoder ({' '.join(str(err).split())[:200]})") from None
    if missing or unexpected:
        raise B2MError(f"{path}: tensors do not fit the config's decoder (missing {missing[:3]}, "
                       f"unexpected {unexpected[:3]})")
    return decoder.eval()


__all__ = ["DECODER_FILE", "Decoder", "build_decoder", "load_decoder", "save_decoder"]
