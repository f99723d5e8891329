"""Clip captions: a CSV with columns `genre, track, caption`, one row per track.

Used for the demo dataset's template captions and for the 540 released
Brain2Music captions. Genre values may carry quotes as in ds003720's events
(`'blues'`, `classical'`): they are stripped.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from b2m.core.errors import B2MError
from b2m.core.io import read_text

COLUMNS = ("genre", "track", "caption")


def read_captions(path: str | Path) -> dict[tuple[str, int], str]:
    """Read a captions CSV into `{(genre, track): caption}`; `track` is the GTZAN track number."""
    path = Path(path)
    with io.StringIO(read_text(path, "captions file"), newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            raise B2MError(f"{path}: captions file is empty")
        fields = [name.strip() for name in reader.fieldnames]
        missing = [c for c in COLUMNS if c not in fields]
        if missing:
            raise B2MError(f"{path}: captions file lacks column(s) {missing}; needs {list(COLUMNS)}")
        reader.fieldnames = fields
        captions: dict[tuple[str, int], str] = {}
        for line, row in enumerate(reader, start=2):
            genre = (row["genre"] or "").strip().strip("'\"").strip()
            try:
                track = int((row["track"] or "").strip())
            except ValueError:
                raise B2MError(f"{path}:{line}: track {row['track']!r} is not an integer") from None
            key = (genre, track)
            if key in captions:
                raise B2MError(f"{path}:{line}: a second caption for {genre} track {track}")
            captions[key] = (row["caption"] or "").strip()
    if not captions:
        raise B2MError(f"{path}: captions file has no rows")
    return captions
