"""Decoding metrics on predicted vs true embeddings, flattened to `[N, L*D]`.

identification accuracy (Brain2Music): for each test clip i, the fraction of the
other clips j with corr(pred_i, true_i) > corr(pred_i, true_j); mean over i;
chance 0.5. top-k: the true clip ranks among the k best-correlated of all N.
"""

from __future__ import annotations

import numpy as np
import torch
import torchmetrics


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


def identification_accuracy(pred, true) -> float:
    """Mean over clips of the fraction of other clips beaten by the right one (chance 0.5)."""
    c = correlation_matrix(pred, true)
    n = len(c)
    if n < 2:
        raise ValueError("identification accuracy needs at least 2 clips")
    wins = (c.diagonal()[:, None] > c).double().sum(dim=1)  # the diagonal never beats itself
    return float((wins / (n - 1)).mean())


def top_k_accuracy(pred, true, k: int) -> float:
    """Fraction of clips whose true embedding is among the `k` best-correlated with the prediction."""
    c = correlation_matrix(pred, true)
    rank = (c > c.diagonal()[:, None]).sum(dim=1)  # how many clips beat the right one
    return float((rank < k).double().mean())


def mean_pearson(pred, true) -> float:
    """Pearson r per embedding dimension across clips, averaged over dimensions."""
    p, t = _flat(pred), _flat(true)
    p = p - p.mean(dim=0)
    t = t - t.mean(dim=0)
    r = (p * t).sum(dim=0) / (p.norm(dim=0) * t.norm(dim=0)).clamp_min(1e-12)
    return float(r.mean())


def mean_cosine(pred, true) -> float:
    """Cosine similarity of each prediction with its true embedding, averaged over clips."""
    return float(torch.nn.functional.cosine_similarity(_flat(pred), _flat(true), dim=1).mean())


def decoding_metrics(pred, true) -> dict[str, float]:
    """All decoding metrics for one set of predictions: keys id_acc, top1, top5, pearson, cosine."""
    return {name: fn(pred, true) for name, fn in METRICS.items()}


def baseline_predictions(pred, train_mean, seed: int) -> dict[str, np.ndarray]:
    """The two baselines of every table, for test predictions `pred` `[N, L, D]`:
    `mean_train`, the mean training embedding `train_mean` `[L, D]` for every clip, and `shuffled`, the
    predictions permuted so that no clip keeps its own (same distribution, wrong clip)."""
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


def metrics_table(pred, true, train_mean, seed: int) -> dict[str, float]:
    """`test/<metric>` of the predictions and `baseline/<name>/<metric>` of both baselines."""
    rows = {f"test/{k}": v for k, v in decoding_metrics(pred, true).items()}
    for name, base in baseline_predictions(pred, train_mean, seed).items():
        rows.update({f"baseline/{name}/{k}": v for k, v in decoding_metrics(base, true).items()})
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


METRICS = {
    "id_acc": identification_accuracy,
    "top1": lambda p, t: top_k_accuracy(p, t, 1),
    "top5": lambda p, t: top_k_accuracy(p, t, 5),
    "pearson": mean_pearson,
    "cosine": mean_cosine,
}
