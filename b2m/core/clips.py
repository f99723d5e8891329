"""Clip identity: a 15 s excerpt of one GTZAN track, `(genre, track, start)`."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

GENRES: tuple[str, ...] = (
    "blues", "classical", "country", "disco", "hiphop",
    "jazz", "metal", "pop", "reggae", "rock",
)

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def sanitise(name: str) -> str:
    """Turn any string into one safe file-name component (no separators, no '..', not empty, no leading
    dot), collision-free: a name that had to change gets a hash of the original (`a_b-1f3c9e2a`), so two
    names that differ never share a file."""
    safe = _SAFE.sub("_", name).strip("._")
    if safe == name:
        return safe
    return f"{safe or '_'}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


@dataclass(frozen=True, order=True)
class Clip:
    """One stimulus excerpt: `start`/`end` are seconds into the 30 s track."""

    genre: str
    track: int
    start: float
    end: float

    @property
    def clip_id(self) -> str:
        """A stable id such as `blues.00012_6.46`; safe as a file name."""
        return sanitise(f"{self.genre}.{self.track:05d}_{self.start:.2f}")

    @property
    def track_name(self) -> str:
        """The GTZAN file stem, e.g. `blues.00012`."""
        return f"{self.genre}.{self.track:05d}"
