"""Class agreement: a genre classifier trained on true embeddings, applied to decoded ones.

A logistic regression (on standardised, flattened `[L * D]` embeddings) learns the ten
GTZAN genres from the true embeddings of the training clips; applied to predictions or
to the embeddings of reconstructions, it says whether the decoded music has the right
genre (chance 1 / 10). Applied to the true test embeddings it gives the ceiling.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from b2m.data.clips import GENRES

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
