"""Embedding spaces that decoders predict, keyed by their config name."""

from __future__ import annotations

from typing import Any, Callable

from b2m.errors import B2MError
from b2m.targets.base import EmbeddingSpace, embed_clips

SPACES: dict[str, type[EmbeddingSpace]] = {}


def register(cls: type[EmbeddingSpace]) -> type[EmbeddingSpace]:
    """Class decorator: make a space available under `cls.name`."""
    SPACES[cls.name] = cls
    return cls


def build_space(name: str, **config: Any) -> EmbeddingSpace:
    """Instantiate the space registered as `name` with its config."""
    _import_all()
    if name not in SPACES:
        raise B2MError(f"target: unknown embedding space {name!r}; known: {sorted(SPACES)}")
    return SPACES[name](**config)


def _import_all() -> None:
    # Importing the modules runs their @register decorators.
    from b2m.targets import acoustic, text, windowed  # noqa: F401


__all__ = ["EmbeddingSpace", "SPACES", "build_space", "embed_clips", "register"]
