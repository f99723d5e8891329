"""Decoding metrics on predicted vs true embeddings, flattened to `[N, L*D]`.

identification accuracy (Brain2Music): for each test clip i, the fraction of the
other clips j with corr(pred_i, true_i) > corr(pred_i, true_j); mean over i;
chance 0.5. top-k: the true clip ranks among the k best-correlated of all N.
A tie counts half a win, and top-k breaks ties at random (its expectation), so
that a prediction carrying no information scores chance exactly.

Scored on comparable dimensions: an embedding's dimensions can differ in scale by
orders of magnitude (log-mel means beside modulation energies), and a correlation
across raw dimensions is then decided by the few largest. `decoding_metrics`
first standardises every dimension of predictions and targets with the training
clips' mean and sd (`Standardiser`), as Brain2Music and the plain reference do,
and reports the raw-vector scores beside them as `<metric>_raw`. Per-dimension
Pearson r is unchanged by the standardisation, so it has no `_raw` twin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torchmetrics


@dataclass(frozen=True)
class Standardiser:
    """Per-dimension mean and sd `[L, D]` of the training clips' embeddings; `standardiser(x)` maps
    `[N, L, D]` to `(x - mean) / sd`. A dimension constant over the training clips carries no
    information to compare and maps to 0."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, y) -> "Standardiser":
        """From training embeddings `y` `[N, L, D]` (population sd, ddof 0)."""
        y = np.asarray(y, dtype=np.float64)
        return cls(y.mean(axis=0), y.std(axis=0))

    def __call__(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        std = np.where(self.std > 0, self.std, np.inf)
        return (x - self.mean) / std


def _flat(x) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float64)
    return x.reshape(len(x), -1)


def correlation_matrix(pred, true) -> torch.Tensor:
    """`C[i, j]` = Pearson r between `pred[i]` and `true[j]` across features: `[N, N]`."""
    p, t = _flat(pred), _flat(true)
    p = p - p.mean(dim=1, keepdim=True)
    t = t - t.mean(dim=1, keepdim=True)
    p = p / p.norm(dim=1, keepdim=True).clamp_min(1e-12)
    t = t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return p @ t.T


def identification_per_clip(pred, true, target=None) -> torch.Tensor:
    """Identification of each query `pred[i]` `[n, L, D]` among the candidates `true` `[M, L, D]`: the
    fraction of the other M - 1 candidates that its right one, `true[target[i]]` (default: `true[i]`),
    beats, a tie counting half: `[n]` (chance 0.5; NaN for M = 1)."""
    c = correlation_matrix(pred, true)  # [n, M]
    target = torch.arange(len(c)) if target is None else torch.as_tensor(np.asarray(target, dtype=np.int64))
    right = c[torch.arange(len(c)), target][:, None]
    ties = (right == c).double().sum(dim=1) - 1  # the right candidate ties with itself
    wins = (right > c).double().sum(dim=1) + 0.5 * ties
    return wins / (c.shape[1] - 1)


def identification_against(pred, true, target) -> float:
    """Identification accuracy of queries `pred` `[n, L, D]` among candidates `true` `[M, L, D]`, query
    i's right candidate being `true[target[i]]` (the mean of `identification_per_clip`)."""
    return float(identification_per_clip(pred, true, target).mean())


def top_k_per_clip(pred, true, k: int) -> torch.Tensor:
    """For each clip, P(its true embedding is among the `k` best-correlated with its prediction), a clip
    tied with the right one ranked above it with probability 1/2 (the expectation): `[N]`."""
    c = correlation_matrix(pred, true)
    right = c.diagonal()[:, None]
    better = (c > right).double().sum(dim=1)  # how many clips beat the right one
    ties = (c == right).double().sum(dim=1) - 1
    # With t ties the right clip takes one of t + 1 places at random: k - better of them are in the top k.
    return ((k - better) / (ties + 1)).clamp(0, 1)


def cosine_per_clip(pred, true) -> torch.Tensor:
    """Cosine similarity of each prediction with its true embedding: `[N]`."""
    return torch.nn.functional.cosine_similarity(_flat(pred), _flat(true), dim=1)


def mean_pearson(pred, true) -> float:
    """Pearson r per embedding dimension across clips, averaged over dimensions."""
    p, t = _flat(pred), _flat(true)
    p = p - p.mean(dim=0)
    t = t - t.mean(dim=0)
    r = (p * t).sum(dim=0) / (p.norm(dim=0) * t.norm(dim=0)).clamp_min(1e-12)
    return float(r.mean())


def decoding_metrics(pred, true, scale: Standardiser) -> dict[str, float]:
    """All decoding metrics for one set of predictions `[N, L, D]`: id_acc, top1, top5, pearson, cosine
    on dimensions standardised by `scale`, then id_acc_raw, top1_raw, top5_raw, cosine_raw on the raw
    vectors (the keys of `METRIC_KEYS`)."""
    pred_z, true_z = scale(pred), scale(true)
    out = {name: fn(pred_z, true_z) for name, fn in METRICS.items()}
    out.update({f"{name}_raw": METRICS[name](pred, true) for name in RAW_METRICS})
    return out


def baseline_predictions(pred, train_mean, seed: int) -> dict[str, np.ndarray]:
    """The two baselines of every table, for test predictions `pred` `[N, L, D]`:
    `mean_train`, the mean training embedding `train_mean` `[L, D]` for every clip, and `shuffled`, the
    predictions permuted so that no clip keeps its own (same distribution, wrong clip).

    Standardised with the training statistics, `mean_train` is the zero vector: it correlates
    equally (0) with every clip, so by the tie rule it scores chance exactly (id_acc 0.5, top-k k/N,
    pearson and cosine 0). Its raw-vector scores are what they were before standardisation existed.
    """
    pred = np.asarray(pred)
    mean = np.broadcast_to(np.asarray(train_mean), pred.shape).copy()
    return {"mean_train": mean, "shuffled": derange(pred, seed)}


def derange(x, seed: int) -> np.ndarray:
    """`x` `[N, ...]` permuted along the first axis so that no row keeps its place (a seeded
    cycle through a random order)."""
    x = np.asarray(x)
    order = np.random.default_rng(seed).permutation(len(x))
    out = np.empty_like(x)
    out[order] = x[np.roll(order, -1)]
    return out


def metrics_table(pred, true, scale: Standardiser, seed: int) -> dict[str, float]:
    """`test/<metric>` of the predictions and `baseline/<name>/<metric>` of both baselines, standardised
    by the training clips' `scale` (and `_raw`)."""
    rows = {f"test/{k}": v for k, v in decoding_metrics(pred, true, scale).items()}
    for name, base in baseline_predictions(pred, scale.mean, seed).items():
        rows.update({f"baseline/{name}/{k}": v for k, v in decoding_metrics(base, true, scale).items()})
    return rows


def aggregate_subjects(per_subject: dict[str, dict], prefix: str = "", sd: bool = True) -> dict:
    """Flatten per-subject tables `{subject: {key: value}}` into one.

    Keys: `<prefix><subject>/<key>` for every row, then `<prefix><key>`, the mean over the
    subjects that have a value (None where none has), and with `sd` `<prefix><key>_sd`, the
    sd across them (ddof 1; 0 for one subject). Keys keep their first-seen order.
    """
    out: dict = {}
    keys: dict[str, None] = {}
    for subject, rows in per_subject.items():
        out.update({f"{prefix}{subject}/{k}": v for k, v in rows.items()})
        keys.update(dict.fromkeys(rows))
    for key in keys:
        values = [rows[key] for rows in per_subject.values() if rows.get(key) is not None]
        out[f"{prefix}{key}"] = float(np.mean(values)) if values else None
        if sd:
            out[f"{prefix}{key}_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else (0.0 if values else None)
    return out


class DecodingMetric(torchmetrics.Metric):
    """A torchmetrics wrapper of one metric above: accumulates `[B, L, D]` predictions and
    targets over an epoch (across processes too) and scores them together, since
    identification and top-k compare each clip with all the others."""

    full_state_update = False

    def __init__(self, name: str) -> None:
        super().__init__()
        if name not in METRICS:
            raise ValueError(f"unknown metric {name!r}; known: {sorted(METRICS)}")
        self.name = name
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, targets: torch.Tensor) -> None:
        self.preds.append(preds.detach().reshape(len(preds), -1).float())
        self.targets.append(targets.detach().reshape(len(targets), -1).float())

    def compute(self) -> torch.Tensor:
        preds = torchmetrics.utilities.dim_zero_cat(self.preds)
        targets = torchmetrics.utilities.dim_zero_cat(self.targets)
        return torch.tensor(METRICS[self.name](preds.cpu(), targets.cpu()))


# The metrics that are means over clips of a per-clip value (each clip a query against all N clips as
# candidates): the bootstrap resamples these values (`b2m.evaluation.bootstrap`). A metric added here is
# scored, resampled and shown everywhere an evaluation is (metrics.json, summary.md, report, terminal).
PER_CLIP = {
    "id_acc": identification_per_clip,
    "top1": lambda p, t: top_k_per_clip(p, t, 1),
    "top5": lambda p, t: top_k_per_clip(p, t, 5),
    "cosine": cosine_per_clip,
}


def _mean_over_clips(per_clip):
    return lambda pred, true: float(per_clip(pred, true).mean())


# Every metric: the per-clip ones' means over clips (identification needs 2 clips: NaN for one), and
# Pearson r per dimension across clips, which has no per-clip part.
METRICS = {**{name: _mean_over_clips(f) for name, f in PER_CLIP.items()}, "pearson": mean_pearson}
# The metrics that standardisation changes, reported on raw vectors too as `<name>_raw`.
RAW_METRICS = ("id_acc", "top1", "top5", "cosine")
METRIC_KEYS = (*METRICS, *(f"{name}_raw" for name in RAW_METRICS))
