"""NIfTI access: validate a 4D run without reading it, read masked voxels in blocks; write voxel maps.

A real ds003720 run is 96x96x68x410 int16 (about 0.5 GB; fMRIPrep's float32 output,
gzipped, is 1 GB once decompressed); it is never held whole. Reading goes volume block
by volume block, keeping only the selected voxels as float32, with the header's scaling
applied.
"""

from __future__ import annotations

import gzip
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from b2m.core.errors import B2MError
from b2m.core.io import atomic_path

BLOCK_VOLUMES = 32
# The length in seconds of NIfTI's time units; the others (Hz, ppm, rad/s) are spectral, not a TR.
_SECONDS = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6, "unknown": 1.0}


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

    @property
    def header_tr(self) -> float | None:
        """The TR in seconds that the header's pixdim[4] states, or None where it states none: 0, a
        spectral unit, or 1 with no unit (the default of writers that never set it). A value with no
        unit is taken as seconds."""
        value = float(self.image.header.get_zooms()[3])
        unit = self.image.header.get_xyzt_units()[1]
        if unit not in _SECONDS or not math.isfinite(value) or value <= 0 or (unit == "unknown" and value == 1.0):
            return None
        return value * _SECONDS[unit]


def require_file(path: Path, what: str, hint: str = "") -> None:
    """A B2MError naming `what` unless `path` is a file: missing (then `hint` ends the message), or a
    folder, is said as such."""
    if path.is_dir():
        raise B2MError(f"{path}: {what} file expected, found a folder")
    if not path.is_file():
        raise B2MError(f"{path}: {what} file missing{hint}")


def open_run(path: str | Path) -> RunImage:
    """Open a 4D NIfTI lazily; a missing, unreadable, non-4D or truncated file is a B2MError."""
    path = Path(path)
    require_file(path, "NIfTI")
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


def subject_path(template: str, subject: str) -> Path:
    """A per-subject path from a template: `{subject}` is replaced by the subject label; any other brace
    (a folder named `{x}`) is kept as it is."""
    return Path(str(template).replace("{subject}", subject))


def load_mask(path: str | Path, grid: tuple[int, int, int], affine: np.ndarray | None = None) -> np.ndarray:
    """A boolean `[X, Y, Z]` mask from a 3D NIfTI; its grid (shape, and `affine` when given) must
    equal the BOLD's."""
    return load_volume(path, grid, affine, "mask") > 0


def open_volume(path: str | Path, what: str) -> nib.Nifti1Image:
    """A 3D NIfTI `what` (mask, atlas), its data not yet read; a 4D image of one volume counts as 3D,
    one of several volumes (a probabilistic or multi-volume atlas) is a B2MError."""
    path = Path(path)
    require_file(path, what)
    try:
        image = nib.load(str(path))
    except Exception as err:  # nibabel raises many types for corrupt headers
        raise B2MError(f"{path}: not a readable NIfTI {what} ({err})") from None
    if len(image.shape) == 4 and image.shape[3] == 1:
        image = image.slicer[..., 0]
    if len(image.shape) != 3:
        raise B2MError(f"{path}: {what} must be a 3D image (one value per voxel), found shape {image.shape}")
    return image


def load_volume(path: str | Path, grid: tuple[int, int, int], affine: np.ndarray | None, what: str,
                hint: str = "") -> np.ndarray:
    """A 3D NIfTI's values `[X, Y, Z]` (as stored), checked to lie on the BOLD's grid (and `affine`);
    `hint` ends the message of a grid mismatch."""
    image = open_volume(path, what)
    try:
        data = np.asanyarray(image.dataobj)
    except Exception as err:  # a truncated or corrupt data block
        raise B2MError(f"{path}: not a readable NIfTI {what} ({err})") from None
    if data.shape != tuple(grid):
        raise B2MError(f"{path}: {what} has shape {data.shape}, the BOLD grid is {tuple(grid)}{hint}")
    if affine is not None and not np.allclose(image.affine, affine, atol=1e-3):
        raise B2MError(f"{path}: {what} is on another grid than the BOLD (affines differ){hint}")
    return data


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


def write_map(path: Path, values: np.ndarray, mask: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    """Write voxel values `[V]` (the kept voxels of `mask` `[X, Y, Z]`, in C order) as a float32 NIfTI on the
    mask's grid and `affine` (mm; 0 outside the mask, NaN as 0); returns the image."""
    volume = np.zeros(mask.shape, dtype=np.float32)
    volume[mask] = np.nan_to_num(values)
    image = nib.Nifti1Image(volume, affine)
    image.header.set_xyzt_units("mm")
    with atomic_path(path) as tmp:
        # mtime=0: the same map gives the same bytes.
        tmp.write_bytes(gzip.compress(image.to_bytes(), mtime=0))
    return image


def _raw_blocks(run: RunImage):
    """Yield `(first_volume, block [k, X, Y, Z])` in the file's dtype, before scaling.

    Both plain and gzipped files are read sequentially, `BLOCK_VOLUMES` volumes at a time
    (a NIfTI stores volume after volume, so a block is one contiguous byte range): memory
    holds one block, never the run, and no memory map makes the page cache count as ours.
    """
    X, Y, Z, T = run.shape
    dtype = run.image.header.get_data_dtype()
    n_vox = X * Y * Z
    opener = gzip.open if run.path.name.endswith(".gz") else open
    buffer = bytearray(min(BLOCK_VOLUMES, T) * n_vox * dtype.itemsize)
    try:
        with opener(run.path, "rb") as f:
            f.seek(int(run.image.dataobj.offset))
            for lo in range(0, T, BLOCK_VOLUMES):
                k = min(BLOCK_VOLUMES, T - lo)
                view = memoryview(buffer)[: k * n_vox * dtype.itemsize]
                got = f.readinto(view)
                while 0 < got < len(view):  # gzip may return fewer bytes than asked before the end
                    more = f.readinto(view[got:])
                    if not more:
                        break
                    got += more
                if got < len(view):
                    raise B2MError(f"{run.path}: truncated NIfTI: volume {lo + got // (n_vox * dtype.itemsize)} "
                                   f"of {T} is missing")
                raw = np.frombuffer(view, dtype=dtype)
                # NIfTI stores each volume in Fortran order: x fastest.
                yield lo, raw.reshape(k, Z, Y, X).transpose(0, 3, 2, 1)
            # To the end of the stream: gzip checks its CRC there, so a corrupted .nii.gz is an error.
            while f.read(1 << 20):
                pass
    except (OSError, EOFError, zlib.error) as err:
        raise B2MError(f"{run.path}: unreadable data ({err})") from None


def _scale(values: np.ndarray, run: RunImage) -> np.ndarray:
    """Apply the header's scl_slope / scl_inter (either may be unset); returns float32."""
    out = values.astype(np.float32)
    slope, inter = run.image.dataobj.slope, run.image.dataobj.inter
    if slope is not None and np.isfinite(slope) and slope != 1.0:
        out *= np.float32(slope)
    if inter is not None and np.isfinite(inter) and inter != 0.0:
        out += np.float32(inter)
    return out
