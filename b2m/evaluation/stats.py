"""Voxelwise statistics: Pearson r per column, noise ceilings from repeats, FDR control."""

from __future__ import annotations

import numpy as np


def zscore_columns(x: np.ndarray) -> np.ndarray:
    """Columns of `[n, V]` centred and scaled to unit variance (population sd); constant columns give 0."""
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=0)
    sd = x.std(axis=0)
    return np.divide(x, sd, out=np.zeros_like(x), where=sd > 0)


def pearson_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r between matching columns of `a` and `b` `[n, V]`: `[V]` (0 for a constant column)."""
    return (zscore_columns(a) * zscore_columns(b)).mean(axis=0)


def _powers(repeats: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From `[R, n, V]` repeats (each z-scored over time): signal power (Sahani & Linden 2003),
    the mean single-repeat variance and the variance of the mean, each `[V]`."""
    repeats = np.asarray(repeats, dtype=np.float64)
    n_rep = len(repeats)
    if n_rep < 2:
        raise ValueError("noise ceilings need at least 2 repeats")
    z = np.stack([zscore_columns(r) for r in repeats])
    mean_var = z.var(axis=1, ddof=1).mean(axis=0)
    var_mean = z.mean(axis=0).var(axis=0, ddof=1)
    return (n_rep * var_mean - mean_var) / (n_rep - 1), mean_var, var_mean


def explainable_variance(repeats: np.ndarray) -> np.ndarray:
    """Bias-corrected explainable variance per voxel from `repeats` `[R, n, V]` (R presentations of the
    same n time points): signal power over the variance of a single presentation, i.e. the share of a
    single response that is stimulus-driven; about 0 (may be negative) for pure noise, 0 for a constant voxel."""
    signal, mean_var, _ = _powers(repeats)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nan_to_num(signal / mean_var)


def correlation_ceiling(repeats: np.ndarray) -> np.ndarray:
    """The highest Pearson r a model can reach against the mean of `repeats` `[R, n, V]`: `[V]` in [0, 1],
    `sqrt(signal power / Var(mean))` (Schoppe et al. 2016's CC_max); 0 where no signal is found."""
    signal, _, var_mean = _powers(repeats)
    with np.errstate(invalid="ignore", divide="ignore"):
        cc = np.sqrt(np.clip(signal, 0, None) / var_mean)
    return np.clip(np.nan_to_num(cc), 0, 1)


def fdr_bh(p: np.ndarray, q: float) -> tuple[np.ndarray, np.ndarray]:
    """Benjamini-Hochberg: `(reject [V] bool, adjusted p-values [V])` for p-values `[V]` at rate `q`.

    The adjusted value of the i-th smallest p is `min_{j >= i} p_(j) * m / j`, capped at 1;
    a hypothesis is rejected when its adjusted p is at most `q`.
    """
    p = np.asarray(p, dtype=np.float64)
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    adjusted_sorted = np.minimum.accumulate(scaled[::-1])[::-1].clip(max=1.0)
    adjusted = np.empty(m)
    adjusted[order] = adjusted_sorted
    return adjusted <= q, adjusted
