"""Embedding spaces that decoders predict: one class per space, built from `b2m/conf/target/<name>.yaml`."""

from __future__ import annotations

from omegaconf import DictConfig

from b2m.core.config import choices, config_dir, group_config, instantiate
from b2m.core.errors import B2MError
from b2m.targets.base import EmbeddingSpace, embed_clips


def build_space(cfg: DictConfig) -> EmbeddingSpace:
    """The space a `target` config section names with `_target_`."""
    space = instantiate(cfg, "target")
    if not isinstance(space, EmbeddingSpace):
        raise B2MError(f"config: target: {cfg._target_} is not an EmbeddingSpace")
    return space


def space_by_name(name: str, key: str = "target") -> EmbeddingSpace:
    """The space of the packaged config `target/<name>.yaml` (e.g. `acoustic`, `caption`); an unknown
    name is a B2MError naming the config `key` that asked for it."""
    if name not in choices("target"):
        raise B2MError(f"{key}: no target config {name!r} in {config_dir() / 'target'}; known: {choices('target')}")
    return build_space(group_config("target", name))


__all__ = ["EmbeddingSpace", "build_space", "embed_clips", "space_by_name"]
