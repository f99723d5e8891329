"""Per-run preprocessing (drift and confound regression, z-score), voxel selection, and its cache.

The cache holds, per subject and per distinct preprocessing (BOLD files, TR, config, confound
regressors, voxel mask: `_cache_folder`), one float32 `[T, V]` array per run and the final voxel
mask, so a second run of the pipeline skips reading the NIfTI files.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import bottleneck as bn
import numpy as np

from b2m.data.bids import Run
from b2m.data.confounds import ConfoundConfig, RunConfounds, load_run_confounds
from b2m.data.nifti import RunImage, load_mask, mean_volume, open_run, read_masked, subject_path
from b2m.core.errors import B2MError
from b2m.core.io import save_npy, write_json
from b2m.core.log import progress

CACHE_VERSION = 2


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


def clean(x: np.ndarray, tr: float, cfg: PreprocessConfig, nuisance: np.ndarray | None = None,
          censored: np.ndarray | None = None) -> np.ndarray:
    """Remove slow drift and nuisance regressors from `x` `[T, V]` (TR `tr` s) in one regression.

    `nuisance` `[T, K]` (confounds) and `censored` `[T]` bool (each censored volume becomes a
    spike regressor, so it is left out of the fit and its residual is 0) are regressed out
    together with the drift basis: a polynomial in time (`poly`) or, for `median`, a constant
    after the running median has been removed from the signals and the nuisance alike.
    Returns float32 `[T, V]`.
    """
    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    nuisance = np.zeros((n, 0)) if nuisance is None else np.asarray(nuisance, dtype=np.float64)
    if cfg.detrend == "median":
        x = x - running_median(x, tr, cfg.median_window_s)
        if nuisance.shape[1]:
            nuisance = nuisance - running_median(nuisance, tr, cfg.median_window_s)
    spikes = np.eye(n)[:, censored] if censored is not None else np.zeros((n, 0))
    extra = np.concatenate([nuisance, spikes], axis=1)
    if cfg.detrend == "poly":
        drift = np.vander(np.linspace(-1.0, 1.0, n), cfg.poly_order + 1)
    else:
        drift = np.ones((n, 1)) if extra.shape[1] else np.zeros((n, 0))
    design = np.concatenate([drift, extra], axis=1)
    if design.shape[1] == 0:
        return x
    # An orthonormal basis of the design's column space; the SVD drops collinear regressors
    # (fMRIPrep's cosines and a polynomial, say), which a plain QR would count twice.
    u, sv, _ = np.linalg.svd(design, full_matrices=False)
    basis = u[:, sv > sv[0] * max(design.shape) * np.finfo(float).eps]
    # In float64: a constant voxel must stay constant (and be dropped), not become rounding noise.
    x = x.astype(np.float64)
    x -= basis @ (basis.T @ x)
    return x.astype(np.float32)


def running_median(x: np.ndarray, tr: float, window_s: float) -> np.ndarray:
    """The centred running median of `x` `[T, K]` over `window_s` seconds (edges repeated): `[T, K]`."""
    window = max(1, int(round(window_s / tr)))
    window += 1 - window % 2  # odd, so the window is centred
    half = window // 2
    # Edge samples repeated ("nearest" boundary), then a trailing running median (bottleneck,
    # O(log w) per step) whose output at i + w - 1 is the centred median at i.
    padded = np.concatenate([np.repeat(x[:1], half, 0), x, np.repeat(x[-1:], half, 0)], axis=0)
    return bn.move_median(padded, window, axis=0)[window - 1:].astype(x.dtype)


def zscore(x: np.ndarray, censored: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-voxel z-score of `[T, V]` over the volumes not `censored` (those are set to 0);
    also returns the bad voxels `[V]` (constant or non-finite)."""
    kept = x if censored is None or not censored.any() else x[~censored]
    mean = kept.mean(axis=0)
    std = kept.std(axis=0)
    bad = ~np.isfinite(mean) | ~np.isfinite(std) | (std < 1e-6)
    std = np.where(bad, 1.0, std)
    out = (x - mean) / std
    out[:, bad] = 0.0
    if censored is not None:
        out[censored] = 0.0
    return out.astype(np.float32), bad


def voxel_mask(subject: str, runs: list[Run], images: list[RunImage], cfg: PreprocessConfig,
               restrict: np.ndarray | None) -> np.ndarray:
    """The voxels to read `[X, Y, Z]` bool: `cfg.mask`, else the runs' fMRIPrep brain masks (voxels in
    all of them), else the automatic rule; then only those in `restrict` (atlas regions) when given."""
    grid, affine = images[0].grid, images[0].affine
    if cfg.mask is not None:
        mask = load_mask(subject_path(cfg.mask, subject), grid, affine)
        source = cfg.mask
    elif runs[0].mask is not None:
        mask = np.ones(grid, dtype=bool)
        for run in runs:
            mask &= load_mask(run.mask, grid, affine)
        source = f"{runs[0].mask.parent}: the brain masks"
    else:
        mean = mean_volume(images[0])
        finite = mean[np.isfinite(mean)]
        level = np.percentile(finite, 98) if finite.size else 0.0
        mask = np.isfinite(mean) & (mean > cfg.auto_threshold * level)
        source = str(runs[0].bold)
    if restrict is not None:
        mask &= restrict
        source += " and data.rois.select"
    if not mask.any():
        raise B2MError(f"{source}: the voxel mask of {subject} selects no voxel")
    return mask


def preprocess_subject(subject: str, runs: list[Run], tr: float, cfg: PreprocessConfig,
                       cache_dir: str | Path | None, confounds: ConfoundConfig = ConfoundConfig(),
                       restrict: np.ndarray | None = None) -> SubjectData:
    """Load, clean and cache every run of `subject`; voxels bad in any run are dropped with a warning.

    Each run is regressed on its drift basis and `confounds` (nilearn's strategies), then z-scored.
    With a cache, each cleaned run goes to disk as soon as it is done and is read back memory-mapped,
    so memory holds one run at a time (the reading is blockwise, `b2m.data.nifti`).
    """
    images = [open_run(run.bold) for run in runs]
    grid = images[0].grid
    for run, image in zip(runs, images):
        if image.grid != grid:
            raise B2MError(f"{run.bold}: voxel grid {image.grid} differs from {runs[0].bold.name}'s {grid}")
        if not np.allclose(image.affine, images[0].affine, atol=1e-3):
            raise B2MError(f"{run.bold}: affine differs from {runs[0].bold.name}'s (runs must share one space)")
    mask = voxel_mask(subject, runs, images, cfg, restrict)
    nuisance = [load_run_confounds(run, confounds, image.n_volumes) for run, image in zip(runs, images)]

    folder = _cache_folder(cache_dir, subject, runs, tr, cfg, nuisance, mask)
    cached = _read_cache(folder, runs, images) if folder is not None else None
    if cached is not None:
        return SubjectData(subject, cached[0], images[0].affine, cached[1])

    data, bad = {}, np.zeros(int(mask.sum()), dtype=bool)
    censored = {}
    for run, image, conf in progress(list(zip(runs, images, nuisance)), f"preprocess {subject}", unit="runs"):
        cleaned = clean(read_masked(image, mask), tr, cfg, conf.regressors, conf.censored)
        if cfg.zscore:
            cleaned, run_bad = zscore(cleaned, conf.censored)
        else:
            run_bad = ~np.isfinite(cleaned).all(axis=0) | (cleaned.std(axis=0) < 1e-6)
        bad |= run_bad
        censored[run.name] = int(conf.censored.sum())
        if folder is not None:
            save_npy(folder / f"{run.name}.npy", cleaned)
            cleaned = np.load(folder / f"{run.name}.npy", mmap_mode="r")
        data[run.name] = cleaned
    kept = mask
    if bad.any():
        warnings.warn(f"{subject}: dropped {int(bad.sum())} of {bad.size} voxels that are constant or NaN "
                      f"in at least one run", stacklevel=2)
        if bad.all():
            raise B2MError(f"{runs[0].bold.parent}: every selected voxel of {subject} is constant or NaN")
        kept = mask.copy()
        kept[mask] = ~bad
        for name in data:  # one run in memory at a time
            data[name] = np.ascontiguousarray(data[name][:, ~bad])
            if folder is not None:
                save_npy(folder / f"{name}.npy", data[name])
                data[name] = np.load(folder / f"{name}.npy", mmap_mode="r")
    if folder is not None:
        save_npy(folder / "mask.npy", kept)
        write_json(folder / "meta.json", {"subject": subject, "tr": tr, "config": asdict(cfg),
                                          "confounds": asdict(confounds),
                                          "censored_volumes": censored, "runs": [r.name for r in runs],
                                          "n_voxels": int(kept.sum())})
    return SubjectData(subject, kept, images[0].affine, data)


def _read_cache(folder: Path, runs: list[Run], images: list[RunImage]) -> tuple[np.ndarray, dict] | None:
    """The cached mask `[X, Y, Z]` and runs `{name: [T, V]}` (memory-mapped), or None if the cache is
    incomplete or damaged (a file cut short, another shape): it is then computed again."""
    if not (folder / "meta.json").is_file():
        return None
    try:
        kept = np.load(folder / "mask.npy", allow_pickle=False)
        data = {run.name: np.load(folder / f"{run.name}.npy", mmap_mode="r") for run in runs}
    except (OSError, ValueError, EOFError):
        kept, data = None, {}
    n_kept = int(kept.sum()) if kept is not None and kept.dtype == bool else -1
    if n_kept < 0 or any(data[r.name].shape != (i.n_volumes, n_kept) for r, i in zip(runs, images)):
        warnings.warn(f"{folder}: damaged preprocessing cache; computing it again", stacklevel=3)
        return None
    return kept, data


def _cache_folder(cache_dir: str | Path | None, subject: str, runs: list[Run], tr: float, cfg: PreprocessConfig,
                  nuisance: list[RunConfounds], mask: np.ndarray) -> Path | None:
    """The cache entry of everything the cleaned runs depend on: the BOLD files (path, size, modification
    time: hashing them would read them), the TR (the median filter's width), the preprocessing config,
    the confound regressors and censored volumes as loaded, and the voxel mask (which covers a mask
    file and the atlas regions)."""
    if cache_dir is None:
        return None
    stats = [(str(r.bold), r.bold.stat().st_size, r.bold.stat().st_mtime_ns) for r in runs]
    confounds = hashlib.sha1()
    for conf in nuisance:
        confounds.update(json.dumps(conf.names).encode())
        confounds.update(np.ascontiguousarray(conf.regressors, dtype=np.float64).tobytes())
        confounds.update(np.packbits(conf.censored).tobytes())
    blob = json.dumps({"v": CACHE_VERSION, "cfg": asdict(cfg), "tr": tr, "runs": stats,
                       "confounds": confounds.hexdigest(), "grid": list(mask.shape),
                       "mask": hashlib.sha1(np.packbits(mask).tobytes()).hexdigest()}, sort_keys=True)
    return Path(cache_dir) / subject / hashlib.sha1(blob.encode()).hexdigest()[:12]
