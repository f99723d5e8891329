"""Class agreement: a genre classifier trained on true embeddings, applied to decoded ones.

A logistic regression (on standardised, flattened `[L * D]` embeddings) learns the ten
GTZAN genres from the true embeddings of the training clips; applied to predictions or
to the embeddings of reconstructions, it says whether the decoded music has the right
genre (chance 1 / 10). Applied to the true test embeddings it gives the ceiling.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from b2m.core.clips import GENRES
from b2m.core.metrics import aggregate_subjects
from b2m.core.runs import Run
from b2m.evaluation import plots
from b2m.evaluation.decoding import ScoredSet, proportion_ci
from b2m.evaluation.summary import CHANCE
from b2m.targets import EmbeddingSpace, build_space
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
    `acc/<genre>` (accuracy on that genre's clips, absent for a genre without clips),
    `confusion` `[10, 10]` int (rows: true genre, columns: decoded) and, given the
    probabilities `reference` of the true embeddings, `agreement`: the decoded and the
    true embedding get the same top-1 genre.
    """
    truth = np.array([GENRES.index(g) for g in genres])
    decoded = proba.argmax(axis=1)
    top = np.argsort(-proba, axis=1, kind="stable")[:, :TOP_N]
    scores: dict = {"acc": float((decoded == truth).mean()),
                    f"top{TOP_N}": float((top == truth[:, None]).any(axis=1).mean())}
    for g, name in enumerate(GENRES):
        if (truth == g).any():
            scores[f"acc/{name}"] = float((decoded[truth == g] == g).mean())
    if reference is not None:
        scores["agreement"] = float((decoded == reference.argmax(axis=1)).mean())
    confusion = np.zeros((len(GENRES), len(GENRES)), dtype=int)
    np.add.at(confusion, (truth, decoded), 1)
    scores["confusion"] = confusion
    return scores


def genre_section(run: Run, sets: dict[str, dict[str, ScoredSet]], spaces: dict[str, EmbeddingSpace], out_dir: Path,
                  n_boot: int, seed: int, level: float) -> tuple[dict, dict[str, dict[str, str]]]:
    """Genre class agreement of the predictions and of every reconstruction set in `sets`
    (`sets[subject]["<kind>/<space>"]`, shuffled baselines aside).

    Returns the rows `genre/<set>/{acc,top3,agreement,acc/<genre>}` for set = true (ceiling), pred and
    each reconstruction (per subject and mean, with intervals), and per subject the genre decoded from
    each prediction (`{subject: {clip_id: genre}}`); writes the confusion PNGs into `out_dir`.
    """
    per_subject: dict[str, dict] = {}
    correct: dict[str, list] = {}
    confusions: dict[str, np.ndarray] = {}
    classifiers: dict[tuple, Pipeline] = {}
    decoded: dict[str, dict[str, str]] = {}

    def classifier(space: EmbeddingSpace, subject: str) -> Pipeline:
        train = run.training_clips(subject)
        key = (space.cache_key(), tuple(train))
        if key not in classifiers:
            emb = np.stack(list(clip_targets(run.cfg.data, space, train).values()))
            classifiers[key] = fit_genre_classifier(emb, [c.genre for c in train], seed)
        return classifiers[key]

    def add(subject: str, name: str, scores: dict, ok: np.ndarray, ids: list[str]) -> None:
        confusions[name] = confusions.get(name, 0) + scores.pop("confusion")
        per_subject.setdefault(subject, {}).update({f"genre/{name}/{k}": v for k, v in scores.items()})
        correct.setdefault(name, []).append((ok, ids))

    own = build_space(run.cfg.target)
    for subject, p in run.subjects.items():
        clf = classifier(own, subject)
        genres = [c.genre for c in run.test_clips(subject)]
        truth = np.array([GENRES.index(g) for g in genres])
        ref = genre_probabilities(clf, p.true)
        proba = genre_probabilities(clf, p.pred)
        add(subject, "true", genre_scores(ref, genres), (ref.argmax(1) == truth)[None], p.clip_ids)
        add(subject, "pred", genre_scores(proba, genres, ref), (proba.argmax(1) == truth)[None], p.clip_ids)
        decoded[subject] = {c: GENRES[g] for c, g in zip(p.clip_ids, proba.argmax(1))}
    for subject, per_set in sets.items():
        for name, scored in per_set.items():
            if name.endswith("/shuffled"):
                continue
            clf = classifier(spaces[name.rsplit("/", 1)[1]], subject)  # <kind>/<space>
            genres = [c.genre for c in run.test_clips(subject) if c.clip_id in set(scored.clip_ids)]
            truth = np.array([GENRES.index(g) for g in genres])
            ref = genre_probabilities(clf, scored.true)
            proba = np.stack([genre_probabilities(clf, d) for d in scored.draws])  # [K, N, 10]
            scores = genre_scores(proba.reshape(-1, len(GENRES)), genres * len(proba),
                                  np.tile(ref, (len(proba), 1)))
            add(subject, name, scores, proba.argmax(2) == truth, scored.clip_ids)

    rows = aggregate_subjects(per_subject)
    rows["genre/chance"] = CHANCE["genre"]
    for name, items in correct.items():
        rows[f"genre/{name}/acc_ci_low"], rows[f"genre/{name}/acc_ci_high"] = proportion_ci(items, n_boot, seed, level)
    for name, confusion in confusions.items():
        plots.plot_confusion(confusion, out_dir / plots.confusion_file(name), f"genre of {name} (all subjects)")
    return rows, decoded
