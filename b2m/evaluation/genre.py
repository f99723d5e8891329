"""Class agreement: a genre classifier trained on true embeddings, applied to decoded ones.

A logistic regression (on standardised, flattened `[L * D]` embeddings) learns the ten
GTZAN genres from the true embeddings of the training clips; applied to predictions or
to the embeddings of reconstructions, it says whether the decoded music has the right
genre (chance 1 / 10). Applied to the true test embeddings it gives the ceiling.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from b2m.core.clips import GENRES
from b2m.core.runs import Run
from b2m.evaluation.decoding import ScoredSet, proportion_ci
from b2m.evaluation.results import CHANCE, Result, subject_means
from b2m.targets import EmbeddingSpace
from b2m.targets.dataset import clip_targets

TOP_N = 3


def fit_genre_classifier(emb: np.ndarray, genres: list[str], seed: int) -> Pipeline:
    """Fit on embeddings `[N, L, D]` with genre labels `genres[n]` (names from GENRES)."""
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    return model.fit(np.asarray(emb).reshape(len(emb), -1), [GENRES.index(g) for g in genres])


def genre_probabilities(model: Pipeline, emb: np.ndarray) -> np.ndarray:
    """`[N, 10]` probabilities in GENRES order (0 for a genre absent from the training clips)."""
    proba = model.predict_proba(np.asarray(emb).reshape(len(emb), -1))
    out = np.zeros((len(emb), len(GENRES)))
    out[:, model.classes_] = proba
    return out


def genre_scores(proba: np.ndarray, genres: list[str], reference: np.ndarray | None = None) -> dict:
    """Agreement of classified embeddings `proba` `[N, 10]` with the true genres `genres[n]`.

    Returns `acc` (top-1 genre right), `top3` (true genre among the 3 most probable),
    `per_genre` (`{genre: accuracy on that genre's clips}`, without the genres that have no clips),
    `confusion` `[10, 10]` int (rows: true genre, columns: decoded) and, given the
    probabilities `reference` of the true embeddings, `agreement`: the decoded and the
    true embedding get the same top-1 genre.
    """
    truth = np.array([GENRES.index(g) for g in genres])
    decoded = proba.argmax(axis=1)
    top = np.argsort(-proba, axis=1, kind="stable")[:, :TOP_N]
    scores: dict = {"acc": float((decoded == truth).mean()),
                    f"top{TOP_N}": float((top == truth[:, None]).any(axis=1).mean())}
    scores["per_genre"] = {name: float((decoded[truth == g] == g).mean())
                           for g, name in enumerate(GENRES) if (truth == g).any()}
    if reference is not None:
        scores["agreement"] = float((decoded == reference.argmax(axis=1)).mean())
    confusion = np.zeros((len(GENRES), len(GENRES)), dtype=int)
    np.add.at(confusion, (truth, decoded), 1)
    scores["confusion"] = confusion
    return scores


@dataclass
class GenreResults:
    """The genre section: its result `rows`, the summed `confusions[set name]` `[10, 10]` (rows: true
    genre, columns: decoded) over subjects, and per subject the genre decoded from each prediction
    (`decoded[subject][clip_id]`)."""

    rows: list[Result]
    confusions: dict[str, np.ndarray]
    decoded: dict[str, dict[str, str]]


def genre_section(run: Run, own: EmbeddingSpace, sets: dict[str, list[ScoredSet]],
                  spaces: dict[str, EmbeddingSpace], n_boot: int, seed: int, level: float) -> GenreResults:
    """Genre class agreement of the predictions (in the run's space `own`) and of every reconstruction
    set in `sets` (baselines aside), each classified in its own space.

    Rows (section `genre`): `acc`, `top3`, `agreement` and `acc` per genre (`part`) for the sets `true`
    (the ceiling), `pred` and each reconstruction, per subject and mean (with the sd across subjects),
    the mean `acc` with its bootstrap interval over clips; and `chance`.
    """
    classifiers: dict[tuple, Pipeline] = {}

    def classifier(space: EmbeddingSpace, subject: str) -> Pipeline:
        train = run.training_clips(subject)
        key = (space.cache_key(), tuple(train))
        if key not in classifiers:
            emb = np.stack(list(clip_targets(run.cfg.data, space, train).values()))
            classifiers[key] = fit_genre_classifier(emb, [c.genre for c in train], seed)
        return classifiers[key]

    rows: list[Result] = []
    correct: dict[str, list] = {}
    out = GenreResults([], {}, {})

    def add(subject: str, fields: dict, scores: dict, ok: np.ndarray, ids: list[str]) -> None:
        name = Result("genre", metric="", value=None, **fields).name
        out.confusions[name] = out.confusions.get(name, 0) + scores.pop("confusion")
        per_genre = scores.pop("per_genre")
        rows.extend(Result("genre", metric=metric, value=value, subject=subject, n=len(ids), **fields)
                    for metric, value in scores.items())
        rows.extend(Result("genre", metric="acc", value=value, subject=subject, part=genre, n=len(ids), **fields)
                    for genre, value in per_genre.items())
        correct.setdefault(name, []).append((ok, ids))

    for subject, p in run.subjects.items():
        clf = classifier(own, subject)
        genres = [c.genre for c in run.test_clips(subject)]
        truth = np.array([GENRES.index(g) for g in genres])
        ref = genre_probabilities(clf, p.true)
        proba = genre_probabilities(clf, p.pred)
        add(subject, {"set": "true"}, genre_scores(ref, genres), (ref.argmax(1) == truth)[None], p.clip_ids)
        add(subject, {"set": "pred"}, genre_scores(proba, genres, ref), (proba.argmax(1) == truth)[None], p.clip_ids)
        out.decoded[subject] = {c: GENRES[g] for c, g in zip(p.clip_ids, proba.argmax(1))}
    for subject, per_subject in sets.items():
        for scored in per_subject:
            if scored.baseline:
                continue
            clf = classifier(spaces[scored.space], subject)
            genres = [c.genre for c in run.test_clips(subject) if c.clip_id in set(scored.clip_ids)]
            truth = np.array([GENRES.index(g) for g in genres])
            ref = genre_probabilities(clf, scored.true)
            proba = np.stack([genre_probabilities(clf, d) for d in scored.draws])  # [K, N, 10]
            scores = genre_scores(proba.reshape(-1, len(GENRES)), genres * len(proba),
                                  np.tile(ref, (len(proba), 1)))
            fields = {"set": scored.set, "choice": scored.choice, "space": scored.space, "caveat": scored.caveat}
            add(subject, fields, scores, proba.argmax(2) == truth, scored.clip_ids)

    rows = subject_means(rows)
    for i, row in enumerate(rows):
        if row.subject is None and row.metric == "acc" and not row.part:
            rows[i] = replace(row, interval=proportion_ci(correct[row.name], n_boot, seed, level))
    out.rows = rows + [Result("genre", "", "chance", CHANCE["genre"])]
    return out
