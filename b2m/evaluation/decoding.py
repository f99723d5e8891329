"""Metric tables with bootstrap confidence intervals, per subject and across subjects.

A *scored set* is what one row group of the table compares: draws of decoded
embeddings `[K, N, L, D]` (K = 1 for predictions; K samples or ranks for
reconstructions) against the true embeddings `[N, L, D]` of N clips, both standardised
with the training clips' statistics in that space (`b2m.core.metrics.Standardiser`;
`_raw` keys score the raw vectors). Point values are the metrics of `b2m.core.metrics`
averaged over the draws. The bootstrap
resamples clips, with the same draw of clips for every subject (clips are matched
by id), so the interval of the across-subject mean accounts for the shared clips.

Keys: `<subject>/<prefix>/<metric>` and `<prefix>/<metric>` (mean over subjects),
`<prefix>/<metric>_sd` (sd across subjects), each with `_ci_low` / `_ci_high`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from b2m.core.log import progress
from b2m.evaluation.bootstrap import bootstrap_metrics, confidence_interval, resample_counts
from b2m.core.metrics import (METRIC_KEYS, RAW_METRICS, Standardiser, aggregate_subjects, baseline_predictions,
                              decoding_metrics)
from b2m.core.runs import Run


@dataclass
class ScoredSet:
    """Decoded draws `[K, N, L, D]` of the clips `clip_ids[n]`, their true embeddings `[N, L, D]`, and
    the training clips' statistics `scale` in the same space."""

    draws: np.ndarray
    true: np.ndarray
    clip_ids: list[str]
    scale: Standardiser

    def bootstrap(self, counts: np.ndarray) -> dict[str, np.ndarray]:
        """Every key of `METRIC_KEYS` on each bootstrap sample `counts` `[B, N]`, averaged over the draws."""
        true_z = self.scale(self.true)
        per_draw = []
        for draw in self.draws:
            values = bootstrap_metrics(self.scale(draw), true_z, counts)
            raw = bootstrap_metrics(draw, self.true, counts)
            per_draw.append(values | {f"{name}_raw": raw[name] for name in RAW_METRICS})
        return _mean_dicts(per_draw)


def score_sets(sets: dict[str, dict[str, ScoredSet]], n_boot: int, seed: int, level: float,
               differences: dict[str, tuple[str, str]] | None = None) -> dict[str, float]:
    """`sets[subject][prefix]` -> the flat metric table with intervals (see the module doc).

    `differences[name] = (a, b)` adds `<name>/<metric>`, the paired difference of the sets with prefixes
    `a` and `b` (the mean over the subjects that have both), with its interval from the same bootstrap
    draws: two sets scored on the same clips differ less than their own intervals suggest."""
    universe = sorted({c for per_subject in sets.values() for s in per_subject.values() for c in s.clip_ids})
    position = {c: i for i, c in enumerate(universe)}
    counts = resample_counts(len(universe), n_boot, seed)  # [B, U]

    points: dict[str, dict[str, float]] = {}
    intervals: dict[str, float] = {}
    boots: dict[str, list[np.ndarray]] = {}
    by_subject: dict[str, dict[str, np.ndarray]] = {}
    for subject, per_subject in progress(sets.items(), f"bootstrap ({n_boot} resamples)", total=len(sets),
                                         unit="subjects"):
        for prefix, scored in per_subject.items():
            sub_counts = counts[:, [position[c] for c in scored.clip_ids]]
            point = _mean_dicts([decoding_metrics(d, scored.true, scored.scale) for d in scored.draws])
            boot = scored.bootstrap(sub_counts)
            for name in METRIC_KEYS:
                key = f"{prefix}/{name}"
                points.setdefault(subject, {})[key] = float(point[name])
                low, high = confidence_interval(boot[name], level)
                intervals[f"{subject}/{key}_ci_low"], intervals[f"{subject}/{key}_ci_high"] = low, high
                boots.setdefault(key, []).append(boot[name])
                by_subject.setdefault(subject, {})[key] = boot[name]
    out = aggregate_subjects(points) | intervals
    for key, per_subject_boots in boots.items():
        out[f"{key}_ci_low"], out[f"{key}_ci_high"] = confidence_interval(np.mean(per_subject_boots, axis=0), level)
    for name, (a, b) in (differences or {}).items():
        both = [s for s, per_subject in sets.items() if a in per_subject and b in per_subject]
        for metric in METRIC_KEYS if both else ():
            ka, kb = f"{a}/{metric}", f"{b}/{metric}"
            out[f"{name}/{metric}"] = float(np.mean([points[s][ka] - points[s][kb] for s in both]))
            diff = np.mean([subject_boots[ka] - subject_boots[kb] for subject_boots in
                            (by_subject[s] for s in both)], axis=0)
            out[f"{name}/{metric}_ci_low"], out[f"{name}/{metric}_ci_high"] = confidence_interval(diff, level)
    return out


def proportion_ci(items: list[tuple[np.ndarray, list[str]]], n_boot: int, seed: int,
                  level: float) -> tuple[float, float]:
    """Bootstrap interval over clips of a proportion averaged over subjects: `items` holds, per subject,
    per-item outcomes `[K, N]` (K draws of N clips) and the N clip ids; clips are drawn as in `score_sets`."""
    universe = sorted({c for _, ids in items for c in ids})
    position = {c: i for i, c in enumerate(universe)}
    counts = resample_counts(len(universe), n_boot, seed).astype(np.float64)  # [B, U]
    per_subject = []
    for outcome, ids in items:
        sub = counts[:, [position[c] for c in ids]]
        per_clip = np.asarray(outcome, dtype=np.float64).mean(axis=0)  # [N]
        with np.errstate(invalid="ignore", divide="ignore"):
            per_subject.append(sub @ per_clip / sub.sum(axis=1))
    return confidence_interval(np.mean(per_subject, axis=0), level)


def _mean_dicts(rows: list[dict]) -> dict:
    return {k: np.mean([r[k] for r in rows], axis=0) for k in rows[0]}


def decoding_sets(run: Run, seed: int) -> dict[str, dict[str, ScoredSet]]:
    """`test` and the two baselines of every subject as scored sets."""
    sets: dict[str, dict[str, ScoredSet]] = {}
    for subject, p in run.subjects.items():
        base = baseline_predictions(p.pred, p.train_mean, seed)
        sets[subject] = {"test": ScoredSet(p.pred[None], p.true, p.clip_ids, p.scale)}
        for name, pred in base.items():
            sets[subject][f"baseline/{name}"] = ScoredSet(pred[None], p.true, p.clip_ids, p.scale)
    return sets
