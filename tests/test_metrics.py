"""Decoding metrics against plain numpy references."""

from __future__ import annotations

import numpy as np
import pytest

from b2m.core.metrics import METRIC_KEYS, METRICS, Standardiser, baseline_predictions, decoding_metrics, metrics_table


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
    assert METRICS["id_acc"](pred, true) == pytest.approx(reference_id_acc(pred, true))
    for k in (1, 5):
        assert METRICS[f"top{k}"](pred, true) == pytest.approx(reference_topk(pred, true, k))
    assert METRICS["id_acc"](true, true) == 1.0
    # [N, L, D] inputs are flattened per clip.
    assert METRICS["id_acc"](pred.reshape(30, 3, 4), true.reshape(30, 3, 4)) == pytest.approx(
        reference_id_acc(pred, true))


def test_pearson_and_cosine_match_numpy(data):
    pred, true = data
    r = [np.corrcoef(pred[:, d], true[:, d])[0, 1] for d in range(12)]
    assert METRICS["pearson"](pred, true) == pytest.approx(np.mean(r))
    cos = [p @ t / np.linalg.norm(p) / np.linalg.norm(t) for p, t in zip(pred, true)]
    assert METRICS["cosine"](pred, true) == pytest.approx(np.mean(cos))


def test_baselines_sit_at_chance(data):
    pred, true = data
    base = baseline_predictions(pred, true.mean(0), seed=0)
    assert (base["mean_train"] == true.mean(0)).all()
    # The shuffled predictions keep no clip's own prediction.
    assert not any(np.allclose(base["shuffled"][i], pred[i]) for i in range(len(pred)))
    assert sorted(map(tuple, base["shuffled"])) == sorted(map(tuple, pred))


def reference_standardised_id_acc(pred, true, train):
    """The plain reference's scoring (../shared/reference/plain_ridge.py), written out with numpy."""
    mu, sd = train.mean(0), train.std(0)
    n = len(pred)
    c = np.corrcoef((pred - mu) / sd, (true - mu) / sd)[:n, n:]
    return np.mean([(c[i, i] > np.delete(c[i], i)).mean() for i in range(n)]), np.mean(c.argmax(1) == np.arange(n))


def test_standardised_scores_match_numpy_and_keep_the_raw_ones():
    """Dimensions on scales 1e-2 .. 1e3, as in the acoustic space: the standardised score is the
    reference's; the raw one is decided by the largest dimensions and kept as `_raw`."""
    rng = np.random.default_rng(1)
    scales = np.logspace(-2, 3, 20)
    train = rng.normal(size=(200, 20)) * scales + 5 * scales
    true = rng.normal(size=(40, 20)) * scales + 5 * scales
    noise = rng.normal(size=(40, 20)) * scales
    noise[:, -3:] *= 6  # the three largest dimensions are decoded badly
    pred = true + noise
    scale = Standardiser.fit(train.reshape(200, 1, 20))
    out = decoding_metrics(pred.reshape(40, 1, 20), true.reshape(40, 1, 20), scale)
    assert list(out) == list(METRIC_KEYS)
    id_acc, top1 = reference_standardised_id_acc(pred, true, train)
    assert out["id_acc"] == pytest.approx(id_acc)
    assert out["top1"] == pytest.approx(top1)
    assert out["id_acc_raw"] == pytest.approx(reference_id_acc(pred, true))
    assert out["cosine_raw"] == pytest.approx(METRICS["cosine"](pred, true))
    assert out["id_acc"] > out["id_acc_raw"] + 0.1
    # Per-dimension Pearson r does not change with the scale of a dimension.
    assert out["pearson"] == pytest.approx(METRICS["pearson"](pred, true))


def test_standardiser_maps_constant_dimensions_to_zero():
    y = np.stack([np.arange(5.0), np.full(5, 3.0)], axis=1)[:, None, :]  # [5, 1, 2]
    scale = Standardiser.fit(y)
    z = scale(y + 1.0)
    np.testing.assert_allclose(z[:, 0, 0], (np.arange(5.0) + 1 - 2) / np.std(np.arange(5.0)))
    assert (z[:, 0, 1] == 0).all()


def test_mean_training_baseline_scores_chance_exactly(data):
    """Standardised, the mean training embedding is the zero vector: every clip ties, a tie counts
    half, so id_acc is 0.5 and top-k is k/N, not an accident of the data."""
    pred, true = data
    train = np.random.default_rng(2).normal(size=(100, 12))
    table = metrics_table(pred[:, None], true[:, None], Standardiser.fit(train[:, None]), seed=0)
    assert table["baseline/mean_train/id_acc"] == 0.5
    assert table["baseline/mean_train/top1"] == pytest.approx(1 / 30)
    assert table["baseline/mean_train/top5"] == pytest.approx(5 / 30)
    assert table["baseline/mean_train/pearson"] == 0 and table["baseline/mean_train/cosine"] == 0
    assert table["test/id_acc"] > 0.7


def test_ties_count_half():
    true = np.random.default_rng(3).normal(size=(10, 6))
    constant = np.ones((10, 6))
    assert METRICS["id_acc"](constant, true) == 0.5
    assert METRICS["top1"](constant, true) == pytest.approx(0.1)
    assert METRICS["top5"](constant, true) == pytest.approx(0.5)
    # Two identical candidates: the right one ties with its twin only.
    twin = true.copy()
    twin[1] = twin[0]
    assert METRICS["id_acc"](twin, twin) == pytest.approx(1 - 2 * 0.5 / 9 / 10)


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
