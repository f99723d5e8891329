"""Decoding metrics against plain numpy references."""

from __future__ import annotations

import numpy as np
import pytest

from b2m.core.metrics import (baseline_predictions, decoding_metrics, identification_accuracy,
                                    mean_cosine, mean_pearson, top_k_accuracy)


def reference_id_acc(pred, true):
    n = len(pred)
    c = np.corrcoef(pred, true)[:n, n:]
    return np.mean([np.mean([c[i, i] > c[i, j] for j in range(n) if j != i]) for i in range(n)])


def reference_topk(pred, true, k):
    c = np.corrcoef(pred, true)[: len(pred), len(pred):]
    return np.mean([i in np.argsort(-c[i])[:k] for i in range(len(pred))])


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    true = rng.normal(size=(30, 12))
    pred = 0.6 * true + rng.normal(size=(30, 12))
    return pred, true


def test_identification_and_topk_match_numpy(data):
    pred, true = data
    assert identification_accuracy(pred, true) == pytest.approx(reference_id_acc(pred, true))
    for k in (1, 5):
        assert top_k_accuracy(pred, true, k) == pytest.approx(reference_topk(pred, true, k))
    assert identification_accuracy(true, true) == 1.0
    # [N, L, D] inputs are flattened per clip.
    assert identification_accuracy(pred.reshape(30, 3, 4), true.reshape(30, 3, 4)) == pytest.approx(
        reference_id_acc(pred, true))


def test_pearson_and_cosine_match_numpy(data):
    pred, true = data
    r = [np.corrcoef(pred[:, d], true[:, d])[0, 1] for d in range(12)]
    assert mean_pearson(pred, true) == pytest.approx(np.mean(r))
    cos = [p @ t / np.linalg.norm(p) / np.linalg.norm(t) for p, t in zip(pred, true)]
    assert mean_cosine(pred, true) == pytest.approx(np.mean(cos))


def test_baselines_sit_at_chance(data):
    pred, true = data
    base = baseline_predictions(pred, true.mean(0), seed=0)
    assert (base["mean_train"] == true.mean(0)).all()
    # The shuffled predictions keep no clip's own prediction.
    assert not any(np.allclose(base["shuffled"][i], pred[i]) for i in range(len(pred)))
    assert sorted(map(tuple, base["shuffled"])) == sorted(map(tuple, pred))
    assert decoding_metrics(base["mean_train"], true)["id_acc"] == pytest.approx(0.5, abs=0.05)


def test_torchmetrics_classes_accumulate_batches_like_the_functions(data):
    import torch

    from b2m.core.metrics import METRICS, DecodingMetric

    pred, true = (torch.tensor(a, dtype=torch.float32).reshape(30, 1, 12) for a in data)
    for name, fn in METRICS.items():
        metric = DecodingMetric(name)
        for lo in range(0, 30, 7):
            metric.update(pred[lo:lo + 7], true[lo:lo + 7])
        assert float(metric.compute()) == pytest.approx(fn(data[0], data[1]), abs=1e-6)
        metric.reset()
        metric.update(pred[:10], true[:10])
        assert float(metric.compute()) == pytest.approx(fn(data[0][:10], data[1][:10]), abs=1e-6)
