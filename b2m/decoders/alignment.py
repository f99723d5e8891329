"""Functional alignment through shared stimuli: other subjects' training data in one subject's space.

Every ds003720 subject heard the same training clips, so each shared clip pairs one subject's
features with another's. `pooled_onto` maps each other subject's features `[N_o, F_o]` onto
subject s's `[N_s, F_s]` with a ridge fitted on the clips they share (alpha by K-fold CV, one for
all of s's features), and stacks all the mapped rows under s's own, with their targets: a decoder
fitted on the pool sees every training clip once per subject, each time through another
subject's noise, and a subject with a few runs of its own (a new subject) gets the others' clips
too, through the map its few runs fit. Rows are ordered clip by clip, so that contiguous CV folds
keep the rows of one clip together (a clip in both a training and a validation fold would choose
too small an alpha). The pool holds the subjects' training clips only, never a test clip.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from b2m.core.ridge import RidgeCV


def pooled_onto(s: int, features: Sequence[np.ndarray], targets: Sequence[np.ndarray],
                clip_ids: Sequence[Sequence[str]], alphas: Sequence[float], n_folds: int, dtype: str = "float32",
                device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Subject `s`'s features and targets with every other subject's, mapped onto s's features, below.

    `features[i]` `[N_i, F_i]`, `targets[i]` `[N_i, T]` and `clip_ids[i]` (N_i ids) per subject.
    Returns `X` `[M, F_s]` and `Y` `[M, T]` (M = N_s + the other subjects' rows).
    """
    own = {c: i for i, c in enumerate(clip_ids[s])}
    rows_x, rows_y, order = [np.asarray(features[s], np.float32)], [np.asarray(targets[s], np.float32)], \
        [np.arange(len(clip_ids[s]))]
    for o in range(len(features)):
        if o == s:
            continue
        pairs = [(i, own[c]) for i, c in enumerate(clip_ids[o]) if c in own]
        if len(pairs) < n_folds:
            continue  # too few shared clips to fit a map
        mine, theirs = (np.array(v) for v in zip(*pairs))
        align = RidgeCV(alphas=list(alphas), n_folds=n_folds, dtype=dtype, device=device, scoring="r2",
                        alpha_per_target=False).fit(features[o][mine], features[s][theirs])
        rows_x.append(np.asarray(align.predict(features[o]), np.float32))
        rows_y.append(np.asarray(targets[o], np.float32))
        # A clip s did not see sorts after s's own: by its place in o's list, past s's.
        order.append(np.array([own.get(c, len(own) + i) for i, c in enumerate(clip_ids[o])]))
    x, y, clip = np.concatenate(rows_x), np.concatenate(rows_y), np.concatenate(order)
    by_clip = np.argsort(clip, kind="stable")
    return x[by_clip], y[by_clip]
