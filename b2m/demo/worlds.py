"""The simulated worlds a demo build draws its BOLD from.

`default` is the README's demo. `second` differs in every modelling choice a decoder's
defaults could quietly fit: how voxels are tuned, how strong and how fast they respond,
how the noise is structured, the grid, and whether a cortex mask is shipped. Defaults
are chosen on validation clips of both worlds, so that what suits one cannot pass
unnoticed as general.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class World:
    """The modelling choices of one simulated world.

    tuning: "tonotopic" (auditory voxels: a Gaussian over log-frequency times a modulation
        preference, on smooth cortical maps) or "sparse" (each auditory voxel a random positive
        mix of a few acoustic features, no map).
    signal_scale: multiplies every tuned voxel's signal fraction (the SNR).
    hrf_peaks_s: the HRF peak latencies (s); each tuned voxel responds with one of them.
    saturation: gain of a tanh applied to each voxel's unit-variance drive (0: linear).
    ar1_range: range of the voxels' own lag-one noise autocorrelation.
    shared_share: share of each voxel's noise variance in slow global components.
    semantic_axes: how many random axes of the semantic features semantic voxels mix.
    cortex_mask: ship `derivatives/demo/sub-*/sub-*_desc-cortex_mask.nii.gz`; without it a user
        relies on b2m's automatic brain mask (`data=ds003720`, `data.preprocess.mask=null`).
    grids: per `--size`, a grid that replaces the size's own.
    """

    name: str
    tuning: str
    signal_scale: float
    hrf_peaks_s: tuple[float, ...]
    saturation: float
    ar1_range: tuple[float, float]
    shared_share: float
    semantic_axes: int
    cortex_mask: bool
    grids: dict[str, tuple[int, int, int]] = field(default_factory=dict)


WORLDS: dict[str, World] = {
    "default": World("default", "tonotopic", 1.0, (5.0,), 0.0, (0.2, 0.6), 0.3, 3, True),
    "second": World("second", "sparse", 0.8, (4.0, 5.5, 7.0), 1.5, (0.4, 0.8), 0.45, 6, False,
                    {"default": (36, 30, 26)}),
}
