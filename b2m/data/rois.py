"""Atlas regions: a label image on the BOLD's grid and its table of names.

`data.rois.atlas` is a label NIfTI (fMRIPrep's `desc-aparcaseg_dseg` / `desc-aseg_dseg`, or
any atlas; `{subject}` is replaced); `data.rois.labels` its table, either BIDS's
`dseg.tsv` (columns `index` and `name`) or FreeSurfer's colour table (`index name R G B A`
per line, `#` comments, as FreeSurferColorLUT.txt). `data.rois.select` keeps the voxels of
the regions whose names match any of its shell patterns (`ctx-*-superiortemporal`); the
encoding analysis reports its tables per region. An atlas on another grid (fMRIPrep's
anatomical resolution) is an error unless `data.rois.resample` is true: nilearn then
resamples it onto the BOLD's grid by nearest neighbour. The atlas is one 3D image of integer
labels; a probabilistic or multi-volume (4D) atlas is refused.
"""

from __future__ import annotations

import csv
import fnmatch
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from b2m.core.errors import B2MError
from b2m.core.io import read_text
from b2m.data.nifti import load_volume, open_volume, subject_path

UNLABELLED = "unlabelled"


@dataclass(frozen=True)
class Atlas:
    """`labels` int `[X, Y, Z]` on the BOLD's grid; `names[label]` for the labels of the table."""

    labels: np.ndarray
    names: dict[int, str]
    source: Path

    def select(self, patterns: list[str]) -> np.ndarray:
        """bool `[X, Y, Z]`: the voxels of the regions whose names match one of `patterns`."""
        chosen = [label for label, name in self.names.items() if any(fnmatch.fnmatchcase(name, p) for p in patterns)]
        if not chosen:
            raise B2MError(f"data.rois.select: {patterns} matches no region of {self.source.name} "
                           f"(e.g. {', '.join(list(self.names.values())[:5])})")
        return np.isin(self.labels, chosen)

    def regions(self, mask: np.ndarray) -> np.ndarray:
        """The region name of each voxel of `mask` `[X, Y, Z]`, C order: object `[V]`."""
        return np.array([self.names.get(int(v), UNLABELLED) for v in self.labels[mask]], dtype=object)


def read_label_table(path: Path) -> dict[int, str]:
    """`{label: name}` from a BIDS dseg.tsv or a FreeSurfer colour table; label 0 is never a region."""
    lines = read_text(path, "label table").splitlines()
    rows = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not rows:
        raise B2MError(f"{path}: label table is empty")
    names: dict[int, str] = {}
    if "\t" in rows[0] and not rows[0].split("\t")[0].strip().isdigit():
        reader = csv.DictReader(rows, delimiter="\t")
        if not {"index", "name"} <= set(reader.fieldnames or []):
            raise B2MError(f"{path}: a dseg.tsv needs columns index and name, found {reader.fieldnames}")
        pairs = [(row["index"], row["name"], n + 2) for n, row in enumerate(reader)]
    else:
        pairs = [(*(row.split() + [""])[:2], n + 1) for n, row in enumerate(rows)]
    for index, name, line in pairs:
        if not str(index).strip().isdigit() or not str(name).strip():
            raise B2MError(f"{path}: line {line}: expected a label number and a name")
        if int(index) != 0:
            names[int(index)] = str(name).strip()
    return names


def load_atlas(cfg, subject: str, grid: tuple[int, int, int], affine: np.ndarray) -> Atlas | None:
    """The atlas of `data.rois` (`atlas`, `labels`, `resample`) for `subject` on the BOLD's grid, or None."""
    if cfg is None or not cfg.get("atlas"):
        return None
    if not cfg.get("labels"):
        raise B2MError("data.rois.labels: the atlas needs its label table (a dseg.tsv or a FreeSurfer LUT)")
    image, table = subject_path(cfg.atlas, subject), subject_path(cfg.labels, subject)
    names = read_label_table(table)
    if cfg.get("resample"):
        labels = _resampled(image, grid, affine)
    else:
        labels = load_volume(image, grid, affine, "atlas", "; set data.rois.resample=true to resample it")
    if not np.issubdtype(labels.dtype, np.integer) and not np.all(np.mod(labels, 1) == 0):
        raise B2MError(f"{image}: atlas values are not integer labels")
    return Atlas(labels.astype(np.int64), names, image)


def _resampled(image: Path, grid: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    from nilearn.image import resample_img

    source = open_volume(image, "atlas")
    try:
        out = resample_img(source, target_affine=affine, target_shape=grid, interpolation="nearest",
                           force_resample=True, copy_header=True)
    except Exception as err:  # nibabel and nilearn raise many types for bad images
        raise B2MError(f"{image}: cannot resample the atlas ({err})") from None
    return np.asarray(out.dataobj)
