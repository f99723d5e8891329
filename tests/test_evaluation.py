"""evaluate.py's job: bootstrap intervals, reconstructions, genre agreement, leave-one-genre-out, bad input."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from omegaconf import OmegaConf
from sklearn.metrics import accuracy_score, confusion_matrix, top_k_accuracy_score

from b2m.core.config import compose
from b2m.core.clips import GENRES
from b2m.core.errors import B2MError
from b2m.core.runs import read_predictions
from b2m.evaluation.bootstrap import bootstrap_metrics, confidence_interval, resample_counts
from b2m.jobs.evaluate import evaluate
from b2m.evaluation.genre import genre_scores
from b2m.core.metrics import Standardiser, decoding_metrics, identification_against

REPO = Path(__file__).resolve().parent.parent
# Zero mean, unit sd: the standardised scores are the raw ones.
IDENTITY = Standardiser(np.zeros((1, 10)), np.ones((1, 10)))


@pytest.fixture
def data():
    rng = np.random.default_rng(1)
    true = rng.normal(size=(25, 1, 10))
    pred = 0.7 * true + rng.normal(size=(25, 1, 10))
    return pred, true


def reference_sample(pred, true, idx):
    """Metrics of the explicit bootstrap sample `idx`, in plain numpy: competitors are the distinct
    other clips drawn; top-k ranks rescaled to the full set's N - 1 competitors."""
    n = len(pred)
    p, t = pred.reshape(n, -1), true.reshape(n, -1)
    c = np.corrcoef(p, t)[:n, n:]
    distinct = sorted(set(idx))
    id_acc, top1, top5 = [], [], []
    for i in idx:
        others = [j for j in distinct if j != i]
        id_acc.append(np.mean([c[i, i] > c[i, j] for j in others]))
        rank = sum(c[i, j] > c[i, i] for j in others) * (n - 1) / len(others)
        top1.append(rank < 1)
        top5.append(rank < 5)
    ps, ts = p[idx], t[idx]
    pearson = np.mean([np.corrcoef(ps[:, d], ts[:, d])[0, 1] for d in range(p.shape[1])])
    cosine = np.mean([a @ b / np.linalg.norm(a) / np.linalg.norm(b) for a, b in zip(ps, ts)])
    return {"id_acc": np.mean(id_acc), "top1": np.mean(top1), "top5": np.mean(top5), "pearson": pearson,
            "cosine": cosine}


def test_bootstrap_recomputes_metrics_on_resampled_clips(data):
    pred, true = data
    counts = resample_counts(len(pred), 5, seed=3)
    assert counts.shape == (5, 25) and (counts.sum(axis=1) == 25).all()
    boot = bootstrap_metrics(pred, true, counts)
    for b, row in enumerate(counts):
        idx = np.repeat(np.arange(25), row)
        ref = reference_sample(pred, true, idx)
        for name, value in ref.items():
            assert boot[name][b] == pytest.approx(value), name
    # Drawing every clip once is the full set: the metrics of metrics.py.
    full = bootstrap_metrics(pred, true, np.ones((1, 25), dtype=int))
    for name, value in decoding_metrics(pred, true, IDENTITY).items():
        if not name.endswith("_raw"):
            assert full[name][0] == pytest.approx(value), name


def test_bootstrap_is_seeded_and_its_interval_brackets_the_estimate(data):
    pred, true = data
    assert (resample_counts(25, 50, 7) == resample_counts(25, 50, 7)).all()
    assert not (resample_counts(25, 50, 7) == resample_counts(25, 50, 8)).all()
    boot = bootstrap_metrics(pred, true, resample_counts(25, 500, 0))
    low, high = confidence_interval(boot["id_acc"], 0.95)
    assert low < decoding_metrics(pred, true, IDENTITY)["id_acc"] < high
    assert (low, high) == pytest.approx(tuple(np.percentile(boot["id_acc"], [2.5, 97.5])))
    wide = confidence_interval(boot["id_acc"], 0.99)
    assert wide[0] <= low and wide[1] >= high


def test_identification_against_a_larger_candidate_set(data):
    pred, true = data
    held = np.array([3, 7, 11])
    c = np.corrcoef(pred.reshape(25, -1)[held], true.reshape(25, -1))[:3, 3:]
    ref = np.mean([np.mean([c[q, held[q]] > c[q, j] for j in range(25) if j != held[q]]) for q in range(3)])
    assert identification_against(pred[held], true, held) == pytest.approx(ref)
    # Among themselves it is the ordinary identification accuracy.
    assert identification_against(pred, true, np.arange(25)) == pytest.approx(decoding_metrics(pred, true, IDENTITY)["id_acc"])


def test_genre_scores_match_sklearn():
    rng = np.random.default_rng(0)
    genres = [GENRES[i] for i in rng.integers(0, 10, size=40)]
    proba = rng.dirichlet(np.ones(10), size=40)
    truth = [GENRES.index(g) for g in genres]
    scores = genre_scores(proba, genres, reference=rng.dirichlet(np.ones(10), size=40))
    assert scores["acc"] == pytest.approx(accuracy_score(truth, proba.argmax(1)))
    assert scores["top3"] == pytest.approx(top_k_accuracy_score(truth, proba, k=3, labels=range(10)))
    assert (scores["confusion"] == confusion_matrix(truth, proba.argmax(1), labels=range(10))).all()
    for g in set(genres):
        mine = [i for i, x in enumerate(genres) if x == g]
        assert scores[f"acc/{g}"] == pytest.approx(np.mean(proba[mine].argmax(1) == GENRES.index(g)))


def eval_cfg(run: Path, out: Path, *extra: str):
    return compose("evaluate", [f"run={run}", f"out_dir={out}", "n_boot=200", *extra])


def test_evaluation_of_a_run(tuned_run, tmp_path):
    metrics = evaluate(eval_cfg(tuned_run, tmp_path / "ev", "report.enabled=false"))
    trained = json.loads((tuned_run / "metrics.json").read_text())
    assert metrics["test/id_acc"] == trained["test/id_acc"]
    on_disk = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert on_disk["test/id_acc"] == metrics["test/id_acc"]
    for prefix in ("test", "baseline/mean_train", "baseline/shuffled"):
        for m in ("id_acc", "top1", "top5", "pearson", "cosine"):
            key = f"{prefix}/{m}"
            assert metrics[f"{key}_ci_low"] <= metrics[f"{key}_ci_high"]
            assert metrics[f"sub-001/{key}_ci_low"] <= metrics[f"sub-001/{key}_ci_high"]
    # The tuned voxels carry the stimulus: decoding beats both baselines beyond their intervals.
    assert metrics["test/id_acc_ci_low"] > metrics["baseline/shuffled/id_acc_ci_high"]
    assert metrics["test/id_acc_ci_low"] > 0.5
    # Genre agreement: rates, per-genre rows, the classifier's ceiling on the true embeddings.
    for name in ("true", "pred"):
        assert 0 <= metrics[f"genre/{name}/acc_ci_low"] <= metrics[f"genre/{name}/acc"] <= 1
        assert 0 <= metrics[f"genre/{name}/top3"] <= 1
        assert {f"genre/{name}/acc/{g}" for g in GENRES} <= set(metrics)
    assert 0 <= metrics["genre/pred/agreement"] <= 1
    # Leave one genre out: the test runs hold two clips per genre, so both rows exist for all ten.
    for g in GENRES:
        assert 0 <= metrics[f"logo/{g}/within"] <= 1 and 0 <= metrics[f"logo/{g}/all"] <= 1
    assert "ridge" in metrics["logo/decoder"]
    for name in ("identification.png", "genre_accuracy.png", "genre_per_genre.png", "confusion_pred.png",
                 "logo.png"):
        assert (tmp_path / "ev" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    summary = (tmp_path / "ev" / "summary.md").read_text()
    assert f"| test | {metrics['test/id_acc']:.3f} [{metrics['test/id_acc_ci_low']:.3f}" in summary
    assert "| rock |" in summary and "![identification.png](identification.png)" in summary


def write_recon(run: Path, folder: Path, kind: str, stimulus: bool) -> Path:
    """Hand-made reconstructions of every subject's test clips in the documented layouts: the stimulus
    track itself (`stimulus=True`, a perfect reconstruction) or noise."""
    stimuli = Path(OmegaConf.load(run / "config.yaml").data.root) / "stimuli" / "genres"
    rng = np.random.default_rng(0)
    records = []
    for file in sorted((run / "predictions").glob("*.npz")):
        predictions, clips = read_predictions(file), {}
        subject = predictions.subject
        for n, clip_id in enumerate(predictions.clip_ids):
            track = clip_id.rsplit("_", 1)[0]
            ranks = []
            for k in range(2):
                dest = folder / subject / f"{clip_id}_{k}.wav"
                dest.parent.mkdir(parents=True, exist_ok=True)
                if stimulus:
                    shutil.copyfile(stimuli / track.split(".")[0] / f"{track}.wav", dest)
                else:
                    sf.write(dest, (0.1 * rng.normal(size=64000)).astype(np.float32), 32000)
                digest = hashlib.sha256(dest.read_bytes()).hexdigest()
                ranks.append({"rank": k + 1, "path": str(dest), "score": 0.0, "sha256": digest,
                              "file": dest.relative_to(folder).as_posix()})
                records.append({"subject": subject, "clip_id": clip_id, "k": k, "seed": k, "config_hash": "h",
                                "duration_s": 2.0, "path": dest.relative_to(folder).as_posix(), "sha256": digest,
                                "input_hash": predictions.input_hash(n)})
            clips[clip_id] = {"input_hash": predictions.input_hash(n), "ranks": ranks}
        if kind == "retrieval":
            (folder / f"retrieval_{subject}.json").write_text(json.dumps(
                {"subject": subject, "k": 2, "exclude_stimulus": False, "space": "acoustic", "clips": clips}))
    if kind != "retrieval":
        (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def test_reconstructions_are_scored_against_the_stimuli(tuned_run, tmp_path):
    retrieval = write_recon(tuned_run, tmp_path / "retr", "retrieval", stimulus=True)
    generated = write_recon(tuned_run, tmp_path / "gen", "generated", stimulus=False)
    metrics = evaluate(eval_cfg(tuned_run, tmp_path / "ev", f"retrieval={retrieval}", f"generated={generated}",
                                "report.enabled=false", "logo=false"))
    # Retrieving the stimulus track itself identifies nearly every clip on the raw vectors; standardised,
    # the small dimensions (in which the whole track differs from its 15 s excerpt) count as much as the
    # large ones, and it still identifies most. Noise does not.
    assert metrics["retrieval/acoustic/id_acc_raw"] > 0.9
    assert metrics["retrieval/acoustic/id_acc"] > 0.7
    assert metrics["retrieval/acoustic/id_acc_ci_low"] > metrics["retrieval/acoustic/shuffled/id_acc_ci_high"]
    assert metrics["generated/acoustic/id_acc_ci_low"] < 0.5 < metrics["generated/acoustic/id_acc_ci_high"] + 0.2
    assert metrics["generated/acoustic/id_acc"] < metrics["retrieval/acoustic/id_acc"]
    for kind in ("retrieval", "generated"):
        assert 0 <= metrics[f"genre/{kind}/acoustic/acc"] <= 1
        assert (tmp_path / "ev" / f"confusion_{kind}_acoustic.png").exists()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "evaluate.py"), *args], capture_output=True, text=True,
                          cwd=REPO, timeout=600)


def test_bad_input_is_a_one_line_error_naming_the_file(tuned_run, tmp_path):
    res = run_cli(f"run={tmp_path / 'missing'}")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert str(tmp_path / "missing") in res.stderr and "not found" in res.stderr

    bad_run = tmp_path / "bad_run"
    shutil.copytree(tuned_run, bad_run)
    with np.load(bad_run / "predictions" / "sub-001.npz", allow_pickle=False) as f:
        arrays = dict(f)
    np.savez(bad_run / "predictions" / "sub-001.npz", **{**arrays, "pred": arrays["pred"][:, :, :-1]})
    with pytest.raises(B2MError, match=r"sub-001\.npz: pred .* do not match"):
        evaluate(eval_cfg(bad_run, tmp_path / "ev"))

    retrieval = write_recon(tuned_run, tmp_path / "retr", "retrieval", stimulus=False)
    victim = sorted((retrieval / "sub-001").glob("*.wav"))[0]
    victim.unlink()
    with pytest.raises(B2MError, match=rf"{victim}: listed in {retrieval} but not found"):
        evaluate(eval_cfg(tuned_run, tmp_path / "ev", f"retrieval={retrieval}"))

    generated = write_recon(tuned_run, tmp_path / "gen", "generated", stimulus=False)
    corrupt = sorted((generated / "sub-001").glob("*.wav"))[1]
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(B2MError, match=rf"^{corrupt}: changed since it was written"):
        evaluate(eval_cfg(tuned_run, tmp_path / "ev", f"generated={generated}"))
    # A file that was already damaged when it was written (its sha256 is the manifest's) is unreadable audio.
    records = [json.loads(line) for line in (generated / "manifest.jsonl").read_text().splitlines()]
    for rec in records:
        rec["sha256"] = hashlib.sha256((generated / rec["path"]).read_bytes()).hexdigest()
    (generated / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(B2MError, match=rf"^{corrupt}: unreadable audio [^\n]*$"):
        evaluate(eval_cfg(tuned_run, tmp_path / "ev", f"generated={generated}", "logo=false", "genre=false",
                          "report.enabled=false"))

    (generated / "manifest.jsonl").write_text('{"subject": "sub-001"}\n')
    with pytest.raises(B2MError, match=r"manifest\.jsonl: line 1: not a generation record"):
        evaluate(eval_cfg(tuned_run, tmp_path / "ev", f"generated={generated}"))


def test_subjects_share_the_clip_draws_and_are_averaged(data):
    """Two subjects with the same clips in different orders: per-subject rows are the plain metrics, the
    across-subject interval comes from resamples that draw the same clips for both subjects."""
    from b2m.evaluation.decoding import ScoredSet, score_sets

    pred, true = data
    ids = [f"clip{i:02d}" for i in range(25)]
    order = np.random.default_rng(5).permutation(25)
    pred2 = true + np.random.default_rng(6).normal(size=true.shape)
    sets = {"sub-001": {"test": ScoredSet(pred[None], true, ids, IDENTITY)},
            "sub-002": {"test": ScoredSet(pred2[order][None], true[order], [ids[i] for i in order], IDENTITY)}}
    out = score_sets(sets, n_boot=300, seed=4, level=0.9)
    one, two = decoding_metrics(pred, true, IDENTITY), decoding_metrics(pred2, true, IDENTITY)
    assert out["sub-001/test/id_acc"] == pytest.approx(one["id_acc"])
    assert out["sub-002/test/id_acc"] == pytest.approx(two["id_acc"])
    assert out["test/id_acc"] == pytest.approx((one["id_acc"] + two["id_acc"]) / 2)
    assert out["test/id_acc_sd"] == pytest.approx(np.std([one["id_acc"], two["id_acc"]], ddof=1))
    counts = resample_counts(25, 300, seed=4)  # over the sorted clip ids, which are ids here
    mean = (bootstrap_metrics(pred, true, counts)["id_acc"] + bootstrap_metrics(pred2, true, counts)["id_acc"]) / 2
    assert (out["test/id_acc_ci_low"], out["test/id_acc_ci_high"]) == pytest.approx(confidence_interval(mean, 0.9))
