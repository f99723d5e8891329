"""A small hand-made BIDS dataset in the ds003720 layout, built from the project's copy of the
real events, with random BOLD and sine-tone stimuli."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import soundfile as sf

META = Path(__file__).resolve().parents[2] / "b2m" / "data" / "ds003720_meta"


def write_run(path: Path, data: np.ndarray, tr: float = 1.5) -> None:
    """Write int16 BOLD `[X, Y, Z, T]` as an uncompressed NIfTI with 2 mm voxels."""
    img = nib.Nifti1Image(data.astype(np.int16), np.diag([2.0, 2.0, 2.0, 1.0]))
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = tr
    nib.save(img, str(path))


def make_bids(root: Path, subjects=(1,), training_runs=(1,), test_runs=(1,), grid=(4, 4, 3),
              n_volumes: int = 410, seed: int = 0, audio_rate: int = 8000) -> Path:
    """A tiny dataset: real events and sidecars, random BOLD (brain block + empty border), tone stimuli
    and template captions."""
    rng = np.random.default_rng(seed)
    tracks = set()
    for s in subjects:
        sub = f"sub-{s:03d}"
        func = root / sub / "func"
        func.mkdir(parents=True)
        for task, runs in (("Training", training_runs), ("Test", test_runs)):
            for r in runs:
                stem = f"{sub}_task-{task}_run-{r:02d}"
                for suffix in ("_events.tsv", "_bold.json"):
                    shutil.copy(META / sub / "func" / f"{stem}{suffix}", func / f"{stem}{suffix}")
                data = rng.normal(800, 20, size=(*grid, n_volumes))
                data[0] = rng.normal(5, 1, size=(grid[1], grid[2], n_volumes))  # background slab
                write_run(func / f"{stem}_bold.nii", data)
                for line in (func / f"{stem}_events.tsv").read_text().splitlines()[1:]:
                    cols = line.split("\t")
                    tracks.add((cols[2].strip("'\""), int(cols[3])))
    for genre, track in tracks:
        folder = root / "stimuli" / "genres" / genre
        folder.mkdir(parents=True, exist_ok=True)
        t = np.arange(int(30 * audio_rate)) / audio_rate
        tone = 0.3 * np.sin(2 * np.pi * (110 + 7 * track + 50 * len(genre)) * t)
        sf.write(folder / f"{genre}.{track:05d}.wav", tone.astype(np.float32), audio_rate)
    rows = [f"{genre},{track},A {genre} track with a tone (number {track})." for genre, track in sorted(tracks)]
    (root / "stimuli" / "captions.csv").write_text("genre,track,caption\n" + "\n".join(rows) + "\n")
    return root
