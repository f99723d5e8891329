"""Variance partitioning between two embedding spaces per voxel, with banded ridge (himalaya).

For a pair of spaces (an audio-derived `a` and a text-derived `b`, as Brain2Music compares
them), three encoding models predict the test windows:
- `a` alone and `b` alone: the ridge fits of the encoding analysis (`fit_space`);
- `a` and `b` together: himalaya's `MultipleKernelRidgeCV` on one linear kernel per space,
  so that each space gets its own regularisation (banded ridge; random search over the
  kernel weights, `n_iter` draws, contiguous K-fold CV on the training runs).
With R^2 on the test windows (the 4 presentations averaged), per voxel:
    unique(a) = R^2(a + b) - R^2(b),  unique(b) = R^2(a + b) - R^2(a),
    shared    = R^2(a) + R^2(b) - R^2(a + b).
"""

from __future__ import annotations

import numpy as np

from b2m.data.samples import build_samples
from b2m.data.subjects import PreprocessedSubject


def r2_columns(pred: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """R^2 per column of `observed` `[N, V]` explained by `pred` `[N, V]` (1 - SSE / SS around the mean)."""
    sse = ((observed - pred) ** 2).sum(axis=0)
    sst = ((observed - observed.mean(axis=0)) ** 2).sum(axis=0)
    return 1.0 - sse / np.where(sst > 0, sst, np.inf)


def banded_predictions(pre: PreprocessedSubject, designs: list[dict[str, np.ndarray]], window: list[int],
                       alphas: list[float], n_folds: int, n_iter: int, seed: int) -> np.ndarray:
    """Fit banded ridge on the Training runs from one design per space (`designs[i][run name]` `[T, F_i]`)
    and predict the Test runs' windows: `[N, W, V]` (test clips, window TRs, voxels), repeats averaged."""
    from himalaya.kernel_ridge import ColumnKernelizer, Kernelizer, MultipleKernelRidgeCV
    from sklearn.model_selection import KFold
    from sklearn.pipeline import make_pipeline

    def stacked(run: str) -> np.ndarray:
        return np.concatenate([d[run] for d in designs], axis=1)

    train, test = pre.runs["Training"], pre.runs["Test"]
    x = np.concatenate([stacked(r.name) for r in train])
    y = np.concatenate([np.asarray(pre.data.runs[r.name]) for r in train])
    bounds = np.cumsum([0] + [d[train[0].name].shape[1] for d in designs])
    kernelizer = ColumnKernelizer([(f"space{i}", Kernelizer(kernel="linear"), slice(int(lo), int(hi)))
                                   for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:]))])
    model = MultipleKernelRidgeCV(kernels="precomputed", solver="random_search", cv=KFold(n_folds),
                                  random_state=seed, solver_params={"n_iter": n_iter, "alphas": np.asarray(alphas),
                                                                    "progress_bar": False})
    pipeline = make_pipeline(kernelizer, model).fit(x.astype(np.float32), y.astype(np.float32))
    predicted = {r.name: np.asarray(pipeline.predict(stacked(r.name).astype(np.float32))) for r in test}
    return build_samples("Test", test, pre.events, predicted, pre.tr, window, average_repeats=True).x


def partition(r2_a: np.ndarray, r2_b: np.ndarray, r2_joint: np.ndarray) -> dict[str, np.ndarray]:
    """Unique and shared variance per voxel from the three models' R^2 `[V]` (see the module doc)."""
    return {"unique_a": r2_joint - r2_b, "unique_b": r2_joint - r2_a, "shared": r2_a + r2_b - r2_joint}
