"""A tiny dataset with known voxel tunings, for the evaluation and encoding tests.

`make_bids` gives tone stimuli whose pitch depends on genre and track, and random BOLD.
Here some voxels are overwritten with a simulated response: "spectrotemporal" voxels follow
the log pitch of the tone playing, "semantic" voxels a genre code, both through a gamma
HRF; the rest stay noise. A truth file in the demo dataset's format records the classes
by voxel index, and one voxel is made constant so that preprocessing drops it.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import nibabel as nib
import numpy as np

from b2m.core.clips import GENRES
from helpers.bids import make_bids, write_run

GRID = (5, 4, 3)
TR = 1.5
SPECTRO = [(1, y, z) for y in range(4) for z in range(3)]  # the x = 1 slab
SEMANTIC = [(2, y, z) for y in range(2) for z in range(3)]
DEAD = (4, 3, 2)  # constant: dropped by preprocessing


def tone_hz(genre: str, track: int) -> float:
    """The pitch of make_bids's tone for a track."""
    return 110 + 7 * track + 50 * len(genre)


def hrf(tr: float, length_s: float = 24.0) -> np.ndarray:
    """A gamma HRF sampled every `tr` s, peak near 5 s, unit sum."""
    t = np.arange(0, length_s, tr)
    h = t ** 5 * np.exp(-t) / math.factorial(5)
    return h / h.sum()


def simulate(root: Path, seed: int = 0, gain: float = 2.0) -> None:
    """Overwrite every run's BOLD with tuned signals plus noise; write the truth file and captions."""
    rng = np.random.default_rng(seed)
    genre_code = rng.normal(size=len(GENRES))
    for bold in sorted(root.glob("sub-*/func/*_bold.nii")):
        image = nib.load(str(bold))
        data = np.asarray(image.dataobj, dtype=np.float64)
        n_tr = data.shape[3]
        pitch, semantic = np.zeros(n_tr), np.zeros(n_tr)
        events = bold.with_name(bold.name.replace("_bold.nii", "_events.tsv"))
        with open(events, newline="") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                genre = row["genre"].strip("'\"")
                lo = int(math.ceil(float(row["onset"]) / TR))
                hi = int(math.ceil((float(row["onset"]) + float(row["duration"])) / TR))
                pitch[lo:hi] = np.log(tone_hz(genre, int(row["track"])))
                semantic[lo:hi] = genre_code[GENRES.index(genre)]
        for stimulus, voxels in ((pitch, SPECTRO), (semantic, SEMANTIC)):
            z = (stimulus - stimulus.mean()) / stimulus.std()
            response = np.convolve(z, hrf(TR))[:n_tr]
            response /= response.std()
            for v in voxels:
                data[v] += 20.0 * gain * response
        data[DEAD] = 800.0
        write_run(bold, data, TR)
    classes = np.zeros(GRID, dtype=np.int8)
    for v in SPECTRO:
        classes[v] = 1
    for v in SEMANTIC:
        classes[v] = 2
    cortex = np.ones(GRID, dtype=bool)
    cortex[0] = False  # make_bids's background slab
    for sub in sorted(p.name for p in root.glob("sub-*")):
        folder = root / "derivatives" / "demo" / sub
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / f"{sub}_desc-truth.npz", tuning_class=classes[cortex],
                 ijk=np.argwhere(cortex).astype(np.int16))
    with open(root / "stimuli" / "captions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["genre", "track", "caption"])
        for wav in sorted((root / "stimuli" / "genres").glob("*/*.wav")):
            genre, track = wav.stem.split(".")
            writer.writerow([genre, int(track), f"A {genre} piece with a steady tone."])


def make_tuned_bids(root: Path) -> Path:
    """One training and two test runs of sub-001 on a 5x4x3 grid, with tuned voxels (see the module doc)."""
    make_bids(root, training_runs=(1,), test_runs=(1, 2), grid=GRID)
    simulate(root)
    return root
