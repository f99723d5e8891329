"""Decoders from fMRI windows `[B, W, V]` to embeddings `[B, L, D]`, keyed by config name."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from b2m.decoders.base import Decoder
from b2m.errors import B2MError


def build_decoder(cfg: DictConfig, n_voxels: list[int], n_window: int, target_shape: tuple[int, int]) -> Decoder:
    """The decoder named `cfg.name`, sized for the subjects' voxel counts and the target shape."""
    params = OmegaConf.to_container(cfg, resolve=True)
    name = params.pop("name")
    if name == "ridge":
        from b2m.decoders.linear import RidgeDecoder

        return RidgeDecoder(n_voxels, n_window, target_shape, **params)
    raise B2MError(f"decoder: unknown decoder {name!r}; known: ['ridge']")


__all__ = ["Decoder", "build_decoder"]
