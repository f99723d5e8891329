"""The demo in fMRIPrep's output layout: preprocessed BOLD with confound-driven artefacts, and the confounds.

Written under `<out>/derivatives/fmriprep` (`--layout fmriprep`), per run:
  sub-00S/func/sub-00S_task-T_run-NN_space-T1w_desc-preproc_bold.nii.gz   float32, gzipped
  sub-00S/func/sub-00S_task-T_run-NN_space-T1w_desc-preproc_bold.json     RepetitionTime
  sub-00S/func/sub-00S_task-T_run-NN_space-T1w_desc-brain_mask.nii.gz
  sub-00S/func/sub-00S_task-T_run-NN_desc-confounds_timeseries.{tsv,json}
and per subject `sub-00S/anat/sub-00S_desc-aparcaseg_dseg.nii.gz` (on the BOLD's grid) with the
label table `desc-aparcaseg_dseg.tsv` at the top. The events stay in the raw root.

What the artefacts are (on top of the simulated signal, noise and drift of `b2m.demo.bold`):
- Head motion: six rigid-body parameters (mm, rad), a slow random walk with a few sudden
  jumps. A voxel's intensity changes to first order as `-grad(I) . u`, with `u` the rigid
  displacement at the voxel and `I` the mean image, so edge voxels suffer most; a jump also
  dims the volume it happens in (spin history), which only censoring removes.
- Physiology: a white-matter and a CSF time course (slow AR(1) plus an aliased respiratory
  oscillation) loading on every brain voxel, most on CSF, least on cortex.
The confounds TSV holds what fMRIPrep would measure: the motion parameters (with estimation
noise), their derivatives and squares, the mean signals of the white matter, the CSF and the
brain, framewise displacement, DVARS, the 128 s cosine basis and motion outliers, with
`n/a` in the first row of every derivative.
"""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path
from typing import Iterator

import nibabel as nib
import numpy as np
from scipy.ndimage import distance_transform_edt, gaussian_filter

from b2m.core.io import atomic_path, write_json, write_text
from b2m.demo.anatomy import AUDITORY, SEMANTIC, VOXEL_MM, Anatomy
from b2m.demo.bold import NIFTI_DATA_OFFSET

SPACE = "T1w"
HIGH_PASS_S = 128.0  # fMRIPrep's cosine basis cut-off
FD_OUTLIER_MM, DVARS_OUTLIER = 0.5, 1.5  # fMRIPrep's motion-outlier thresholds
HEAD_RADIUS_MM = 50.0  # rotations to mm in framewise displacement (Power et al. 2012)
MOTION_PARAMS = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
CSF_DEPTH = 0.04  # the deepest share of the brain is ventricle
PHYSIO_LOADING = {"csf": 3.0, "white_matter": 1.0, "cortex": 0.5}  # in units of a voxel's noise amplitude
# FreeSurfer Desikan-Killiany names (left hemisphere 1000 + n, right 2000 + n) and aseg labels.
CORTEX_PARCELS = {30: "superiortemporal", 15: "middletemporal", 24: "precentral", 28: "superiorfrontal",
                  11: "lateraloccipital", 29: "superiorparietal", 14: "medialorbitofrontal", 8: "inferiorparietal"}
ASEG = {"white_matter": (2, 41, "Cerebral-White-Matter"), "csf": (4, 43, "Lateral-Ventricle")}


def derivatives_root(out: Path) -> Path:
    return out / "derivatives" / "fmriprep"


def run_prefix(out: Path, subject: int, task: str, run: int) -> Path:
    """`.../sub-00S/func/sub-00S_task-T_run-NN`: add `_space-T1w_desc-preproc_bold.nii.gz` etc."""
    sub = f"sub-{subject:03d}"
    return derivatives_root(out) / sub / "func" / f"{sub}_task-{task}_run-{run:02d}"


def bold_path(out: Path, subject: int, task: str, run: int) -> Path:
    return Path(f"{run_prefix(out, subject, task, run)}_space-{SPACE}_desc-preproc_bold.nii.gz")


def confounds_path(out: Path, subject: int, task: str, run: int) -> Path:
    return Path(f"{run_prefix(out, subject, task, run)}_desc-confounds_timeseries.tsv")


def atlas_paths(out: Path, subject: int) -> tuple[Path, Path]:
    """The subject's aparcaseg-like label image on the BOLD grid, and the label table (shared)."""
    sub = f"sub-{subject:03d}"
    root = derivatives_root(out)
    return root / sub / "anat" / f"{sub}_desc-aparcaseg_dseg.nii.gz", root / "desc-aparcaseg_dseg.tsv"


class Tissues:
    """A subject's tissue classes and artefact maps, per brain voxel in the C order of `anatomy.brain`;
    `brain_f` are those voxels' flat indices in a NIfTI (Fortran-order) volume."""

    def __init__(self, anatomy: Anatomy, baseline: np.ndarray, amplitude: np.ndarray, rng: np.random.Generator):
        brain = anatomy.brain
        self.brain_f = np.ravel_multi_index(np.nonzero(brain), brain.shape, order="F")
        depth = distance_transform_edt(brain)
        csf = brain & ~anatomy.cortex & (depth >= np.quantile(depth[brain], 1.0 - CSF_DEPTH))
        self.kind = {"cortex": anatomy.cortex[brain], "csf": csf[brain],
                     "white_matter": (brain & ~anatomy.cortex & ~csf)[brain]}

        image = np.zeros(brain.shape)
        image[brain] = baseline  # the mean image: brain at its baseline, 0 outside
        gradient = np.stack(np.gradient(gaussian_filter(image, 0.7), VOXEL_MM), axis=-1)[brain]  # [V, 3] per mm
        ijk = np.argwhere(brain).astype(np.float64)
        position = (ijk - ijk.mean(axis=0)) * VOXEL_MM  # mm from the brain's centre
        # -grad(I) . (t + w x r) = -grad(I) . t - w . (r x grad(I)): linear in the six parameters.
        self.motion_gain = np.concatenate([-gradient, -np.cross(position, gradient)], axis=1).T.astype(np.float32)
        loading = np.full(len(ijk), PHYSIO_LOADING["cortex"])
        for kind in ("csf", "white_matter"):
            loading[self.kind[kind]] = PHYSIO_LOADING[kind]
        spatial = gaussian_filter(rng.standard_normal(brain.shape), 2.0)[brain]
        spatial = 0.75 + 0.25 * spatial / spatial.std()
        self.physio_gain = (loading * spatial * amplitude)[None, :].astype(np.float32)  # [1, V]

    def labels(self, anatomy: Anatomy) -> np.ndarray:
        """An aparcaseg-like int16 label volume: cortex split into named parcels by hemisphere and by
        the nearest of a few anchor points (the auditory regions' centre anchors superior temporal,
        the semantic regions' middle temporal), white matter and ventricles by hemisphere, 0 outside."""
        brain = anatomy.brain
        xyz = nib.affines.apply_affine(anatomy.affine, np.argwhere(brain))
        left = xyz[:, 0] < np.median(xyz[:, 0])  # RAS: x < 0 is left
        values = np.zeros(len(xyz), dtype=np.int16)
        for kind, (lh, rh, _) in ASEG.items():
            values[self.kind[kind]] = np.where(left[self.kind[kind]], lh, rh)
        ijk = np.argwhere(anatomy.cortex).astype(np.float64)
        # Parcels are mirrored across the midline: positions are (distance from it, y, z).
        position = np.column_stack([np.abs(ijk[:, 0] - ijk[:, 0].mean()), ijk[:, 1:]])
        lo, span = position.min(axis=0), np.ptp(position, axis=0)
        spots = {24: (0.55, 0.9), 28: (0.9, 0.7), 11: (0.05, 0.5), 29: (0.3, 0.95), 14: (0.95, 0.2), 8: (0.25, 0.7)}
        anchors = {label: lo + np.array([0.5, *f]) * span for label, f in spots.items()}
        for label, klass in ((30, AUDITORY), (15, SEMANTIC)):
            members = anatomy.tuning_class == klass
            anchors[label] = position[members].mean(axis=0) if members.any() else lo + span / 2
        names = np.array(list(anchors))
        centres = np.stack(list(anchors.values()))
        parcel = names[np.argmin(((position[:, None] - centres[None]) ** 2).sum(axis=-1), axis=1)]
        cortex = self.kind["cortex"]
        values[cortex] = np.where(left[cortex], 1000, 2000) + parcel
        labels = np.zeros(brain.shape, dtype=np.int16)
        labels[brain] = values
        return labels


def label_table() -> str:
    """The BIDS dseg.tsv of `Tissues.labels`, by label number."""
    rows = [(1000 + n, f"ctx-lh-{name}") for n, name in CORTEX_PARCELS.items()]
    rows += [(2000 + n, f"ctx-rh-{name}") for n, name in CORTEX_PARCELS.items()]
    rows += [(lh, f"Left-{name}") for lh, _, name in ASEG.values()] + [(rh, f"Right-{name}") for _, rh, name in ASEG.values()]
    return "index\tname\n" + "".join(f"{i}\t{name}\n" for i, name in sorted(rows))


def head_motion(n_volumes: int, rng: np.random.Generator) -> np.ndarray:
    """`[T, 6]`: translations (mm) and rotations (rad), a slow random walk with 2-4 sudden jumps."""
    scale = np.array([0.015, 0.02, 0.03, 0.0003, 0.0003, 0.0002])  # per-volume step sd
    walk = np.cumsum(rng.standard_normal((n_volumes, 6)) * scale, axis=0)
    for at in rng.choice(np.arange(20, n_volumes - 5), rng.integers(2, 5), replace=False):
        walk[at:] += rng.normal(0.0, 1.0, 6) * np.array([0.4, 0.5, 0.8, 0.006, 0.006, 0.004])
    return walk - walk[0]


def physiology(n_volumes: int, tr_s: float, rng: np.random.Generator) -> np.ndarray:
    """`[T]`: a unit-variance physiological time course (slow AR(1) plus aliased respiration)."""
    t = np.arange(n_volumes) * tr_s
    slow = np.zeros(n_volumes)
    for i in range(1, n_volumes):
        slow[i] = 0.9 * slow[i - 1] + rng.standard_normal()
    breath = np.sin(2 * np.pi * rng.uniform(0.08, 0.14) * t + rng.uniform(0, 2 * np.pi))
    x = slow / slow.std() + 0.7 * breath
    return (x - x.mean()) / x.std()


def framewise_displacement(motion: np.ndarray) -> np.ndarray:
    """Power's FD `[T]` (mm), NaN at volume 0."""
    delta = np.abs(np.diff(motion, axis=0))
    return np.concatenate([[np.nan], delta[:, :3].sum(axis=1) + HEAD_RADIUS_MM * delta[:, 3:].sum(axis=1)])


def add_artefacts(blocks: Iterator[np.ndarray], tissues: Tissues, motion: np.ndarray,
                  physio: np.ndarray, spin_history: np.ndarray) -> Iterator[np.ndarray]:
    """Float32 volume blocks `[b, X * Y * Z]` (Fortran order): `blocks` with motion and physiological
    artefacts added to the brain voxels."""
    t0 = 0
    for block in blocks:
        out = block.astype(np.float32)
        b = len(out)
        brain = out[:, tissues.brain_f]
        brain += motion[t0:t0 + b].astype(np.float32) @ tissues.motion_gain
        brain += physio[t0:t0 + b, None].astype(np.float32) * tissues.physio_gain
        brain *= (1.0 - spin_history[t0:t0 + b, None]).astype(np.float32)
        out[:, tissues.brain_f] = brain
        t0 += b
        yield out


def confound_columns(motion: np.ndarray, means: dict[str, np.ndarray], dvars: np.ndarray, tr_s: float,
                     rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The confounds table fMRIPrep would write, `{column: [T]}` (NaN where fMRIPrep writes n/a)."""
    n = len(motion)
    measured = motion + rng.normal(0.0, 1.0, motion.shape) * np.array([0.005] * 3 + [0.0001] * 3)
    columns: dict[str, np.ndarray] = {}
    for name, values in [*zip(MOTION_PARAMS, measured.T), *means.items()]:
        derivative = np.concatenate([[np.nan], np.diff(values)])
        columns[name] = values
        columns[f"{name}_derivative1"] = derivative
        columns[f"{name}_power2"] = values ** 2
        columns[f"{name}_derivative1_power2"] = derivative ** 2
    fd = framewise_displacement(measured)
    std_dvars = dvars / np.nanmedian(dvars)
    columns.update(framewise_displacement=fd, dvars=dvars, std_dvars=std_dvars)
    t = np.arange(n)
    for k in range(1, int(np.floor(2 * n * tr_s / HIGH_PASS_S)) + 1):
        columns[f"cosine{k - 1:02d}"] = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * t + 1) * k / (2 * n))
    outliers = np.flatnonzero((np.nan_to_num(fd) > FD_OUTLIER_MM) | (np.nan_to_num(std_dvars) > DVARS_OUTLIER))
    for i, at in enumerate(outliers):
        columns[f"motion_outlier{i:02d}"] = (t == at).astype(float)
    return columns


def write_run(path: Path, blocks: Iterator[np.ndarray], shape: tuple[int, int, int, int], affine: np.ndarray,
              tr_s: float, tissues: Tissues, rng: np.random.Generator) -> None:
    """Write one run's preprocessed BOLD (float32 .nii.gz), sidecar, brain mask and confounds, atomically;
    the confounds TSV comes last, so its presence marks the run complete."""
    n_volumes = shape[3]
    motion = head_motion(n_volumes, rng)
    physio = physiology(n_volumes, tr_s, rng)
    fd = framewise_displacement(motion)
    spin_history = np.where(np.nan_to_num(fd) > FD_OUTLIER_MM, 0.01 * np.nan_to_num(fd), 0.0)
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    header.set_zooms((VOXEL_MM,) * 3 + (tr_s,))
    header.set_xyzt_units("mm", "sec")
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    header.set_data_offset(NIFTI_DATA_OFFSET)
    means = {name: np.zeros(n_volumes) for name in ("global_signal", "white_matter", "csf")}
    dvars = np.full(n_volumes, np.nan)
    previous = None
    t0 = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1,
                                                                          mtime=0) as f:
        f.write(header.binaryblock + b"\0" * (NIFTI_DATA_OFFSET - len(header.binaryblock)))  # no extensions
        for block in add_artefacts(blocks, tissues, motion, physio, spin_history):
            brain = block[:, tissues.brain_f]
            means["global_signal"][t0:t0 + len(block)] = brain.mean(axis=1)
            for kind in ("white_matter", "csf"):
                means[kind][t0:t0 + len(block)] = brain[:, tissues.kind[kind]].mean(axis=1)
            stacked = brain if previous is None else np.concatenate([previous, brain])
            diffs = np.sqrt((np.diff(stacked, axis=0) ** 2).mean(axis=1))
            dvars[t0 + (previous is None):t0 + len(block)] = diffs
            previous = brain[-1:]
            f.write(block.astype("<f4").tobytes())
            t0 += len(block)
    stem = str(path)[: -len("_desc-preproc_bold.nii.gz")]
    write_json(f"{stem}_desc-preproc_bold.json", {"RepetitionTime": tr_s, "SkullStripped": False,
                                                  "TaskName": path.name.split("_task-")[1].split("_")[0]})
    mask = np.zeros(shape[:3], dtype=np.uint8).reshape(-1, order="F")
    mask[tissues.brain_f] = 1
    write_gz_nifti(Path(f"{stem}_desc-brain_mask.nii.gz"), mask.reshape(shape[:3], order="F"), affine)
    columns = confound_columns(motion, means, dvars, tr_s, rng)
    confounds = Path(stem.split("_space-")[0] + "_desc-confounds_timeseries.tsv")
    write_json(confounds.with_suffix(".json"), {name: {"Description": "b2m.demo simulation"} for name in columns})
    text = io.StringIO()
    writer = csv.writer(text, delimiter="\t", lineterminator="\n")
    writer.writerow(list(columns))
    for row in zip(*columns.values()):
        writer.writerow(["n/a" if np.isnan(v) else f"{v:.8g}" for v in row])
    write_text(confounds, text.getvalue())


def write_gz_nifti(path: Path, volume: np.ndarray, affine: np.ndarray) -> None:
    image = nib.Nifti1Image(volume, affine)
    image.header.set_xyzt_units("mm")
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        tmp.write_bytes(gzip.compress(image.to_bytes(), compresslevel=6, mtime=0))


def write_subject(out: Path, subject: int, anatomy: Anatomy, tissues: Tissues) -> None:
    """The subject's atlas (on the BOLD grid) and the shared label table, unless present."""
    image, table = atlas_paths(out, subject)
    if not image.exists():
        write_gz_nifti(image, tissues.labels(anatomy), anatomy.affine)
    if not table.exists():
        write_text(table, label_table())


def write_description(out: Path) -> None:
    path = derivatives_root(out) / "dataset_description.json"
    if not path.exists():
        write_json(path, {"Name": "b2m demo in fMRIPrep's output layout (simulated, not fMRIPrep's output)",
                          "BIDSVersion": "1.4.0", "DatasetType": "derivative",
                          "GeneratedBy": [{"Name": "b2m.demo", "Description": "--layout fmriprep"}]})
