"""Per-run preprocessing (drift removal, z-score), voxel selection, and its cache.

The cache holds, per subject and per distinct preprocessing (config, mask, run
files), one float32 `[T, V]` array per run and the final voxel mask, so a second
run of the pipeline skips reading the NIfTI files.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import bottleneck as bn
import numpy as np
from tqdm.auto import tqdm

from b2m.data.bids import Run
from b2m.data.nifti import load_mask, mean_volume, open_run, read_masked
from b2m.core.errors import B2MError
from b2m.core.io import save_npy, write_json

CACHE_VERSION = 1


@dataclass(frozen=True)
class PreprocessConfig:
    """How each run is cleaned.

    detrend: "median" (running median over `median_window_s` seconds, removed),
        "poly" (least-squares polynomial of `poly_order` in time, removed) or "none".
    mask: a NIfTI path (may contain `{subject}`), or None for the automatic rule:
        voxels whose mean intensity in the first run exceeds `auto_threshold` times
        its 98th percentile (the brain, not the background).
    """

    detrend: str = "median"
    median_window_s: float = 240.0
    poly_order: int = 2
    zscore: bool = True
    mask: str | None = None
    auto_threshold: float = 0.3

    def __post_init__(self) -> None:
        if self.detrend not in ("median", "poly", "none"):
            raise B2MError(f"data.preprocess.detrend: expected median, poly or none, got {self.detrend!r}")


@dataclass
class SubjectData:
    """Preprocessed runs of one subject: `runs[run.name]` is float32 `[T, V]`."""

    subject: str
    mask: np.ndarray          # [X, Y, Z] bool, the V kept voxels
    affine: np.ndarray        # [4, 4]
    runs: dict[str, np.ndarray]

    @property
    def n_voxels(self) -> int:
        return int(self.mask.sum())


def detrend(x: np.ndarray, tr: float, cfg: PreprocessConfig) -> np.ndarray:
    """Remove slow drift from `x` `[T, V]` (TR `tr` seconds); returns float32 `[T, V]`."""
    x = np.asarray(x, dtype=np.float32)
    if cfg.detrend == "none":
        return x
    if cfg.detrend == "poly":
        t = np.linspace(-1.0, 1.0, len(x))
        basis = np.vander(t, cfg.poly_order + 1)
        coef, *_ = np.linalg.lstsq(basis, x, rcond=None)
        return (x - basis @ coef).astype(np.float32)
    window = max(1, int(round(cfg.median_window_s / tr)))
    window += 1 - window % 2  # odd, so the window is centred
    half = window // 2
    # Edge samples repeated ("nearest" boundary), then a trailing running median (bottleneck,
    # O(log w) per step) whose output at i + w - 1 is the centred median at i.
    padded = np.concatenate([np.repeat(x[:1], half, 0), x, np.repeat(x[-1:], half, 0)], axis=0)
    trend = bn.move_median(padded, window, axis=0)[window - 1:]
    return (x - trend).astype(np.float32)


def zscore(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-voxel z-score of `[T, V]`; also returns the bad voxels `[V]` (constant or non-finite)."""
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    bad = ~np.isfinite(mean) | ~np.isfinite(std) | (std < 1e-6)
    std = np.where(bad, 1.0, std)
    out = (x - mean) / std
    out[:, bad] = 0.0
    return out.astype(np.float32), bad


def preprocess_subject(
    subject: str, runs: list[Run], tr: float, cfg: PreprocessConfig, cache_dir: str | Path | None
) -> SubjectData:
    """Load, clean and cache every run of `subject`; voxels bad in any run are dropped with a warning."""
    images = [open_run(run.bold) for run in runs]
    grid = images[0].grid
    for run, image in zip(runs, images):
        if image.grid != grid:
            raise B2MError(f"{run.bold}: voxel grid {image.grid} differs from {runs[0].bold.name}'s {grid}")

    if cfg.mask is not None:
        mask = load_mask(cfg.mask.format(subject=subject), grid)
    else:
        mean = mean_volume(images[0])
        finite = mean[np.isfinite(mean)]
        level = np.percentile(finite, 98) if finite.size else 0.0
        mask = np.isfinite(mean) & (mean > cfg.auto_threshold * level)
    if not mask.any():
        raise B2MError(f"{cfg.mask or runs[0].bold}: the voxel mask of {subject} selects no voxel")

    folder = _cache_folder(cache_dir, subject, runs, cfg, mask)
    if folder is not None and (folder / "meta.json").exists():
        kept = np.load(folder / "mask.npy", allow_pickle=False)
        data = {run.name: np.load(folder / f"{run.name}.npy", mmap_mode="r") for run in runs}
        return SubjectData(subject, kept, images[0].affine, data)

    data, bad = {}, np.zeros(int(mask.sum()), dtype=bool)
    for run, image in tqdm(list(zip(runs, images)), desc=f"preprocess {subject}", leave=False):
        x = read_masked(image, mask)
        cleaned = detrend(x, tr, cfg)
        if cfg.zscore:
            cleaned, run_bad = zscore(cleaned)
        else:
            run_bad = ~np.isfinite(cleaned).all(axis=0) | (cleaned.std(axis=0) < 1e-6)
        bad |= run_bad
        data[run.name] = cleaned
    if bad.any():
        warnings.warn(f"{subject}: dropped {int(bad.sum())} of {bad.size} voxels that are constant or NaN "
                      f"in at least one run", stacklevel=2)
        if bad.all():
            raise B2MError(f"{runs[0].bold.parent}: every selected voxel of {subject} is constant or NaN")
        data = {name: np.ascontiguousarray(x[:, ~bad]) for name, x in data.items()}
        kept = mask.copy()
        kept[mask] = ~bad
    else:
        kept = mask
    if folder is not None:
        for name, x in data.items():
            save_npy(folder / f"{name}.npy", x)
        save_npy(folder / "mask.npy", kept)
        write_json(folder / "meta.json", {"subject": subject, "config": asdict(cfg),
                                          "runs": [r.name for r in runs], "n_voxels": int(kept.sum())})
    return SubjectData(subject, kept, images[0].affine, data)


def _cache_folder(cache_dir, subject, runs, cfg, mask) -> Path | None:
    if cache_dir is None:
        return None
    stats = [(r.bold.name, r.bold.stat().st_size, r.bold.stat().st_mtime_ns) for r in runs]
    blob = json.dumps({"v": CACHE_VERSION, "cfg": asdict(cfg), "runs": stats,
                       "mask": hashlib.sha1(np.packbits(mask).tobytes()).hexdigest()}, sort_keys=True)
    return Path(cache_dir) / subject / hashlib.sha1(blob.encode()).hexdigest()[:12]
