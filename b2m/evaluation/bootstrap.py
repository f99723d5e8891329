"""Bootstrap confidence intervals of the decoding metrics over test clips.

The candidate set stays whole and the queries are resampled. Identification and top-k ask, for each
test clip i (a query), how its right clip ranks among all N test clips (the candidates). A bootstrap
sample draws N queries with replacement, represented by the counts `[N]` of each clip; the candidates
are still the N clips. So:

- identification, top-k and cosine are computed once per clip on the full set (`per_clip_metrics`,
  `{name: [N]}`, `b2m.core.metrics.PER_CLIP`: a tie counts half a win, and top-k breaks ties at
  random), and a sample's value is the count-weighted mean of them (`[B]`). Their mean over
  clips is the metric, so a row of ones gives exactly the full-set metrics.
- Pearson (the r of each feature across clips, averaged over features) has no per-clip part: it is
  computed across the drawn clips, a clip drawn twice weighing double.

Why not rescore each sample among its own drawn clips: a sample holds only about 63% of the distinct
clips, so a query meets fewer competitors and has to be corrected for it, and the resampled values
are then no longer centred on the full-set value (the interval could exclude its own point estimate).
With the candidates fixed, the expectation of a sample's value is the point estimate.

Inputs are scored as given: the caller standardises them. A counts row with no draw of these clips
(several subjects share draws over the union of their clips) gives NaN.
"""

from __future__ import annotations

import numpy as np

from b2m.core.metrics import METRICS, PER_CLIP


def resample_counts(n_clips: int, n_boot: int, seed: int) -> np.ndarray:
    """`[n_boot, n_clips]` int: how often each clip is drawn in each bootstrap sample (rows sum to N)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_clips, size=(n_boot, n_clips))  # [B, N] drawn clip indices
    # One bincount over all rows at once: row b's clips are offset by b * N.
    flat = (idx + n_clips * np.arange(n_boot)[:, None]).ravel()
    return np.bincount(flat, minlength=n_boot * n_clips).reshape(n_boot, n_clips)


def per_clip_metrics(pred, true) -> dict[str, np.ndarray]:
    """Per-clip values `{name: [N]}` of the metrics of `b2m.core.metrics.PER_CLIP`, each clip a query
    against all N clips as candidates; their means over clips are the metrics.

    `pred`, `true`: `[N, L, D]` (or `[N, F]`).
    """
    return {name: per_clip(pred, true).numpy() for name, per_clip in PER_CLIP.items()}


def bootstrap_metrics(pred, true, counts: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric of `METRICS` on each bootstrap sample: `{name: [B]}`.

    `pred`, `true`: `[N, L, D]` (or `[N, F]`); `counts`: `[B, N]` from `resample_counts`, how often each
    clip is drawn as a query. Identification, top-k and cosine are count-weighted means of
    `per_clip_metrics` (all N clips stay candidates); Pearson is computed across the drawn clips. A row
    of ones gives the metrics of the full set; a row of zeros gives NaN.
    """
    m = np.asarray(counts, dtype=np.float64)  # [B, N]
    out = {name: _weighted_mean(values, m) for name, values in per_clip_metrics(pred, true).items()}
    out["pearson"] = _weighted_pearson(pred, true, m)
    assert set(out) == set(METRICS)
    return out


def confidence_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap values `[B]` (NaNs ignored): `(low, high)`."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def _weighted_mean(per_clip: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Mean over the drawn clips of per-clip values `[N]`, each weighted by its count in `m` `[B, N]`: `[B]`."""
    with np.errstate(invalid="ignore", divide="ignore"):  # a sample without these clips: NaN
        return m @ np.asarray(per_clip, dtype=np.float64) / m.sum(axis=1)


def _flat(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(len(x), -1)


def _weighted_pearson(pred, true, m: np.ndarray) -> np.ndarray:
    """Mean over features of the Pearson r across the drawn clips (weights = counts `m` `[B, N]`): `[B]`."""
    p, t = _flat(pred), _flat(true)  # [N, F]
    with np.errstate(invalid="ignore", divide="ignore"):
        w = m / m.sum(axis=1, keepdims=True)  # [B, N]
    mp, mt = w @ p, w @ t  # [B, F]
    cov = w @ (p * t) - mp * mt
    var_p = np.maximum(w @ (p * p) - mp ** 2, 0.0)
    var_t = np.maximum(w @ (t * t) - mt ** 2, 0.0)
    r = cov / np.maximum(np.sqrt(var_p * var_t), 1e-12)
    return r.mean(axis=1)
