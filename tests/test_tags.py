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
