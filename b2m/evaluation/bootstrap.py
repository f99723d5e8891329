"""Bootstrap confidence intervals of the decoding metrics over test clips.

A bootstrap sample draws N clips with replacement; it is represented by the counts
`[N]` of each original clip. Every metric is recomputed on the sample: identification
and top-k compare each drawn clip with the *distinct* other clips of the sample (a
duplicate of the right clip is the same clip, not a competitor; top-k ranks are
rescaled to the full set's N - 1 competitors; ties count as in `b2m.core.metrics`: half a
win, and half a chance of ranking above), Pearson is computed across the drawn clips
(duplicates weigh double), cosine is averaged over them. Inputs are scored as given: the
caller standardises them.
"""

from __future__ import annotations

import numpy as np

from b2m.core.metrics import METRICS, correlation_matrix


def resample_counts(n_clips: int, n_boot: int, seed: int) -> np.ndarray:
    """`[n_boot, n_clips]` int: how often each clip is drawn in each bootstrap sample (rows sum to N)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_clips, size=(n_boot, n_clips))
    return np.stack([np.bincount(row, minlength=n_clips) for row in idx])


def bootstrap_metrics(pred, true, counts: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric of `METRICS` on each bootstrap sample: `{name: [B]}`.

    `pred`, `true`: `[N, L, D]` (or `[N, F]`); `counts`: `[B, N]` from `resample_counts`.
    A row of ones gives the metrics of the full set.
    """
    c = correlation_matrix(pred, true).numpy()  # [N, N]
    n = len(c)
    m = np.asarray(counts, dtype=np.float64)  # [B, N]
    present = (m > 0).astype(np.float64)
    n_present = present.sum(axis=1)  # [B]
    right = np.diag(c)[:, None]
    tied = (c == right) & ~np.eye(n, dtype=bool)  # [i, j]: clip j ties with the right clip i
    # beats[i, j]: the right clip i is closer to pred i than clip j is (never for j == i); a tie is half.
    beats = (right > c) + 0.5 * tied
    wins = present @ beats.T  # [B, N]: distinct drawn competitors that clip i beats
    losses = present @ (c > right).astype(np.float64).T  # competitors ranked above clip i
    ties = present @ tied.astype(np.float64).T
    with np.errstate(invalid="ignore", divide="ignore"):
        per_clip_id = wins / (n_present[:, None] - 1)
        # A sample holds fewer distinct competitors than the N - 1 of the test set, which would make
        # top-k easier: the rank is rescaled to N - 1 competitors (exact when all clips are drawn).
        rank = losses * (n - 1) / (n_present[:, None] - 1)
        ties = ties * (n - 1) / (n_present[:, None] - 1)
    rank, ties = np.nan_to_num(rank, nan=np.inf), np.nan_to_num(ties)
    out = {
        "id_acc": _weighted_mean(np.nan_to_num(per_clip_id), m),
        "top1": _weighted_mean(_top_k(rank, ties, 1), m),
        "top5": _weighted_mean(_top_k(rank, ties, 5), m),
        "cosine": _weighted_mean(np.broadcast_to(_cosines(pred, true), m.shape), m),
        "pearson": _weighted_pearson(pred, true, m),
    }
    out["id_acc"][n_present < 2] = np.nan  # one distinct clip: nothing to identify against
    assert set(out) == set(METRICS)
    return out


def _top_k(rank: np.ndarray, ties: np.ndarray, k: int) -> np.ndarray:
    """P(the right clip is among the top k) with `rank` competitors above it and `ties` tied, ties broken
    at random: `[B, N]`."""
    with np.errstate(invalid="ignore"):
        return np.where(ties > 0, np.clip((k - rank) / (ties + 1), 0.0, 1.0), rank < k)


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
    """Mean over the drawn clips of per-clip values `[B, N]`, each weighted by its count: `[B]`."""
    with np.errstate(invalid="ignore", divide="ignore"):  # a sample without these clips: NaN
        return (np.asarray(per_clip, dtype=np.float64) * m).sum(axis=1) / m.sum(axis=1)


def _flat(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(len(x), -1)


def _cosines(pred, true) -> np.ndarray:
    p, t = _flat(pred), _flat(true)
    return (p * t).sum(1) / np.maximum(np.linalg.norm(p, axis=1) * np.linalg.norm(t, axis=1), 1e-12)


def _weighted_pearson(pred, true, m: np.ndarray) -> np.ndarray:
    """Mean over features of the Pearson r across the drawn clips (weights = counts): `[B]`."""
    p, t = _flat(pred), _flat(true)  # [N, F]
    with np.errstate(invalid="ignore", divide="ignore"):
        w = m / m.sum(axis=1, keepdims=True)  # [B, N]
    mp, mt = w @ p, w @ t  # [B, F]
    cov = w @ (p * t) - mp * mt
    var_p = np.maximum(w @ (p * p) - mp ** 2, 0.0)
    var_t = np.maximum(w @ (t * t) - mt ** 2, 0.0)
    r = cov / np.maximum(np.sqrt(var_p * var_t), 1e-12)
    return r.mean(axis=1)
