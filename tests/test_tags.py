"""Tag agreement of reconstructions with the stimuli (b2m.evaluation.tags), by a trained tagger."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr

from b2m.evaluation.tags import GENRE_TAGS, agreement, taggrams


def test_agreement_per_clip_against_plain_formulas():
    rng = np.random.default_rng(0)
    stim = rng.uniform(size=(7, 50))
    rec = 0.5 * stim + 0.5 * rng.uniform(size=(7, 50))
    genre_idx = np.array([3, 10, 20, 40])
    out = agreement(rec, stim, 5, genre_idx)
    for i in range(7):
        assert out["taggram_r"][i] == pytest.approx(pearsonr(rec[i], stim[i])[0])
        mine, theirs = set(np.argsort(-rec[i])[:5]), set(np.argsort(-stim[i])[:5])
        assert out["top5_overlap"][i] == pytest.approx(len(mine & theirs) / 5)
        assert out["genre_tag"][i] == float(genre_idx[rec[i, genre_idx].argmax()] == genre_idx[stim[i, genre_idx].argmax()])
    # A reconstruction that is the stimulus agrees fully.
    same = agreement(stim, stim, 5, genre_idx)
    assert np.allclose(same["taggram_r"], 1) and (same["top5_overlap"] == 1).all() and (same["genre_tag"] == 1).all()


def test_taggrams_average_the_windows():
    emb = np.arange(2 * 3 * 50, dtype=np.float32).reshape(2, 3, 50)
    assert np.allclose(taggrams(emb), emb.mean(axis=1))


def test_genre_tags_are_tags_of_their_models():
    from b2m.targets.musicnn import TAGS

    for weights, model in (("mtt", "MTT_musicnn"), ("msd", "MSD_musicnn")):
        assert set(GENRE_TAGS[weights]) <= set(TAGS[model]), weights


def test_without_the_wheel_evaluate_stops_before_writing(tuned_run, tmp_path, monkeypatch):
    import importlib.util

    from b2m.core.config import compose
    from b2m.core.errors import B2MError
    from b2m.jobs.evaluate import evaluate
    from test_evaluation import write_recon

    retrieval = write_recon(tuned_run, tmp_path / "retr", "retrieval", stimulus=True)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "musicnn" else real(name, *a))
    out = tmp_path / "ev"
    with pytest.raises(B2MError, match="pip install --no-deps musicnn==0.1.0") as err:
        evaluate(compose("evaluate", [f"run={tuned_run}", f"retrieval={retrieval}", f"out_dir={out}", "n_boot=20"]))
    assert "\n" not in str(err.value) and not out.exists() and not (tmp_path / ".ev.partial").exists()
