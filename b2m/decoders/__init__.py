"""Decoders from fMRI windows `[B, W, V]` to embeddings `[B, L, D]`, built from `b2m/conf/decoder/<name>.yaml`."""

from __future__ import annotations

from omegaconf import DictConfig

from b2m.core.config import instantiate
from b2m.core.errors import B2MError
from b2m.decoders.base import Decoder


def build_decoder(cfg: DictConfig, n_voxels: list[int], n_window: int, target_shape: tuple[int, int]) -> Decoder:
    """The decoder a `decoder` config section names with `_target_`, sized for the subjects' voxel
    counts, the window length (TRs) and the target shape `(L, D)`."""
    decoder = instantiate(cfg, "decoder", n_voxels=list(n_voxels), n_window=int(n_window),
                          target_shape=tuple(target_shape))
    if not isinstance(decoder, Decoder):
        raise B2MError(f"config: decoder: {cfg._target_} is not a Decoder")
    return decoder


__all__ = ["Decoder", "build_decoder"]
