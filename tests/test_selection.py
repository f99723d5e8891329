"""Brain-guided selection: the encoding-model match, its files, and what evaluate makes of them."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from b2m.core.config import compose
from b2m.core.errors import B2MError
from b2m.core.runs import load_run
from b2m.evaluation.decoding import Difference, ScoredSet, score_sets
from b2m.evaluation.results import Results
from b2m.core.metrics import Standardiser
from b2m.jobs.evaluate import evaluate
from b2m.jobs.retrieve import retrieve
from b2m.core.io import file_digest
from b2m.reconstruction import Manifest, selection
from b2m.reconstruction.selection import read_selection, select_brain, weighted_correlation
from test_cli import run as run_cli


def test_weighted_correlation_matches_numpy():
    rng = np.random.default_rng(0)
    pred, measured, weight = rng.normal(size=(5, 40)), rng.normal(size=40), rng.uniform(0, 2, size=40)
    weight[:10] = 0.0
    got = weighted_correlation(pred, measured, weight)
    for row, value in zip(pred, got):
        cov = np.cov(np.stack([row, measured]), aweights=weight)
        assert value == pytest.approx(cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1]), abs=1e-12)
    # Uniform weights: the plain Pearson r; zero-weight voxels do not count at all.
    plain = weighted_correlation(pred, measured, np.ones(40))
    assert plain == pytest.approx([np.corrcoef(r, measured)[0, 1] for r in pred], abs=1e-12)
    changed = pred.copy()
    changed[:, :10] = 1e6
    assert weighted_correlation(changed, measured, weight) == pytest.approx(got, abs=1e-9)
    assert weighted_correlation(np.zeros((1, 40)), measured, weight)[0] == 0.0  # a constant prediction


def _stimulus(run_dir: Path, track: str) -> Path:
    root = Path(OmegaConf.load(run_dir / "config.yaml").data.root)
    return root / "stimuli" / "genres" / track.split(".")[0] / f"{track}.wav"


def test_selection_finds_the_heard_track_among_others(tuned_run, tmp_path, monkeypatch):
    """Candidates: the clip's own stimulus track and three other test tracks, in a shuffled order; the
    encoding model (fitted on training clips only) must pick the heard one far above chance (0.25)."""
    requested = []
    real = selection.clip_targets
    monkeypatch.setattr(selection, "clip_targets",
                        lambda cfg, space, clips: requested.extend(clips) or real(cfg, space, clips))
    run = load_run(tuned_run)
    test_clips = run.test_clips("sub-001")
    tracks = sorted({c.track_name for c in test_clips})
    rng = np.random.default_rng(0)
    candidates, own = {}, {}
    for clip in test_clips:
        others = rng.choice([t for t in tracks if t != clip.track_name], size=3, replace=False).tolist()
        order = rng.permutation(4)
        names = [([clip.track_name] + others)[i] for i in order]
        files = []
        for n, name in enumerate(names):
            dest = tmp_path / "sub-001" / f"{clip.clip_id}_{n}.wav"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(_stimulus(tuned_run, name), dest)
            files.append(dest)
        candidates[clip.clip_id], own[clip.clip_id] = files, int(np.argmin(order))
    scfg = compose("retrieve", ["select=brain"]).select
    source = tmp_path / "manifest.jsonl"  # what the candidates came from
    source.write_text("{}\n")
    out = select_brain(run, {"sub-001": candidates}, scfg, tmp_path, {"sub-001": source})["sub-001"]

    ranks = [1 + int(np.sum(np.array(out["clips"][c]["scores"]) > out["clips"][c]["scores"][own[c]]))
             for c in candidates]
    # Chance: the heard track is selected 1 time in 4, with mean rank 2.5.
    assert np.mean(np.array(ranks) == 1) >= 0.5 and np.mean(ranks) <= 2.0, ranks
    # Only the training clips' stimuli were embedded for the model: a test clip's stimulus never is.
    assert requested and not {c.clip_id for c in requested} & {c.clip_id for c in test_clips}
    written = json.loads((tmp_path / "selection_sub-001.json").read_text())
    assert written == json.loads(json.dumps(out))
    for clip_id, entry in written["clips"].items():
        assert entry["selected"] == int(np.argmax(entry["scores"])) and entry["first"] == 0
        assert 0 <= entry["random"] < 4
        assert entry["candidates"] == [f.relative_to(tmp_path).as_posix() for f in candidates[clip_id]]
    assert written["manifest"] == {"file": "manifest.jsonl", "sha256": file_digest(source)}
    # Read back as one-file reconstruction sets, the selected file first.
    manifest = Manifest(tmp_path, files={"sub-001": candidates, "sub-002": {}},
                        sources={"sub-001": source, "sub-002": source},
                        source_digests={"sub-001": file_digest(source), "sub-002": file_digest(source)})
    sets = read_selection(manifest)
    assert set(sets) == {"brain", "first", "random"} and set(sets["brain"]) == {"sub-001"}
    some = next(iter(candidates))
    assert sets["brain"]["sub-001"][some] == [tmp_path / written["clips"][some]["candidates"][
        written["clips"][some]["selected"]]]
    assert sets["first"]["sub-001"][some] == [candidates[some][0]]
    # Stable random choice: the same seed, subject and clip give the same index.
    assert selection.random_choice(0, "sub-001", some, 4) == written["clips"][some]["random"]


def test_retrieve_with_brain_selection_then_evaluate(tuned_run, tmp_path):
    out = tmp_path / "retr"
    database = _stimulus(tuned_run, "blues.00000").parents[1]
    retrieve(compose("retrieve", [f"run={tuned_run}", f"database={database}", f"out_dir={out}", "k=4",
                                  "select=brain"]))
    manifest = json.loads((out / "retrieval_sub-001.json").read_text())
    chosen = json.loads((out / "selection_sub-001.json").read_text())
    for clip_id, clip in manifest["clips"].items():
        assert chosen["clips"][clip_id]["candidates"] == [h["file"] for h in clip["ranks"]]
    metrics = evaluate(compose("evaluate", [f"run={tuned_run}", f"retrieval={out}", f"out_dir={tmp_path / 'ev'}",
                                            "n_boot=50", "logo=false", "genre=false", "report.enabled=false",
                                            "tags.enabled=false"])).flat()
    for kind in ("brain", "first", "random"):
        key = f"retrieval/{kind}/acoustic/id_acc"
        assert metrics[f"{key}_ci_low"] <= metrics[key] <= metrics[f"{key}_ci_high"]
    diff = metrics["retrieval/brain_minus_first/acoustic/id_acc"]
    assert diff == pytest.approx(metrics["retrieval/brain/acoustic/id_acc"] - metrics["retrieval/first/acoustic/id_acc"])
    summary = (tmp_path / "ev" / "summary.md").read_text()
    row = next(line for line in summary.splitlines() if line.startswith("| retrieval/acoustic | "))
    assert "## Brain-guided selection" in summary and f"{metrics['retrieval/brain/acoustic/id_acc']:.3f}" in row
    assert "brain_minus" not in summary.split("## Brain-guided selection")[0]  # not among the decoding rows
    # The first candidate is plain retrieval's rank 1.
    assert metrics["retrieval/first/acoustic/top1"] == pytest.approx(
        _rank1(tuned_run, out, tmp_path / "ev1")["retrieval/acoustic/top1"])
    # A rerun without selection removes the selection files, which described the other reconstructions.
    retrieve(compose("retrieve", [f"run={tuned_run}", f"database={database}", f"out_dir={out}", "k=4"]))
    assert not (out / "selection_sub-001.json").exists()


def _rank1(tuned_run: Path, retrieval: Path, out: Path) -> dict:
    return evaluate(compose("evaluate", [f"run={tuned_run}", f"retrieval={retrieval}", f"out_dir={out}",
                                         "n_boot=50", "logo=false", "genre=false", "report.enabled=false",
                                         "max_draws=1", "tags.enabled=false"])).flat()


def test_paired_differences_share_the_bootstrap_draws():
    rng = np.random.default_rng(1)
    true = rng.normal(size=(12, 1, 6))
    scale = Standardiser(np.zeros((1, 6)), np.ones((1, 6)))
    good = ScoredSet((true + 0.5 * rng.normal(size=true.shape))[None], true, [f"c{i}" for i in range(12)], scale)
    noisy = ScoredSet((true + 3.0 * rng.normal(size=true.shape))[None], true, good.clip_ids, scale)
    a, b = replace(good, set="a"), replace(noisy, set="b")
    diff = Difference(replace(good, section="selection", set="a_minus_b"), "a", "b")
    out = Results(score_sets({"s1": [a, b], "s2": [a, replace(good, set="b")]}, 200, 0, 0.95, [diff])).flat()
    assert out["a_minus_b/id_acc"] == pytest.approx(np.mean([out["s1/a/id_acc"] - out["s1/b/id_acc"], 0.0]))
    assert out["a_minus_b/id_acc_ci_low"] <= out["a_minus_b/id_acc"] <= out["a_minus_b/id_acc_ci_high"]
    same = Results(score_sets({"s1": [a, replace(good, set="b")]}, 200, 0, 0.95, [diff])).flat()
    assert same["a_minus_b/id_acc"] == same["a_minus_b/id_acc_ci_low"] == same["a_minus_b/id_acc_ci_high"] == 0.0


@pytest.mark.parametrize("override, message", [
    ("select.spaces=[caption]", "selection.spaces: 'caption' embeds text"),
    ("select.spaces=[]", "selection.spaces: empty list"),
    ("select.spaces=[nope]", "selection.spaces: no target config 'nope'"),
    ("select.n_folds=1", "config: select.n_folds must be"),
    ("select.alphas=[0.0]", "config: select.alphas must be"),
])
def test_bad_selection_configs_are_refused_before_anything_is_written(tuned_run, tmp_path, override, message):
    out = tmp_path / "retr"
    database = _stimulus(tuned_run, "blues.00000").parents[1]
    res = run_cli("retrieve.py", f"run={tuned_run}", f"database={database}", f"out_dir={out}", "select=brain",
                  override)
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not out.exists()


def test_generate_with_selection_needs_the_run_folder(tuned_run, tmp_path):
    predictions = tmp_path / "predictions"
    shutil.copytree(tuned_run / "predictions", predictions)
    res = run_cli("generate.py", f"predictions={predictions}", f"out_dir={tmp_path / 'gen'}", "select=brain")
    assert res.returncode == 2 and "config.yaml" in res.stderr, res.stderr
    assert not (tmp_path / "gen").exists()


def test_a_damaged_selection_file_is_named(tuned_run, tmp_path):
    folder = tmp_path / "retr"
    folder.mkdir()
    (folder / "selection_sub-001.json").write_text(json.dumps({"clips": {"x": {"candidates": [], "selected": 0}}}))
    manifest = Manifest(folder, files={"sub-001": {"x": [folder / "x.wav"]}})
    with pytest.raises(B2MError, match="selection_sub-001.json: not a selection file"):
        read_selection(manifest)
