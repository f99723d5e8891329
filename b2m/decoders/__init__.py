"""Decoders from fMRI windows `[B, W, V]` to embeddings `[B, L, D]`, keyed by config name."""

from __future__ import annotations

import importlib

from omegaconf import DictConfig, OmegaConf

from b2m.decoders.base import Decoder
from b2m.errors import B2MError

# Config name -> (module, class); adding a decoder is adding a file and a line here.
DECODERS = {
    "ridge": ("b2m.decoders.linear", "RidgeDecoder"),
    "mlp": ("b2m.decoders.mlp", "MLPDecoder"),
    "transformer": ("b2m.decoders.transformer", "TransformerDecoder"),
}


def build_decoder(cfg: DictConfig, n_voxels: list[int], n_window: int, target_shape: tuple[int, int]) -> Decoder:
    """The decoder named `cfg.name`, sized for the subjects' voxel counts and the target shape."""
    params = OmegaConf.to_container(cfg, resolve=True)
    name = params.pop("name")
    if name not in DECODERS:
        raise B2MError(f"decoder: unknown decoder {name!r}; known: {sorted(DECODERS)}")
    module_name, class_name = DECODERS[name]
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(n_voxels, n_window, target_shape, **params)


__all__ = ["Decoder", "build_decoder"]
