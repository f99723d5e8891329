"""Variance partitioning between two embedding spaces per voxel, with banded ridge (himalaya).

For a pair of spaces (an audio-derived `a` and a text-derived `b`, as Brain2Music compares
them), three encoding models predict the test windows:
- `a` alone and `b` alone: the ridge fits of the encoding analysis (`fit_space`);
- `a` and `b` together: a banded ridge, each space with its own penalty per voxel, searched
  on a grid of penalty ratios (`ratios`) and alphas by contiguous K-fold CV on the training
  runs (`banded_ridge`; tested against himalaya's `BandedRidgeCV`, whose random search is
  minutes per subject on this CPU where the grid takes seconds).
With R^2 on the test windows (the 4 presentations averaged), per voxel:
    unique(a) = R^2(a + b) - R^2(b),  unique(b) = R^2(a + b) - R^2(a),
    shared    = R^2(a) + R^2(b) - R^2(a + b).
"""

from __future__ import annotations

import numpy as np

from b2m.core.ridge import RidgeCV
from b2m.data.samples import build_samples
from b2m.data.subjects import PreprocessedSubject


def r2_columns(pred: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """R^2 per column of `observed` `[N, V]` explained by `pred` `[N, V]` (1 - SSE / SS around the mean)."""
    sse = ((observed - pred) ** 2).sum(axis=0)
    sst = ((observed - observed.mean(axis=0)) ** 2).sum(axis=0)
    return 1.0 - sse / np.where(sst > 0, sst, np.inf)


def banded_ridge(train: list[np.ndarray], y: np.ndarray, tests: dict[str, list[np.ndarray]], alphas: list[float],
                 n_folds: int, ratios: list[float]) -> dict[str, np.ndarray]:
    """Two-band ridge, each voxel with its own penalty per band, chosen by CV: predictions per test item.

    Penalties `(alpha, alpha / r)` on bands (a, b) are the same problem as one penalty `alpha`
    with band b scaled by `sqrt(r)`: for each ratio r of `ratios`, `RidgeCV` searches `alphas`
    by contiguous K-fold CV on `train` (`[T, F_a]`, `[T, F_b]`) and `y` `[T, V]`; each voxel keeps
    the ratio and alpha of its best validation score. `tests[name]` is a pair of designs; returns
    `{name: [T_name, V]}`.
    """
    best = np.full(y.shape[1], -np.inf)
    out = {name: np.zeros((len(pair[0]), y.shape[1]), dtype=np.float32) for name, pair in tests.items()}
    for r in ratios:
        scale = np.float32(np.sqrt(r))
        ridge = RidgeCV(alphas=alphas, n_folds=n_folds).fit(np.concatenate([train[0], scale * train[1]], 1), y)
        score = ridge.cv_scores_.max(axis=0)
        better = score > best
        best[better] = score[better]
        for name, (a, b) in tests.items():
            out[name][:, better] = ridge.predict(np.concatenate([a, scale * b], 1))[:, better]
    return out


def banded_predictions(pre: PreprocessedSubject, designs: list[dict[str, np.ndarray]], window: list[int],
                       alphas: list[float], n_folds: int, ratios: list[float]) -> np.ndarray:
    """Fit the two-band ridge on the Training runs from one design per space (`designs[i][run name]`
    `[T, F_i]`) and predict the Test runs' windows: `[N, W, V]` (test clips, window TRs, voxels)."""
    train, test = pre.runs["Training"], pre.runs["Test"]
    x = [np.concatenate([d[r.name] for r in train]) for d in designs]
    y = np.concatenate([np.asarray(pre.data.runs[r.name]) for r in train])
    predicted = banded_ridge(x, y, {r.name: [d[r.name] for d in designs] for r in test}, alphas, n_folds, ratios)
    return build_samples("Test", test, pre.events, predicted, pre.tr, window, average_repeats=True).x


def partition(r2_a: np.ndarray, r2_b: np.ndarray, r2_joint: np.ndarray) -> dict[str, np.ndarray]:
    """Unique and shared variance per voxel from the three models' R^2 `[V]` (see the module doc)."""
    return {"unique_a": r2_joint - r2_b, "unique_b": r2_joint - r2_a, "shared": r2_a + r2_b - r2_joint}
