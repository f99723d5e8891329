"""A subject's simulated anatomy: brain, cortex mask and the tuned regions inside it.

The brain is an ellipsoid filling the field of view as a real head does at 2 mm
(about 70 x 85 x 60 voxels in the 96 x 96 x 68 grid). The cortex is what lies
near its surface, outer or medial (between the hemispheres), with a depth that
varies smoothly (a stand-in for sulci), scaled to hold `cortex_fraction` of the brain. The auditory region is two blobs on the
lateral superior temporal surface, the semantic region two blobs further
anterior and inferior; their centres, extents and orientation vary per subject.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

VOXEL_MM = 2.0

NONE, AUDITORY, SEMANTIC = 0, 1, 2
"""Tuning classes, as stored in the truth file (1: tonotopic / spectro-temporal, 2: semantic)."""

BRAIN_SEMI_AXES = np.array([0.36, 0.44, 0.44])  # of the grid, per axis (x: left-right, y: posterior-anterior, z: up)
AUDITORY_CENTRE = np.array([0.78, 0.02, -0.15])  # normalised brain coordinates, right hemisphere; mirrored on x
SEMANTIC_CENTRE = np.array([0.70, 0.45, -0.30])
REGION_SHAPE = np.array([1.0, 1.4, 0.8])  # relative extent of a region along x, y, z
REGION_JITTER = 0.06  # per-subject shift of region centres, normalised units
FOLDING = 0.06  # amplitude of the smooth depth modulation that makes sulci, normalised radius
MEDIAL = 1.5  # depth per unit of distance from the midline: the medial surfaces of both hemispheres are cortex


@dataclass(frozen=True)
class Anatomy:
    """One subject's grid. Voxel order everywhere is the C-order of `cortex` restricted to it."""

    affine: np.ndarray  # [4, 4] voxel to scanner mm
    brain: np.ndarray  # bool [X, Y, Z]
    cortex: np.ndarray  # bool [X, Y, Z], inside `brain`
    tuning_class: np.ndarray  # int8 [V]: NONE, AUDITORY or SEMANTIC
    centrality: np.ndarray  # float [V] in [0, 1]: 1 at a region's core, 0 at its rim and outside regions
    tonotopic_position: np.ndarray  # float [V] in [0, 1] along the subject's tonotopic axis (auditory voxels)

    @property
    def ijk(self) -> np.ndarray:
        """int16 `[V, 3]` voxel indices of the cortex voxels."""
        return np.argwhere(self.cortex).astype(np.int16)


def scanner_affine(shape: tuple[int, int, int]) -> np.ndarray:
    """2 mm voxels, x flipped (LAS, as dcm2niix writes Siemens EPI), the grid centred on the scanner origin."""
    affine = np.diag([-VOXEL_MM, VOXEL_MM, VOXEL_MM, 1.0])
    affine[:3, 3] = -affine[:3, :3] @ ((np.array(shape) - 1) / 2.0)
    return affine


def _region(coords: np.ndarray, centre: np.ndarray, stretch: np.ndarray, n_voxels: int,
            free: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The `n_voxels` free cortex voxels nearest to `centre` in a stretched metric: (indices, centrality)."""
    dist = np.sqrt((((coords - centre) / stretch) ** 2).sum(axis=1))
    dist[~free] = np.inf
    chosen = np.argsort(dist, kind="stable")[:n_voxels]
    d = dist[chosen]
    return chosen, 1.0 - d / max(d.max(), 1e-9)


def make_anatomy(shape: tuple[int, int, int], cortex_fraction: float, auditory_fraction: float,
                 semantic_fraction: float, rng: np.random.Generator) -> Anatomy:
    """Draw one subject's brain, cortex and regions on a grid of `shape` voxels."""
    shape_arr = np.array(shape, dtype=float)
    semi = BRAIN_SEMI_AXES * shape_arr * rng.uniform(0.96, 1.04, 3)
    centre = (shape_arr - 1) / 2.0 + rng.uniform(-0.02, 0.02, 3) * shape_arr
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    coords = (grid - centre) / semi  # normalised brain coordinates, the brain is the unit ball
    radius = np.sqrt((coords ** 2).sum(axis=-1))
    brain = radius < 1.0

    folding = gaussian_filter(rng.standard_normal(shape), sigma=max(shape[0] / 40.0, 0.7))
    surface_distance = np.minimum(1.0 - radius, MEDIAL * np.abs(coords[..., 0]))
    depth = surface_distance + FOLDING * folding / folding.std()
    cortex = brain & (depth <= np.quantile(depth[brain], cortex_fraction))

    cortex_coords = coords[cortex]
    n_vox = len(cortex_coords)
    tuning_class = np.full(n_vox, NONE, dtype=np.int8)
    centrality = np.zeros(n_vox)
    tonotopic = np.zeros(n_vox)
    free = np.ones(n_vox, dtype=bool)
    # The tonotopic axis runs roughly anterior-posterior along the temporal surface, tilted per subject.
    angle = rng.uniform(-np.pi / 6, np.pi / 6)
    axis = np.array([0.0, np.cos(angle), np.sin(angle)])
    for klass, centre_r, fraction in ((AUDITORY, AUDITORY_CENTRE, auditory_fraction),
                                      (SEMANTIC, SEMANTIC_CENTRE, semantic_fraction)):
        per_side = max(int(round(fraction * n_vox / 2)), 1)
        for side in (1.0, -1.0):
            c = centre_r * np.array([side, 1.0, 1.0]) + rng.uniform(-REGION_JITTER, REGION_JITTER, 3)
            # Distances in voxels, so that a region is a compact patch of similar shape at any brain size.
            stretch = REGION_SHAPE * rng.uniform(0.8, 1.25, 3) / semi
            idx, cent = _region(cortex_coords, c, stretch, per_side, free)
            free[idx] = False
            tuning_class[idx] = klass
            centrality[idx] = cent
            if klass == AUDITORY:
                along = cortex_coords[idx] @ axis
                tonotopic[idx] = (along - along.min()) / max(np.ptp(along), 1e-9)
    return Anatomy(scanner_affine(shape), brain, cortex, tuning_class, centrality, tonotopic)
