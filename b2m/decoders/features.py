"""What the ridge and every trained decoder read of a window: its features and the voxel weights.

Features of a window `x` `[N, W, V]` (W FIR delays of V voxels), `features=`:

- `mean`: the mean over the W delays, `[N, V]`: the response to the whole clip, W times less
  noisy per voxel than one delay, and W times fewer weights to fit;
- `fir`: the delays side by side, `[N, W * V]`: lets each voxel have its own time course,
  at the price of W times the weights;
- `mean_fir`: both, the FIR block scaled by `1 / sqrt(W)` so that the two blocks have the same
  total variance under one ridge penalty.

`voxels=encoding` weights each voxel by how well the embedding predicts it, measured on the
training windows only: an encoding ridge from the standardised embedding `[N, L * D]` to the
voxel's window mean, its K-fold CV R^2 (best alpha of `encoding_alphas`, per voxel), and the
weight `sqrt(max(R^2, 0))`, the CV correlation: voxels that carry no stimulus signal (most of
cortex) get weight 0. `voxels=all` uses every voxel as it is.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from b2m.core.ridge import RidgeCV

FEATURES = ("mean", "fir", "mean_fir")
VOXELS = ("all", "encoding")


def window_features(x: torch.Tensor, features: str) -> torch.Tensor:
    """`[N, W, V]` windows -> `[N, F]` features (see the module doc)."""
    if features == "mean":
        return x.mean(dim=1)
    flat = x.reshape(len(x), -1)
    if features == "fir":
        return flat
    return torch.cat([x.mean(dim=1), flat / x.shape[1] ** 0.5], dim=1)


def n_features(features: str, n_window: int, n_voxels: int) -> int:
    return {"mean": n_voxels, "fir": n_window * n_voxels, "mean_fir": (n_window + 1) * n_voxels}[features]


def encoding_weights(x: np.ndarray, y: np.ndarray, alphas: Sequence[float], n_folds: int, dtype: str,
                     device: str) -> np.ndarray:
    """Per-voxel weights `[V]` from training windows `x` `[N, W, V]` and embeddings `y` `[N, L, D]`: the
    CV correlation `sqrt(max(R^2, 0))` of an encoding ridge from the embedding to the window mean."""
    y = np.asarray(y, np.float64).reshape(len(y), -1)
    sd = y.std(axis=0)
    y = (y - y.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    ridge = RidgeCV(alphas=list(alphas), n_folds=n_folds, dtype=dtype, device=device, scoring="r2")
    ridge.fit(y, np.asarray(x, np.float32).mean(axis=1))
    return np.sqrt(np.clip(ridge.cv_scores_.max(axis=0), 0.0, None)).astype(np.float32)
