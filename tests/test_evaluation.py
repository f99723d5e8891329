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
from b2m.jobs.evaluate import evaluate
from b2m.evaluation.results import RANDOM_GENERATOR, read_results
from b2m.evaluation.tables import terminal_lines
from b2m.evaluation.genre import genre_scores
from b2m.core.metrics import METRIC_KEYS

REPO = Path(__file__).resolve().parent.parent
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
        assert scores["per_genre"][g] == pytest.approx(np.mean(proba[mine].argmax(1) == GENRES.index(g)))


def eval_cfg(run: Path, out: Path, *extra: str):
    return compose("evaluate", [f"run={run}", f"out_dir={out}", "n_boot=200", *extra])


def test_evaluation_of_a_run(tuned_run, tmp_path):
    results = evaluate(eval_cfg(tuned_run, tmp_path / "ev", "report.enabled=false"))
    metrics = results.flat()
    trained = json.loads((tuned_run / "metrics.json").read_text())
    assert metrics["test/id_acc"] == trained["test/id_acc"]
    on_disk = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert on_disk["test/id_acc"] == metrics["test/id_acc"]
    for prefix in ("test", "baseline/mean_train", "baseline/shuffled"):
        for m in ("id_acc", "top1", "top5", "pearson", "cosine"):
            key = f"{prefix}/{m}"
            assert metrics[f"{key}_ci_low"] <= metrics[f"{key}_ci_high"]
            assert metrics[f"sub-001/{key}_ci_low"] <= metrics[f"sub-001/{key}_ci_high"]
    # metrics.json keeps the flat format it has always had: the decoding keys, written out by hand here.
    expected = {"n_test_clips", "n_boot", "ci_level"}
    for prefix in ("test", "baseline/mean_train", "baseline/shuffled"):
        for m in METRIC_KEYS:
            for key in (f"sub-001/{prefix}/{m}", f"{prefix}/{m}"):
                expected |= {key, f"{key}_ci_low", f"{key}_ci_high"}
            expected.add(f"{prefix}/{m}_sd")
    assert {k for k in metrics if "genre/" not in k and "logo/" not in k} == expected
    assert {f"sub-001/genre/pred/acc/{g}" for g in GENRES} | {"genre/pred/acc_sd", "sub-001/logo/rock/within",
                                                              "logo/rock/all_sd", "genre/chance"} <= set(metrics)
    # Every interval contains its point estimate (the bootstrap keeps the candidate set whole).
    bounded = [r for r in results if r.interval is not None and r.value is not None and None not in r.interval]
    assert len(bounded) >= 3 * len(METRIC_KEYS) * 2
    for row in bounded:
        assert row.interval[0] - 1e-12 <= row.value <= row.interval[1] + 1e-12, row.key
    # results.json holds the same rows; metrics.json is their flat rendering.
    assert read_results(tmp_path / "ev" / "results.json").flat() == on_disk
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
                                "input_hash": predictions.input_hash(n), "random_weights": not stimulus,
                                "predictions": str(file)})
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
                                "report.enabled=false", "logo=false")).flat()
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
    # A trained tagger hears the stimulus's own track in the retrieved audio, and not in the noise.
    r = {name: metrics[f"tags/{name}/taggram_r"] for name in ("retrieval", "retrieval/shuffled", "generated",
                                                            "stimulus_track")}
    assert r["retrieval"] > 0.9 and metrics["tags/retrieval/taggram_r_ci_low"] > metrics[
        "tags/retrieval/shuffled/taggram_r_ci_high"]
    assert r["generated"] < r["retrieval"] and 0 <= metrics["tags/retrieval/top5_overlap"] <= 1
    assert metrics["tags/stimulus_track/genre_tag"] >= metrics["tags/generated/genre_tag"]
    # Noise from a random-weight generator is said to be that wherever it is shown.
    results = read_results(tmp_path / "ev" / "results.json")
    generated = [r for r in results if r.set == "generated"]
    assert generated and all(r.caveat == RANDOM_GENERATOR for r in generated)
    assert not any(r.caveat for r in results if r.set == "retrieval")
    line = next(x for x in terminal_lines(results) if x.startswith("generated/acoustic/id_acc"))
    assert RANDOM_GENERATOR in line
    summary = (tmp_path / "ev" / "summary.md").read_text()
    assert "| generated/acoustic † |" in summary and summary.count(f"† {RANDOM_GENERATOR}") == 3  # decoding, genre, tags


def test_generation_from_a_sibling_run_is_checked_against_its_own_predictions(tuned_run, tmp_path):
    """Generation conditions on predictions in the generator's space, so its audio comes from another run
    of the same subjects and clips (as in the demo): accepted, with its inputs checked against that run."""
    sibling = tmp_path / "sibling"
    shutil.copytree(tuned_run, sibling)
    file = sibling / "predictions" / "sub-001.npz"
    with np.load(file, allow_pickle=False) as f:
        arrays = dict(f)
    np.savez(file, **{**arrays, "pred": arrays["pred"] + 0.5})
    generated = write_recon(sibling, tmp_path / "gen", "generated", stimulus=False)
    cfg = eval_cfg(tuned_run, tmp_path / "ev", f"generated={generated}", "report.enabled=false", "logo=false",
                   "genre=false")
    results = evaluate(cfg)
    assert results.value(section="reconstruction", set="generated", space="acoustic", baseline="", metric="id_acc",
                         subject=None) is not None
    np.savez(file, **arrays)  # the sibling's predictions changed after generation
    with pytest.raises(B2MError, match=rf"made from other predictions than {file}'s"):
        evaluate(cfg)
    np.savez(file, **{**arrays, "clip_ids": arrays["clip_ids"][::-1], "pred": arrays["pred"][::-1],
                      "true": arrays["true"][::-1]})
    with pytest.raises(B2MError, match=rf"made from {file}, whose test clips of sub-001 are not run"):
        evaluate(cfg)
    file.unlink()
    with pytest.raises(B2MError, match=str(file)):
        evaluate(cfg)


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
