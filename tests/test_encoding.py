"""Encoding models: statistics against references, and recovery of known voxel tunings."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from omegaconf import OmegaConf
from scipy.stats import false_discovery_control

from b2m.core.clips import Clip
from b2m.core.config import compose
from b2m.core.runs import load_run
from b2m.data.bids import Presentation
from b2m.evaluation import plots
from b2m.evaluation.encoding import (TRUTH_FILE, SubjectEncoding, delayed, encoding_analysis, stimulus_time_course,
                                     subject_rows, write_encoding)
from b2m.evaluation.results import Results, subject_means
from b2m.jobs.evaluate import evaluate
from b2m.evaluation.stats import correlation_ceiling, explainable_variance, fdr_bh, pearson_columns
from helpers.tuned_bids import DEAD, SEMANTIC, SPECTRO


def test_fdr_bh_matches_scipy():
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.uniform(0, 0.002, 40), rng.uniform(size=400), [0.03, 0.03, 1.0]])
    for q in (0.01, 0.05, 0.2):
        reject, adjusted = fdr_bh(p, q)
        expected = false_discovery_control(p, method="bh")
        np.testing.assert_allclose(adjusted, expected, rtol=1e-12)
        assert (reject == (expected <= q)).all()
    assert 30 < fdr_bh(p, 0.05)[0].sum() < 60


def test_pearson_columns_matches_numpy():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(50, 6)), rng.normal(size=(50, 6))
    b[:, 0] += 2 * a[:, 0]
    expected = [np.corrcoef(a[:, v], b[:, v])[0, 1] for v in range(6)]
    np.testing.assert_allclose(pearson_columns(a, b), expected, rtol=1e-10)


def test_noise_ceiling_recovers_the_simulated_signal_share():
    """Signal `s` of variance `sv` plus independent noise of variance 1 per repeat: explainable variance is
    sv / (sv + 1); the correlation ceiling is corr(s, mean of R repeats) = sqrt(sv / (sv + 1 / R))."""
    rng = np.random.default_rng(2)
    n_rep, n, sv = 4, 20000, np.array([0.0, 0.25, 1.0, 4.0])
    signal = rng.normal(size=(n, 4)) * np.sqrt(sv)
    repeats = signal + rng.normal(size=(n_rep, n, 4))
    np.testing.assert_allclose(explainable_variance(repeats), sv / (sv + 1), atol=0.02)
    ceiling = correlation_ceiling(repeats)
    np.testing.assert_allclose(ceiling[1:], np.sqrt(sv / (sv + 1 / n_rep))[1:], atol=0.03)
    assert 0 <= ceiling[0] < 0.1  # pure noise: the square root of a clipped estimate near 0
    # The empirical correlation of the true signal with the mean response matches the ceiling.
    r_true = pearson_columns(signal[:, 1:], repeats.mean(axis=0)[:, 1:])
    np.testing.assert_allclose(correlation_ceiling(repeats)[1:], r_true, atol=0.02)


def test_design_puts_each_clip_on_the_trs_it_plays_and_delays_them():
    a, b = Clip("rock", 1, 0.0, 15.0), Clip("jazz", 2, 3.0, 18.0)
    emb = {a: np.array([[1.0, 2.0]]), b: np.array([[3.0, 4.0]])}
    events = [Presentation(0, 0.0, 3.0, a), Presentation(1, 4.5, 3.0, b)]
    x = stimulus_time_course(events, emb, n_tr=8, tr=1.5)  # TRs at 0, 1.5, 3, 4.5, ... s
    np.testing.assert_array_equal(x[:, 0], [1, 1, 0, 3, 3, 0, 0, 0])
    d = delayed(x, [0, 2])
    assert d.shape == (8, 4)
    np.testing.assert_array_equal(d[:, 2], [0, 0, 1, 1, 0, 3, 3, 0])
    np.testing.assert_array_equal(d[:, :2], x)


def _encoding(run_dir: Path, out_dir: Path, overrides: list[str]) -> dict:
    """The flat metrics of the encoding analysis of the run `run_dir` (evaluate's config with `overrides`),
    its outputs under `out_dir`."""
    cfg = compose("evaluate", [f"run={run_dir}", f"out_dir={out_dir}", "encoding.enabled=true", *overrides])
    rows = encoding_analysis(load_run(cfg.run).cfg.data, cfg.encoding, out_dir, int(cfg.seed))
    assert {row.section for row in rows} == {"encoding"}
    return Results(rows).flat()


def test_encoding_maps_recover_the_simulated_tuning(tuned_run, tmp_path):
    out = tmp_path / "ev"
    metrics = _encoding(tuned_run, out / "encoding", ["encoding.n_perm=200"])
    for space in ("acoustic", "caption"):
        tuned = [metrics[f"encoding/{space}/{c}/mean_r"] for c in ("spectrotemporal", "semantic")]
        assert max(tuned) > 0.5 > 0.1 > abs(metrics[f"encoding/{space}/untuned/mean_r"])
    # Pitch-tuned voxels are explained by the audio space, genre-tuned ones by the captions (which name
    # the genre): a double dissociation between audio- and text-derived spaces.
    assert metrics["encoding/acoustic/spectrotemporal/mean_r"] > metrics["encoding/caption/spectrotemporal/mean_r"]
    assert metrics["encoding/caption/semantic/mean_r"] > metrics["encoding/acoustic/semantic/mean_r"]
    assert metrics["encoding/acoustic_minus_caption/spectrotemporal/mean_r"] > 0
    # The same dissociation in the variance that only one space explains (banded ridge on both).
    part = "encoding/acoustic+caption/"
    assert metrics[part + "unique_acoustic/spectrotemporal/mean"] > metrics[part + "unique_caption/spectrotemporal/mean"]
    assert metrics[part + "unique_caption/semantic/mean"] > metrics[part + "unique_acoustic/semantic/mean"]
    assert metrics[part + "unique_acoustic/spectrotemporal/mean"] > 0.05
    assert metrics["encoding/noise_ceiling/spectrotemporal/mean_ev"] > 0.3 > metrics[
        "encoding/noise_ceiling/untuned/mean_ev"]

    # Maps: the BOLD's grid and affine, 0 outside the kept voxels (the background slab and the dropped
    # constant voxel), tuned voxels high; voxels are placed by index, not by position in the mask.
    root = Path(OmegaConf.load(tuned_run / "config.yaml").data.root)
    bold = nib.load(str(root / "sub-001" / "func" / "sub-001_task-Test_run-01_bold.nii"))
    folder = out / "encoding" / "sub-001"
    r_map = nib.load(str(folder / "acoustic_r.nii.gz"))
    np.testing.assert_allclose(r_map.affine, bold.affine)
    r = np.asarray(r_map.dataobj)
    assert r.shape == bold.shape[:3]
    assert (r[0] == 0).all() and r[DEAD] == 0
    untuned = np.ones(r.shape, dtype=bool)
    untuned[0] = False
    untuned[DEAD] = False
    for v in SPECTRO + SEMANTIC:
        untuned[v] = False
    assert min(r[v] for v in SPECTRO) > r[untuned].max()
    sig = np.asarray(nib.load(str(folder / "acoustic_significant.nii.gz")).dataobj)
    assert all(sig[v] == 1 for v in SPECTRO) and sig[untuned].mean() < 0.2
    assert (folder / "acoustic_r.png").read_bytes()[:4] == b"\x89PNG"
    assert (folder / "acoustic_minus_caption_r.nii.gz").exists()
    assert (folder / "acoustic+caption_unique_acoustic.nii.gz").exists() and (folder / "acoustic+caption_shared.png").exists()
    table = (out / "encoding" / "summary.md").read_text()
    assert f"| spectrotemporal | {len(SPECTRO)} |" in table
    assert "Variance partitioning, acoustic + caption" in table
    assert TRUTH_FILE.format(subject="sub-001").split("/")[-1] in table


def test_without_truth_the_top_noise_ceiling_voxels_stand_for_auditory_cortex(tuned_run, tmp_path):
    import shutil

    root = Path(OmegaConf.load(tuned_run / "config.yaml").data.root)
    truth = root / TRUTH_FILE.format(subject="sub-001")
    hidden = tmp_path / "truth.npz"
    shutil.move(truth, hidden)
    try:
        metrics = _encoding(tuned_run, tmp_path / "ev" / "encoding", [
            "encoding.n_perm=20", "encoding.spaces=[acoustic]", f"encoding.top_k={len(SPECTRO) + len(SEMANTIC)}"])
    finally:
        shutil.move(hidden, truth)
    assert metrics["encoding/acoustic/auditory/mean_r"] > metrics["encoding/acoustic/other/mean_r"] + 0.2
    assert "top 18 voxels by explainable variance" in (tmp_path / "ev" / "encoding" / "summary.md").read_text()


def _synthetic_encoding(subject: str, seed: int) -> SubjectEncoding:
    """Random maps on a 3x3x2 grid of 2 mm voxels, 15 of them kept, in three regions; an audio and a text space."""
    rng = np.random.default_rng(seed)
    mask = np.ones((3, 3, 2), dtype=bool)
    mask[0, 0] = mask[2, 2, 1] = False
    v = int(mask.sum())
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    regions = np.array(["a1"] * 6 + ["belt"] * 5 + ["other"] * 4, dtype=object)
    r = {"acoustic": rng.uniform(-0.2, 0.9, v), "caption": rng.uniform(-0.2, 0.9, v)}
    cc = rng.uniform(0.0, 1.0, v)
    cc[0] = 0.0  # no ceiling: no normalised r
    parts = {"unique_acoustic": rng.normal(size=v), "unique_caption": rng.normal(size=v), "shared": rng.normal(size=v)}
    return SubjectEncoding(
        subject=subject, modalities={"acoustic": "audio", "caption": "text"}, r=r,
        normalised={n: np.divide(x, cc, out=np.full(v, np.nan), where=cc > 0) for n, x in r.items()},
        significant={n: x > 0.5 for n, x in r.items()}, ev=cc ** 2, cc=cc,
        differences={("acoustic", "caption"): r["acoustic"] - r["caption"]}, parts={("acoustic", "caption"): parts},
        regions=regions, region_source="a test atlas", mask=mask, affine=affine,
        background=nib.Nifti1Image(np.ones(mask.shape, dtype=np.float32), affine), background_name="a flat image")


def test_encoding_rows_means_maps_and_summary_render_the_computed_maps(tmp_path, monkeypatch):
    encodings = [_synthetic_encoding("sub-001", 0), _synthetic_encoding("sub-002", 1)]
    rows = subject_means([row for enc in encodings for row in subject_rows(enc)], sd=False)
    results = Results(rows)
    regions = ["a1", "belt", "other"]
    # Per subject and per mean: every set's rows per region, the whole-brain rows, no sd.
    for subject in ("sub-001", "sub-002", None):
        for set_, choice, metric in [("noise_ceiling", "", "mean_ev"), ("acoustic", "", "mean_r"),
                                     ("caption", "", "mean_r"), ("acoustic_minus_caption", "", "mean_r"),
                                     ("acoustic+caption", "unique_acoustic", "mean"),
                                     ("acoustic+caption", "unique_caption", "mean"),
                                     ("acoustic+caption", "shared", "mean")]:
            found = results.select(subject=subject, set=set_, choice=choice, metric=metric)
            assert [row.part for row in found if row.part] == regions
        for metric in ("mean_r", "mean_r_normalised", "fraction_significant"):
            assert results.one(subject=subject, set="acoustic", part="", metric=metric) is not None
    assert all(row.section == "encoding" and row.sd is None for row in rows)
    # The values are the maps' means; a mean row is the mean of the subjects' rows.
    first = encodings[0]
    assert results.value(subject="sub-001", set="caption", part="belt", metric="mean_r") == pytest.approx(
        first.r["caption"][first.regions == "belt"].mean())
    assert results.value(subject="sub-001", set="acoustic", part="", metric="mean_r_normalised") == pytest.approx(
        np.nanmean(first.normalised["acoustic"]))
    subject_rows_ = [row for row in rows if row.subject is not None]
    means = [row for row in rows if row.subject is None]
    assert len(means) == len(subject_rows_) / 2
    for mean in means:
        values = [row.value for row in subject_rows_ if row.key.replace(f"{row.subject}/", "", 1) == mean.key]
        assert len(values) == 2 and mean.value == pytest.approx(np.mean(values))
    flat = results.flat()
    assert flat["encoding/sub-002/acoustic+caption/shared/other/mean"] == pytest.approx(
        encodings[1].parts["acoustic", "caption"]["shared"][11:].mean())
    assert "encoding/acoustic_minus_caption/a1/mean_r" in flat and not any(k.endswith("_sd") for k in flat)

    drawn = []
    monkeypatch.setattr(plots, "plot_map", lambda image, background, path, title: drawn.append((image, path)))
    write_encoding(tmp_path, encodings, rows, compose("evaluate", ["run=x"]).encoding)
    # Maps: the computed values on the mask's grid, 0 outside; the figures show the written maps.
    for enc in encodings:
        folder = tmp_path / enc.subject
        for name, values in [("acoustic_r", enc.r["acoustic"]), ("caption_r_normalised", enc.normalised["caption"]),
                             ("acoustic_minus_caption_r", enc.differences["acoustic", "caption"]),
                             ("acoustic+caption_unique_caption", enc.parts["acoustic", "caption"]["unique_caption"]),
                             ("noise_ceiling_ev", enc.ev)]:
            image = nib.load(str(folder / f"{name}.nii.gz"))
            np.testing.assert_allclose(image.affine, enc.affine)
            volume = np.asarray(image.dataobj)
            np.testing.assert_allclose(volume[enc.mask], np.nan_to_num(values), rtol=1e-6)
            assert (volume[~enc.mask] == 0).all()
        significant = np.asarray(nib.load(str(folder / "caption_significant.nii.gz")).dataobj)
        np.testing.assert_array_equal(significant[enc.mask], enc.significant["caption"])
    assert sorted(p.name for _, p in drawn if p.parent.name == "sub-001") == sorted(
        f"{n}.png" for n in ("acoustic_r", "caption_r", "acoustic_minus_caption_r", "acoustic+caption_unique_acoustic",
                             "acoustic+caption_unique_caption", "acoustic+caption_shared"))
    # The Markdown tables show the rows' values.
    summary = (tmp_path / "summary.md").read_text()
    for enc in encodings:
        def value(**fields) -> float:
            return results.value(subject=enc.subject, **fields)
        for region in regions:
            assert (f"| {region} | {int((enc.regions == region).sum())} | "
                    f"{value(set='noise_ceiling', part=region, metric='mean_ev'):.3f} | "
                    f"{value(set='acoustic', part=region, metric='mean_r'):.3f} | "
                    f"{value(set='caption', part=region, metric='mean_r'):.3f} |") in summary
            assert f"| {region} | " + " | ".join(
                f"{value(set='acoustic+caption', choice=c, part=region, metric='mean'):.4f}"
                for c in ("unique_acoustic", "unique_caption", "shared")) + " |" in summary
        assert (f"| all | 15 |  | {value(set='acoustic', part='', metric='mean_r'):.3f} "
                f"({value(set='acoustic', metric='fraction_significant'):.0%} significant) |") in summary
    assert summary.count("Regions: a test atlas.") == 2 and "Maps drawn over the a flat image." in summary


def test_encoding_needs_known_spaces(tuned_run, tmp_path):
    from b2m.core.errors import B2MError

    cfg = compose("evaluate", [f"run={tuned_run}", f"out_dir={tmp_path}", "genre=false", "logo=false",
                                   "report.enabled=false", "encoding.enabled=true", "encoding.spaces=[nope]"])
    with pytest.raises(B2MError, match="encoding.spaces: no target config 'nope'"):
        evaluate(cfg)


def test_banded_ridge_matches_himalaya_and_partitions_variance():
    from himalaya.ridge import BandedRidgeCV
    from sklearn.model_selection import KFold

    from b2m.evaluation.partition import banded_ridge, partition, r2_columns

    rng = np.random.default_rng(0)
    n, pa, pb, v = 500, 8, 40, 30
    xa, xb = rng.standard_normal((n, pa)), rng.standard_normal((n, pb))
    # Voxels 0-9 follow band a, 10-19 band b, 20-29 both; band b is wide and mostly noise features.
    wa, wb = rng.standard_normal((pa, v)), rng.standard_normal((pb, v)) * (rng.random((pb, 1)) < 0.2)
    wa[:, 10:20] = 0
    wb[:, :10] = 0
    y = xa @ wa + xb @ wb + 3.0 * rng.standard_normal((n, v))
    train, test = slice(0, 400), slice(400, None)
    alphas = list(np.logspace(-1, 4, 11))
    ours = banded_ridge([xa[train], xb[train]], y[train], {"test": [xa[test], xb[test]]}, alphas, 5,
                        list(np.logspace(-2, 2, 9)))["test"]
    theirs = BandedRidgeCV(groups=np.array([0] * pa + [1] * pb), cv=KFold(5), random_state=0,
                           solver_params=dict(n_iter=50, alphas=np.array(alphas), progress_bar=False)).fit(
        np.hstack([xa, xb])[train], y[train]).predict(np.hstack([xa, xb])[test])
    r2_ours, r2_theirs = r2_columns(ours, y[test]), r2_columns(np.asarray(theirs), y[test])
    assert abs(r2_ours.mean() - r2_theirs.mean()) < 0.02 and np.abs(r2_ours - r2_theirs).max() < 0.1
    # Partitioning with single-band fits: band a's unique variance lives in voxels 0-9, b's in 10-19.
    single = {k: banded_ridge([x[train], x[train][:, :0]], y[train], {"t": [x[test], x[test][:, :0]]}, alphas, 5,
                              [1.0])["t"] for k, x in (("a", xa), ("b", xb))}
    parts = partition(r2_columns(single["a"], y[test]), r2_columns(single["b"], y[test]), r2_ours)
    assert parts["unique_a"][:10].mean() > 0.2 > parts["unique_b"][:10].mean()
    assert parts["unique_b"][10:20].mean() > 0.1 > parts["unique_a"][10:20].mean()
    np.testing.assert_allclose(parts["unique_a"] + parts["shared"], r2_columns(single["a"], y[test]), atol=1e-9)
