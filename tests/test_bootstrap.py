"""Bootstrap intervals over test clips: queries resampled against the whole candidate set."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from b2m.core.metrics import METRICS, Standardiser, correlation_matrix, decoding_metrics, identification_against
from b2m.evaluation.bootstrap import bootstrap_metrics, confidence_interval, per_clip_metrics, resample_counts

# Zero mean, unit sd: the standardised scores are the raw ones.
IDENTITY = Standardiser(np.zeros((1, 10)), np.ones((1, 10)))
RANKED = ("id_acc", "top1", "top5")


@pytest.fixture
def data():
    rng = np.random.default_rng(1)
    true = rng.normal(size=(25, 1, 10))
    pred = 0.7 * true + rng.normal(size=(25, 1, 10))
    return pred, true


def correlations(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """`[..., N, N]`: Pearson r of `pred[..., i, :]` with `true[..., j, :]` across features, in plain numpy."""
    p = pred - pred.mean(axis=-1, keepdims=True)
    t = true - true.mean(axis=-1, keepdims=True)
    p = p / np.maximum(np.linalg.norm(p, axis=-1, keepdims=True), 1e-12)  # a constant vector correlates 0
    t = t / np.maximum(np.linalg.norm(t, axis=-1, keepdims=True), 1e-12)
    return p @ np.swapaxes(t, -1, -2)


def reference_per_clip(c: np.ndarray) -> dict[str, np.ndarray]:
    """Per-query values `{name: [..., N]}` of id_acc, top1, top5 from correlations `c` `[..., N, N]`, every
    clip a candidate: the right clip's place among t tied candidates is uniform over t + 1 places."""
    n = c.shape[-1]
    right = np.diagonal(c, axis1=-2, axis2=-1)[..., None]
    better = (c > right).sum(-1)
    ties = (c == right).sum(-1) - 1
    out = {"id_acc": ((c < right).sum(-1) + 0.5 * ties) / (n - 1)}
    for name, k in (("top1", 1), ("top5", 5)):
        places = better[..., None] + 1 + np.arange(n)  # the places the right clip may take
        possible = np.arange(n) <= ties[..., None]  # only the first ties + 1 of them
        out[name] = ((places <= k) & possible).sum(-1) / (ties + 1)
    return out


def reference_sample(pred: np.ndarray, true: np.ndarray, idx: np.ndarray) -> dict[str, float]:
    """Metrics of the bootstrap sample of queries `idx` (with repeats), in plain numpy: per-clip values over
    all N candidates averaged over `idx`; Pearson across the drawn clips."""
    n = len(pred)
    p, t = pred.reshape(n, -1), true.reshape(n, -1)
    out = {name: float(values[idx].mean()) for name, values in reference_per_clip(correlations(p, t)).items()}
    ps, ts = p[idx], t[idx]
    out["pearson"] = np.mean([np.corrcoef(ps[:, d], ts[:, d])[0, 1] for d in range(p.shape[1])])
    out["cosine"] = np.mean([a @ b / np.linalg.norm(a) / np.linalg.norm(b) for a, b in zip(ps, ts)])
    return out


def test_a_row_of_ones_is_the_full_set_including_ties():
    rng = np.random.default_rng(0)
    true = rng.normal(size=(12, 2, 5))
    pred = 0.8 * true + rng.normal(size=true.shape)
    true[4] = true[3]  # queries 3 and 4 each tie their right clip with the other's
    pred[7] = 0.0  # correlates 0 with every clip: tied with all of them
    pred[8] = true[9]  # wrong clip at rank 1 tied with nothing
    c = correlation_matrix(pred, true).numpy()
    assert c[3, 3] == c[3, 4] and c[4, 4] == c[4, 3] and (c[7] == c[7, 7]).all()  # the ties are there
    full = bootstrap_metrics(pred, true, np.ones((1, 12), dtype=int))
    assert set(full) == set(METRICS)
    for name, fn in METRICS.items():
        assert full[name] == pytest.approx([fn(pred, true)], abs=1e-12), name
    # The same numbers as the metric table, and per-clip values whose mean they are.
    for name, value in decoding_metrics(pred, true, Standardiser(np.zeros((2, 5)), np.ones((2, 5)))).items():
        if not name.endswith("_raw"):
            assert full[name][0] == pytest.approx(value, abs=1e-12), name
    for name, values in per_clip_metrics(pred, true).items():
        assert values.shape == (12,) and values.mean() == pytest.approx(METRICS[name](pred, true), abs=1e-12)
    # Torch inputs score the same.
    as_torch = bootstrap_metrics(torch.as_tensor(pred), torch.as_tensor(true), np.ones((1, 12)))
    assert {k: v[0] for k, v in as_torch.items()} == pytest.approx({k: v[0] for k, v in full.items()})


def test_an_explicit_sample_is_a_weighted_mean_over_the_whole_candidate_set(data):
    pred, true = data
    rng = np.random.default_rng(3)
    samples = [rng.integers(0, 25, size=25) for _ in range(5)]
    assert all(len(set(idx)) < 25 for idx in samples)  # repeats, and clips left out
    counts = np.stack([np.bincount(idx, minlength=25) for idx in samples])
    boot = bootstrap_metrics(pred, true, counts)
    for b, idx in enumerate(samples):
        for name, value in reference_sample(pred, true, idx).items():
            assert boot[name][b] == pytest.approx(value), name


def test_resampling_is_seeded_and_intervals_are_percentiles(data):
    pred, true = data
    counts = resample_counts(25, 50, 7)
    assert counts.shape == (50, 25) and (counts.sum(axis=1) == 25).all() and counts.dtype.kind == "i"
    assert (counts == resample_counts(25, 50, 7)).all()
    assert not (counts == resample_counts(25, 50, 8)).all()
    boot = bootstrap_metrics(pred, true, resample_counts(25, 500, 0))
    low, high = confidence_interval(boot["id_acc"], 0.95)
    assert (low, high) == pytest.approx(tuple(np.percentile(boot["id_acc"], [2.5, 97.5])))
    wide = confidence_interval(boot["id_acc"], 0.99)
    assert wide[0] <= low and wide[1] >= high


def test_a_sample_without_these_clips_is_nan(data):
    """Subjects sharing one draw over the union of their clips: a subject may have none of the drawn ones."""
    pred, true = data
    counts = np.stack([np.zeros(25), np.ones(25)])
    boot = bootstrap_metrics(pred, true, counts)
    for name in METRICS:
        assert np.isnan(boot[name][0]) and np.isfinite(boot[name][1]), name
    assert confidence_interval(boot["id_acc"]) == (boot["id_acc"][1], boot["id_acc"][1])
    assert all(np.isnan(confidence_interval(np.full(3, np.nan))))


@pytest.mark.parametrize("signal", [0.0, 0.2, 0.5, 1.5])
def test_every_interval_contains_its_point_estimate(signal):
    for seed in range(4):
        rng = np.random.default_rng(seed)
        true = rng.normal(size=(40, 3, 8))
        pred = signal * true + rng.normal(size=true.shape)
        boot = bootstrap_metrics(pred, true, resample_counts(40, 1000, seed))
        for name, fn in METRICS.items():
            point = fn(pred, true)
            low, high = confidence_interval(boot[name], 0.95)
            assert low <= point <= high, (signal, seed, name)
            if name != "pearson":  # a mean of per-clip values: resampling its clips is centred on it
                assert abs(boot[name].mean() - point) <= 4 * boot[name].std() / np.sqrt(1000) + 1e-12, name


def test_one_right_clip_of_six():
    """6 clips, only the first decoded to its own clip: top1 1/6, inside its interval."""
    rng = np.random.default_rng(0)
    true = rng.normal(size=(6, 8))
    pred = true[[0, 2, 3, 4, 5, 0]]  # clip i > 0 decoded as the next clip (the last as clip 0)
    assert METRICS["top1"](pred, true) == pytest.approx(1 / 6)
    boot = bootstrap_metrics(pred, true, resample_counts(6, 2000, 1))
    for name, fn in METRICS.items():
        low, high = confidence_interval(boot[name], 0.95)
        assert low <= fn(pred, true) <= high, name
    # top1 of a sample is the share of draws of clip 0, so its values are multiples of 1/6 centred on 1/6.
    assert np.allclose(boot["top1"] * 6, np.round(boot["top1"] * 6))
    assert boot["top1"].mean() == pytest.approx(1 / 6, abs=0.01)


def test_intervals_cover_the_population_value():
    """Simulated decoders of known accuracy: N = 60 fresh clips per simulation, pred = a * true + noise.
    Each metric is a mean of per-query values, so the mean of its point estimates over many simulations
    is its population value; the 95% interval must contain that value in 95% of simulations (within
    0.03: an interval over 60 clips is discrete, and the candidates are not resampled)."""
    n_sim, n_cover, n_clips, dim, a = 4000, 1000, 60, 48, 0.24
    rng = np.random.default_rng(0)
    sums = {name: 0.0 for name in RANKED}
    covered = {name: 0 for name in RANKED}
    for start in range(0, n_sim, n_cover):  # chunks of simulations: [n_cover, N, D] at a time
        true = rng.normal(size=(n_cover, n_clips, dim))
        pred = a * true + rng.normal(size=true.shape)
        points = reference_per_clip(correlations(pred, true))  # {name: [n_cover, N]}
        sums = {name: sums[name] + points[name].mean(axis=1).sum() for name in RANKED}
        if start == 0:  # the first chunk is also bootstrapped
            kept = pred, true
    population = {name: sums[name] / n_sim for name in RANKED}
    with threadpool_limits(1):  # small matrices: threads only contend
        for s, (p, t) in enumerate(zip(*kept)):
            boot = bootstrap_metrics(p, t, resample_counts(n_clips, 1000, seed=s))
            for name in RANKED:
                low, high = confidence_interval(boot[name], 0.95)
                covered[name] += low <= population[name] <= high
    coverage = {name: covered[name] / n_cover for name in RANKED}
    print("\nmetric  population  coverage")
    for name in RANKED:
        print(f"{name:7s} {population[name]:10.4f} {coverage[name]:9.3f}")
    assert 0.85 <= population["id_acc"] <= 0.9 and 0.2 <= population["top1"] <= 0.3  # like the demo
    for name in RANKED:
        assert abs(coverage[name] - 0.95) <= 0.03, (name, coverage[name])


def test_subjects_share_the_clip_draws_and_are_averaged(data):
    """Two subjects with the same clips in different orders: per-subject rows are the plain metrics, the
    across-subject interval comes from resamples that draw the same clips for both subjects."""
    from b2m.evaluation.decoding import ScoredSet, score_sets
    from b2m.evaluation.results import Results

    pred, true = data
    ids = [f"clip{i:02d}" for i in range(25)]
    order = np.random.default_rng(5).permutation(25)
    pred2 = true + np.random.default_rng(6).normal(size=true.shape)
    sets = {"sub-001": [ScoredSet(pred[None], true, ids, IDENTITY)],
            "sub-002": [ScoredSet(pred2[order][None], true[order], [ids[i] for i in order], IDENTITY)]}
    out = Results(score_sets(sets, n_boot=300, seed=4, level=0.9)).flat()
    one, two = decoding_metrics(pred, true, IDENTITY), decoding_metrics(pred2, true, IDENTITY)
    for name in METRICS:
        assert out[f"sub-001/test/{name}"] == pytest.approx(one[name])
        assert out[f"sub-002/test/{name}"] == pytest.approx(two[name])
        assert out[f"test/{name}"] == pytest.approx((one[name] + two[name]) / 2)
    assert out["test/id_acc_sd"] == pytest.approx(np.std([one["id_acc"], two["id_acc"]], ddof=1))
    counts = resample_counts(25, 300, seed=4)  # over the sorted clip ids, which are ids here
    for name in METRICS:
        mean = (bootstrap_metrics(pred, true, counts)[name] + bootstrap_metrics(pred2, true, counts)[name]) / 2
        assert (out[f"test/{name}_ci_low"], out[f"test/{name}_ci_high"]) == pytest.approx(confidence_interval(mean, 0.9))
        assert out[f"test/{name}_ci_low"] <= out[f"test/{name}"] <= out[f"test/{name}_ci_high"]


def test_identification_against_a_larger_candidate_set(data):
    pred, true = data
    held = np.array([3, 7, 11])
    c = np.corrcoef(pred.reshape(25, -1)[held], true.reshape(25, -1))[:3, 3:]
    ref = np.mean([np.mean([c[q, held[q]] > c[q, j] for j in range(25) if j != held[q]]) for q in range(3)])
    assert identification_against(pred[held], true, held) == pytest.approx(ref)
    # Among themselves it is the ordinary identification accuracy.
    assert identification_against(pred, true, np.arange(25)) == pytest.approx(decoding_metrics(pred, true, IDENTITY)["id_acc"])
