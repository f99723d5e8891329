"""BOLD simulation: voxel tunings, noise, and int16 NIfTI-1 runs written block by block.

A cortex voxel's preprocessed signal is `sqrt(s) * drive + sqrt(1 - s) * noise`
with unit-variance `drive` (its tuning applied to the run's design matrix) and
`noise`, `s` the voxel's signal fraction. The noise is an AR(1) process per voxel
driven by spatially smooth innovations (neighbours share noise, as in real EPI),
mixed with a few slow components with large-scale spatial patterns. The stored
value adds a baseline of 600-1000, scales the fluctuation to about 1-2 % of it
and adds slow drift (a linear trend and low-frequency cosines, which the 240 s
median filter of the published preprocessing mostly removes). Outside the brain
values are near 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import nibabel as nib
import numpy as np
from scipy.ndimage import gaussian_filter, gaussian_filter1d
from scipy.special import ndtr

from b2m.demo import features
from b2m.demo.anatomy import AUDITORY, SEMANTIC, VOXEL_MM, Anatomy
from b2m.demo.worlds import World
from b2m.core.io import atomic_path

NIFTI_DATA_OFFSET = 352  # 348-byte header plus the 4-byte extension flag
AUDITORY_SIGNAL = (0.10, 0.60)  # signal fraction at a region's rim and at its core
SEMANTIC_SIGNAL = (0.04, 0.25)
SPARSE_FEATURES = 3  # acoustic features an auditory voxel mixes in the `sparse` tuning model
FREQUENCY_RANGE_HZ = (150.0, 5000.0)  # best frequencies span this along the tonotopic axis
NOISE_SMOOTHNESS = 1.0  # voxels, Gaussian sigma of the voxel noise (EPI point spread, ~2.4 voxels FWHM)
N_SHARED = 8  # slow noise components with large-scale spatial patterns (physiology, motion residue)
SHARED_SMOOTHNESS = 4.0  # voxels, Gaussian sigma of their spatial patterns
MAP_SMOOTHNESS = 2.0  # voxels, Gaussian sigma of the cortical maps of tuning parameters
BACKGROUND_SD = 4.0  # intensity scale of the noise outside the brain
BLOCK_VOLUMES = 32  # volumes generated and written at a time, bounds memory on the full grid


@dataclass(frozen=True)
class Tuning:
    """Per cortex voxel (anatomy order): what drives it and how strongly."""

    signal_fraction: np.ndarray  # float32 [V]: stimulus-driven share of the drift-free signal variance
    weights: np.ndarray  # float32 [V, F] over `features.feature_names()`, zero for untuned voxels
    best_frequency_hz: np.ndarray  # float32 [V], NaN outside the auditory region
    best_modulation_hz: np.ndarray  # float32 [V], NaN outside the auditory region (and in the sparse model)
    hrf_group: np.ndarray  # int8 [V]: which of the world's HRFs the voxel responds with


@dataclass(frozen=True)
class SubjectNoise:
    """Per brain voxel (C-order of `anatomy.brain`): intensity and noise properties, fixed across runs."""

    baseline: np.ndarray  # [V_brain] scanner intensity units
    amplitude: np.ndarray  # [V_brain] standard deviation of the drift-free fluctuation
    ar1: np.ndarray  # [V_brain] lag-one autocorrelation of the voxel's own noise
    loadings: np.ndarray  # [N_SHARED, V_brain], unit norm per voxel


def _spectrotemporal_weights(best_frequency_hz: float, best_modulation_hz: float, modulation_share: float,
                             width_octaves: float) -> np.ndarray:
    """Acoustic weights of one auditory voxel: Gaussian over log-frequency times a modulation preference."""
    over_freq = np.exp(-0.5 * (np.log2(features.BAND_CENTRES_HZ / best_frequency_hz) / width_octaves) ** 2)
    over_mod = np.exp(-0.5 * np.log2(features.MODULATION_CENTRES_HZ / best_modulation_hz) ** 2)
    spectral = over_freq / np.linalg.norm(over_freq)
    modulation = np.outer(over_freq, over_mod).ravel()
    modulation /= np.linalg.norm(modulation)
    return np.concatenate([(1.0 - modulation_share) * spectral, modulation_share * modulation])


def _smooth_maps(cortex: np.ndarray, n_maps: int, rng: np.random.Generator) -> np.ndarray:
    """`n_maps` spatially smooth random maps sampled at the cortex voxels, each uniform on [0, 1]: `[n_maps, V]`."""
    fields = gaussian_filter(rng.standard_normal((n_maps, *cortex.shape)), sigma=(0,) + (MAP_SMOOTHNESS,) * 3)
    values = fields[:, cortex]
    return ndtr((values - values.mean(axis=1, keepdims=True)) / values.std(axis=1, keepdims=True))


def make_tuning(anatomy: Anatomy, rng: np.random.Generator, world: World) -> Tuning:
    """Draw a subject's voxel tunings as smooth cortical maps: in the auditory region a tonotopic gradient
    with modulation preference, bandwidth and modulation share varying smoothly (or, in the `sparse`
    model, a random positive mix of a few acoustic features per voxel); in the semantic region smoothly
    varying mixtures of a few random axes of the semantic features. Each tuned voxel draws one of the
    world's HRFs."""
    n_vox = len(anatomy.tuning_class)
    n_acoustic = len(features.acoustic_feature_names())
    n_semantic = len(features.semantic_feature_names())
    weights = np.zeros((n_vox, n_acoustic + n_semantic), dtype=np.float32)
    signal = np.zeros(n_vox, dtype=np.float32)
    best_freq = np.full(n_vox, np.nan, dtype=np.float32)
    best_mod = np.full(n_vox, np.nan, dtype=np.float32)
    jitter, modulation, share, width, *mixing = _smooth_maps(anatomy.cortex, 4 + world.semantic_axes, rng)

    lo, hi = np.log2(FREQUENCY_RANGE_HZ)
    mod_lo, mod_hi = np.log2(features.MODULATION_CENTRES_HZ[[0, -1]])
    for v in np.flatnonzero(anatomy.tuning_class == AUDITORY):
        position = np.clip(anatomy.tonotopic_position[v] + 0.2 * (jitter[v] - 0.5), 0.0, 1.0)
        best_freq[v] = 2.0 ** (lo + position * (hi - lo))
        best_mod[v] = 2.0 ** (mod_lo + modulation[v] * (mod_hi - mod_lo))
        weights[v, :n_acoustic] = _spectrotemporal_weights(
            best_freq[v], best_mod[v], 0.3 + 0.4 * share[v], 0.6 + 0.6 * width[v])
    semantic = anatomy.tuning_class == SEMANTIC
    axes = rng.standard_normal((world.semantic_axes, n_semantic))
    weights[semantic, n_acoustic:] = (np.stack(mixing, axis=1)[semantic] - 0.5) @ axes

    for klass, (rim, core) in ((AUDITORY, AUDITORY_SIGNAL), (SEMANTIC, SEMANTIC_SIGNAL)):
        members = anatomy.tuning_class == klass
        scatter = rng.uniform(0.8, 1.2, members.sum())
        signal[members] = np.clip((rim + (core - rim) * anatomy.centrality[members]) * scatter
                                  * world.signal_scale, 0.0, 0.6)
    # Draws of the other models come last, so that the default world's draws never change.
    if world.tuning == "sparse":
        auditory = np.flatnonzero(anatomy.tuning_class == AUDITORY)
        weights[auditory, :n_acoustic] = 0.0
        best_freq[auditory] = best_mod[auditory] = np.nan
        for v in auditory:
            chosen = rng.choice(n_acoustic, SPARSE_FEATURES, replace=False)
            weights[v, chosen] = rng.uniform(0.5, 1.0, SPARSE_FEATURES)
    elif world.tuning != "tonotopic":
        raise ValueError(f"unknown tuning model {world.tuning!r}")
    hrf_group = np.zeros(n_vox, dtype=np.int8)
    if len(world.hrf_peaks_s) > 1:
        hrf_group[:] = rng.integers(0, len(world.hrf_peaks_s), n_vox)
    return Tuning(signal, weights, best_freq, best_mod, hrf_group)


def make_noise(anatomy: Anatomy, rng: np.random.Generator, world: World) -> SubjectNoise:
    """Draw a subject's intensity and noise properties for every brain voxel."""
    field = gaussian_filter(rng.standard_normal(anatomy.brain.shape), sigma=2.0)[anatomy.brain]
    baseline = np.clip(800.0 + 120.0 * field / field.std(), 600.0, 1000.0)
    n_brain = len(baseline)
    amplitude = baseline * rng.uniform(0.008, 0.02, n_brain)
    patterns = rng.standard_normal((N_SHARED, *anatomy.brain.shape))
    loadings = gaussian_filter(patterns, sigma=(0,) + (SHARED_SMOOTHNESS,) * 3)[:, anatomy.brain]
    loadings /= np.linalg.norm(loadings, axis=0, keepdims=True)
    return SubjectNoise(baseline, amplitude, rng.uniform(*world.ar1_range, n_brain).astype(np.float32),
                        loadings.astype(np.float32))


def _ar1(innovations: np.ndarray, phi: float | np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """Unit-variance stationary AR(1) along axis 0 of unit-variance white `innovations` `[n, ...]`.

    `start` is the previous sample (continuing a series); without it the series starts stationary.
    """
    phi = np.asarray(phi, dtype=np.float32)
    innovation_sd = np.sqrt(1.0 - phi ** 2)
    out = np.empty_like(innovations)
    x = innovations[0] if start is None else phi * start + innovation_sd * innovations[0]
    out[0] = x
    for t in range(1, len(innovations)):
        x = phi * x + innovation_sd * innovations[t]
        out[t] = x
    return out


def _smooth_noise(n: int, shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """`n` volumes of spatially smooth Gaussian noise with unit variance, float32 `[n, X, Y, Z]`."""
    white = rng.standard_normal((n, *shape), dtype=np.float32)
    smooth = gaussian_filter(white, sigma=(0,) + (NOISE_SMOOTHNESS,) * 3, mode="wrap")
    delta = np.zeros(int(8 * NOISE_SMOOTHNESS) + 1)
    delta[len(delta) // 2] = 1.0
    sd = np.sqrt(np.sum(gaussian_filter1d(delta, NOISE_SMOOTHNESS) ** 2)) ** 3  # of the smoothed white noise
    return smooth / np.float32(sd)


def _drift(n_volumes: int, tr_s: float, n_brain: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Slow drift in units of each voxel's amplitude: basis `[T, K]` and coefficients `[K, V_brain]`."""
    t = np.arange(n_volumes) * tr_s
    periods = rng.uniform(300.0, 1200.0, 3)  # mostly slower than the 240 s median filter
    phases = rng.uniform(0.0, 2.0 * np.pi, 3)
    basis = np.column_stack([t / t[-1] - 0.5, *(np.cos(2 * np.pi * t / p + ph) for p, ph in zip(periods, phases))])
    coefs = rng.normal(0.0, 1.0, (basis.shape[1], n_brain)) * np.array([[2.0], [1.0], [1.0], [1.0]])
    return basis.astype(np.float32), coefs.astype(np.float32)


def _grid_indices(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of the voxels of a 3D `mask`, in C order (numpy) and in Fortran order (NIfTI data)."""
    ijk = np.nonzero(mask)
    return np.ravel_multi_index(ijk, mask.shape), np.ravel_multi_index(ijk, mask.shape, order="F")


def simulate_run(anatomy: Anatomy, noise: SubjectNoise, tuning: Tuning, designs: np.ndarray, tr_s: float,
                 rng: np.random.Generator, world: World) -> Iterator[np.ndarray]:
    """Yield the run as int16 volume blocks `[b, X * Y * Z]` in NIfTI (Fortran) voxel order.

    `designs` is the run's `[H, T, F]` design matrices (`features.run_design`), one per HRF of
    the world (`tuning.hrf_group` picks a voxel's). Memory stays
    at a few float32 `[BLOCK_VOLUMES, V_brain]` arrays plus the tuned voxels' drive.
    """
    n_volumes = designs.shape[1]
    shape = anatomy.brain.shape
    brain_c, brain_f = _grid_indices(anatomy.brain)
    background_c, background_f = _grid_indices(~anatomy.brain)
    n_brain = len(brain_c)

    cortex_in_brain = np.flatnonzero(anatomy.cortex[anatomy.brain])
    tuned = np.flatnonzero(tuning.signal_fraction > 0)
    drive = np.empty((n_volumes, len(tuned)))
    for h, design in enumerate(designs):
        group = tuning.hrf_group[tuned] == h
        drive[:, group] = design @ tuning.weights[tuned[group]].T.astype(np.float64)
    drive = (drive - drive.mean(axis=0)) / drive.std(axis=0)
    if world.saturation > 0:
        drive = np.tanh(world.saturation * drive)
        drive = (drive - drive.mean(axis=0)) / drive.std(axis=0)
    drive = drive.astype(np.float32)  # [T, V_tuned]
    tuned_in_brain = cortex_in_brain[tuned]
    signal_fraction = np.zeros(n_brain, dtype=np.float32)
    signal_fraction[tuned_in_brain] = tuning.signal_fraction[tuned]
    noise_scale = (noise.amplitude * np.sqrt(1.0 - signal_fraction)).astype(np.float32)
    signal_scale = (noise.amplitude[tuned_in_brain] * np.sqrt(tuning.signal_fraction[tuned])).astype(np.float32)

    gain = rng.uniform(0.98, 1.02)
    baseline = (gain * noise.baseline).astype(np.float32)
    shared_phi = rng.uniform(0.5, 0.95, N_SHARED)
    shared = _ar1(rng.standard_normal((n_volumes, N_SHARED), dtype=np.float32), shared_phi)  # [T, N_SHARED]
    drift_basis, drift_coefs = _drift(n_volumes, tr_s, n_brain, rng)
    drift_coefs *= noise.amplitude.astype(np.float32)
    own_share, shared_share = np.float32(np.sqrt(1.0 - world.shared_share)), np.float32(np.sqrt(world.shared_share))

    state = None
    block = np.empty((BLOCK_VOLUMES, int(np.prod(shape))), dtype=np.int16)
    for t0 in range(0, n_volumes, BLOCK_VOLUMES):
        t1 = min(t0 + BLOCK_VOLUMES, n_volumes)
        field = _smooth_noise(t1 - t0, shape, rng).reshape(t1 - t0, -1)
        own = _ar1(field[:, brain_c], noise.ar1, state)
        state = own[-1]
        values = own_share * own + shared_share * (shared[t0:t1] @ noise.loadings)
        values *= noise_scale
        values[:, tuned_in_brain] += signal_scale * drive[t0:t1]
        values += baseline + drift_basis[t0:t1] @ drift_coefs
        out = block[: t1 - t0]
        out[:, brain_f] = np.rint(values)
        out[:, background_f] = np.rint(BACKGROUND_SD * np.abs(field[:, background_c]))  # magnitude-image noise
        yield out


def nifti_header(shape: tuple[int, ...], affine: np.ndarray, tr_s: float | None = None) -> nib.Nifti1Header:
    """A NIfTI-1 header for int16 data, 2 mm voxels, units mm (and s), qform and sform scanner."""
    header = nib.Nifti1Header(endianness="<")
    header.set_data_shape(shape)
    header.set_data_dtype(np.int16)
    header.set_zooms((VOXEL_MM,) * 3 + ((tr_s,) if len(shape) == 4 else ()))
    header.set_xyzt_units("mm", "sec")
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    header["scl_slope"], header["scl_inter"] = 1.0, 0.0
    header.set_data_offset(NIFTI_DATA_OFFSET)
    return header


def nifti_size(shape: tuple[int, ...]) -> int:
    """Bytes of a complete uncompressed int16 `.nii` of `shape`."""
    return NIFTI_DATA_OFFSET + 2 * int(np.prod(shape))


def write_bold(path: Path, blocks: Iterator[np.ndarray], shape: tuple[int, int, int, int], affine: np.ndarray,
               tr_s: float) -> None:
    """Write a 4D int16 `.nii` from volume blocks `[b, X * Y * Z]` (Fortran order), atomically."""
    header = nifti_header(shape, affine, tr_s)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(header.binaryblock)
        f.write(b"\0" * (NIFTI_DATA_OFFSET - len(header.binaryblock)))
        for block in blocks:
            f.write(block.astype("<i2", copy=False).tobytes())
    if path.stat().st_size != nifti_size(shape):
        raise RuntimeError(f"{path}: wrote {path.stat().st_size} bytes, expected {nifti_size(shape)}")
