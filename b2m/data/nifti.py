"""Lazy NIfTI access: validate a 4D run without reading it, then read masked voxels in blocks.

A real ds003720 run is 96x96x68x410 int16 (about 0.5 GB); it is never held
whole in float64. Reading goes volume block by volume block, keeping only the
selected voxels as float32, with the header's scaling applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from b2m.core.errors import B2MError

BLOCK_VOLUMES = 32


@dataclass
class RunImage:
    """A validated 4D image: grid `shape[:3]`, `n_volumes` TRs, header scaling."""

    path: Path
    image: nib.Nifti1Image
    shape: tuple[int, int, int, int]
    affine: np.ndarray

    @property
    def grid(self) -> tuple[int, int, int]:
        return self.shape[:3]

    @property
    def n_volumes(self) -> int:
        return self.shape[3]


def open_run(path: str | Path) -> RunImage:
    """Open a 4D NIfTI lazily; a missing, unreadable, non-4D or truncated file is a B2MError."""
    path = Path(path)
    if not path.exists():
        raise B2MError(f"{path}: NIfTI file missing")
    try:
        image = nib.load(str(path), mmap=False)
    except Exception as err:  # nibabel raises many types for corrupt headers
        raise B2MError(f"{path}: not a readable NIfTI ({err})") from None
    shape = tuple(int(s) for s in image.shape)
    if len(shape) != 4:
        raise B2MError(f"{path}: expected a 4D image, found shape {shape}")
    if not path.name.endswith(".gz"):
        header = image.header
        expected = int(image.dataobj.offset) + int(np.prod(shape)) * header.get_data_dtype().itemsize
        size = path.stat().st_size
        if size < expected:
            raise B2MError(f"{path}: truncated NIfTI: {size} bytes, the header needs {expected}")
    return RunImage(path, image, shape, image.affine)


def load_mask(path: str | Path, grid: tuple[int, int, int]) -> np.ndarray:
    """A boolean `[X, Y, Z]` mask from a 3D NIfTI; its grid must equal the BOLD grid."""
    path = Path(path)
    if not path.exists():
        raise B2MError(f"{path}: mask file missing")
    try:
        data = np.asanyarray(nib.load(str(path)).dataobj)
    except Exception as err:
        raise B2MError(f"{path}: not a readable NIfTI mask ({err})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.shape != tuple(grid):
        raise B2MError(f"{path}: mask has shape {data.shape}, the BOLD grid is {tuple(grid)}")
    return data > 0


def mean_volume(run: RunImage) -> np.ndarray:
    """The temporal mean `[X, Y, Z]` (float32), read block by block."""
    total = np.zeros(run.grid, dtype=np.float64)
    for _, block in _raw_blocks(run):
        total += block.sum(axis=0, dtype=np.float64)
    return _scale(total / run.n_volumes, run)


def read_masked(run: RunImage, mask: np.ndarray) -> np.ndarray:
    """The voxels of `mask` over time: float32 `[T, V]`, V in C order of the `[X, Y, Z]` grid."""
    out = np.empty((run.n_volumes, int(mask.sum())), dtype=np.float32)
    for lo, block in _raw_blocks(run):
        out[lo:lo + len(block)] = _scale(block[:, mask], run)
    return out


def _raw_blocks(run: RunImage):
    """Yield `(first_volume, block [k, X, Y, Z])` in the file's dtype, before scaling.

    Uncompressed files are read with plain file reads (no memory map, so the page
    cache does not count as this process's memory); gzipped ones are decompressed once.
    """
    X, Y, Z, T = run.shape
    if run.path.name.endswith(".gz"):
        # A gzip stream cannot be read block by block cheaply: decompress once (int16, the file's
        # own size in memory), then hand out blocks of it.
        raw = np.asarray(run.image.dataobj.get_unscaled())
        for lo in range(0, T, BLOCK_VOLUMES):
            yield lo, np.moveaxis(raw[..., lo:lo + BLOCK_VOLUMES], -1, 0)
        return
    dtype = run.image.header.get_data_dtype()
    offset = int(run.image.dataobj.offset)
    n_vox = X * Y * Z
    with open(run.path, "rb") as f:
        for lo in range(0, T, BLOCK_VOLUMES):
            k = min(BLOCK_VOLUMES, T - lo)
            f.seek(offset + lo * n_vox * dtype.itemsize)
            raw = np.fromfile(f, dtype=dtype, count=k * n_vox)
            if raw.size != k * n_vox:
                raise B2MError(f"{run.path}: truncated NIfTI: volume {lo + raw.size // n_vox} is missing")
            # NIfTI stores each volume in Fortran order: x fastest.
            yield lo, raw.reshape(k, Z, Y, X).transpose(0, 3, 2, 1)


def _scale(values: np.ndarray, run: RunImage) -> np.ndarray:
    """Apply the header's scl_slope / scl_inter (either may be unset); returns float32."""
    out = values.astype(np.float32)
    slope, inter = run.image.dataobj.slope, run.image.dataobj.inter
    if slope is not None and np.isfinite(slope) and slope != 1.0:
        out *= np.float32(slope)
    if inter is not None and np.isfinite(inter) and inter != 0.0:
        out += np.float32(inter)
    return out
