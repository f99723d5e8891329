"""Leave-one-genre-out decoding: does the decoder generalise to a genre it never saw?

For each genre g, a ridge decoder (the run's own when it is a ridge run; otherwise the
`b2m/conf/decoder/ridge.yaml` defaults, noted as `logo/decoder` in the output) is refit
on the training windows of every other genre and tested on g's test clips:
`within` is the identification accuracy among g's test clips only (chance 0.5; needs
two of them), `all` identifies each of g's clips among all test clips.
"""

from __future__ import annotations

import numpy as np
from omegaconf import DictConfig, OmegaConf

from b2m.core.clips import GENRES
from b2m.core.config import group_config
from b2m.core.log import progress
from b2m.core.metrics import Standardiser, identification_against
from b2m.core.runs import Run
from b2m.data.subjects import SubjectSplits, load_subject
from b2m.decoders import build_decoder
from b2m.evaluation.results import Result, subject_means
from b2m.targets import EmbeddingSpace
from b2m.targets.dataset import clip_targets


def leave_one_genre_out(splits: SubjectSplits, ridge: DictConfig) -> dict[str, dict[str, float | None]]:
    """`{genre: {"within": ..., "all": ...}}` for every genre with test clips (`within` None if it has one),
    refitting the ridge decoder config `ridge` without each genre; scored on dimensions standardised
    with all training clips' statistics."""
    x = np.concatenate([splits.train.x, splits.val.x])
    y = np.concatenate([splits.train.y, splits.val.y])
    scale = Standardiser.fit(y)
    train_genres = np.array([c.genre for c in splits.train.clips + splits.val.clips])
    test, test_genres = splits.test, np.array([c.genre for c in splits.test.clips])
    rows: dict[str, dict[str, float | None]] = {}
    for genre in GENRES:
        held = np.flatnonzero(test_genres == genre)
        keep = train_genres != genre
        if held.size == 0 or not keep.any():
            continue
        cfg = OmegaConf.merge(ridge, {"n_folds": min(int(ridge.n_folds), int(keep.sum()))})
        decoder = build_decoder(cfg, [x.shape[2]], x.shape[1], y.shape[1:])
        decoder.fit_closed_form(0, x[keep], y[keep])
        pred = scale(decoder.predict_windows(test.x[held], 0))
        within = identification_against(pred, scale(test.y[held]), np.arange(len(held))) if len(held) > 1 else None
        rows[genre] = {"within": within, "all": identification_against(pred, scale(test.y), held)}
    return rows


def logo_section(run: Run, space: EmbeddingSpace) -> tuple[list[Result], str]:
    """Rows `within` and `all` of each held-out genre (section `logo`, the genre as set) per subject and
    mean, and the `decoder` row saying which ridge was refit (also returned as a note): the run's ridge
    settings when the run is a ridge run, else `b2m/conf/decoder/ridge.yaml`. `space`: the run's target."""
    ridge_cfg = group_config("decoder", "ridge")
    decoder: DictConfig = run.cfg.get("decoder", {})
    if decoder.get("_target_") == ridge_cfg._target_:
        ridge, note = decoder, "leave-one-genre-out: the run's ridge decoder refit without each genre"
    else:
        name = str(decoder.get("_target_", "unknown")).rsplit(".", 1)[-1]
        ridge = ridge_cfg
        note = (f"leave-one-genre-out: the run's decoder is {name!r}, not ridge; a ridge decoder "
                f"(b2m/conf/decoder/ridge.yaml) was refit instead, not the run's decoder")
    rows = []
    for subject in progress(run.subjects, "leave-one-genre-out refits", unit="subjects"):
        splits = load_subject(run.cfg.data, subject, lambda clips: clip_targets(run.cfg.data, space, clips),
                              int(run.cfg.get("seed", 0)))
        for genre, values in leave_one_genre_out(splits, ridge).items():
            rows += [Result("logo", genre, metric, value, subject) for metric, value in values.items()]
    return subject_means(rows) + [Result("logo", "", "decoder", note)], note
