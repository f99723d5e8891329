"""Metric tables with bootstrap confidence intervals, per subject and across subjects.

A *scored set* is what one row group of the table compares: draws of decoded
embeddings `[K, N, L, D]` (K = 1 for predictions; K samples or ranks for
reconstructions) against the true embeddings `[N, L, D]` of N clips, both standardised
with the training clips' statistics in that space (`b2m.core.metrics.Standardiser`;
`_raw` keys score the raw vectors). Point values are the metrics of `b2m.core.metrics`
averaged over the draws. The bootstrap
resamples clips, with the same draw of clips for every subject (clips are matched
by id), so the interval of the across-subject mean accounts for the shared clips.

Rows: every metric per subject and its mean over subjects (with the sd across them), each with its
interval (`b2m.evaluation.results`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from b2m.core.log import progress
from b2m.evaluation.bootstrap import bootstrap_metrics, confidence_interval, resample_counts
from b2m.core.metrics import METRIC_KEYS, RAW_METRICS, Standardiser, baseline_predictions, decoding_metrics
from b2m.core.runs import Run
from b2m.evaluation.results import Result, subject_means


@dataclass
class ScoredSet:
    """Decoded draws `[K, N, L, D]` of the clips `clip_ids[n]`, their true embeddings `[N, L, D]`, and
    the training clips' statistics `scale` in the same space; the other fields name the set as its
    result rows do (`b2m.evaluation.results`)."""

    draws: np.ndarray
    true: np.ndarray
    clip_ids: list[str]
    scale: Standardiser
    section: str = "decoding"
    set: str = "test"
    choice: str = ""
    space: str = ""
    baseline: str = ""
    caveat: str = ""

    @property
    def name(self) -> str:
        return self.row("", None).name

    def row(self, metric: str, value, subject: str | None = None, interval=None, n: int | None = None) -> Result:
        """A result row of this set."""
        return Result(self.section, self.set, metric, value, subject, choice=self.choice, space=self.space,
                      baseline=self.baseline, interval=interval, n=n, caveat=self.caveat)

    def bootstrap(self, counts: np.ndarray) -> dict[str, np.ndarray]:
        """Every key of `METRIC_KEYS` on each bootstrap sample `counts` `[B, N]`, averaged over the draws."""
        true_z = self.scale(self.true)
        per_draw = []
        for draw in self.draws:
            values = bootstrap_metrics(self.scale(draw), true_z, counts)
            raw = bootstrap_metrics(draw, self.true, counts)
            per_draw.append(values | {f"{name}_raw": raw[name] for name in RAW_METRICS})
        return _mean_dicts(per_draw)


@dataclass(frozen=True)
class Difference:
    """The paired difference of the sets named `a` and `b` (`ScoredSet.name`), reported as `like`'s rows."""

    like: ScoredSet
    a: str
    b: str


def score_sets(sets: dict[str, list[ScoredSet]], n_boot: int, seed: int, level: float,
               differences: list[Difference] = ()) -> list[Result]:
    """Result rows of every metric of `METRIC_KEYS` for the sets `sets[subject]`: per subject and the mean
    over subjects (with the sd across them), each with its bootstrap interval (see the module doc).

    Each of `differences` adds the paired difference of two sets (the mean over the subjects that have
    both), with its interval from the same bootstrap draws: two sets scored on the same clips differ less
    than their own intervals suggest."""
    universe = sorted({c for per_subject in sets.values() for s in per_subject for c in s.clip_ids})
    position = {c: i for i, c in enumerate(universe)}
    counts = resample_counts(len(universe), n_boot, seed)  # [B, U]

    rows: list[Result] = []
    boots: dict[tuple[str, str], list[np.ndarray]] = {}  # (set name, metric) -> per-subject [B]
    by_subject: dict[tuple[str, str, str], np.ndarray] = {}  # (subject, set name, metric) -> [B]
    points: dict[tuple[str, str, str], float] = {}
    for subject, per_subject in progress(sets.items(), f"bootstrap ({n_boot} resamples)", total=len(sets),
                                         unit="subjects"):
        for scored in per_subject:
            sub_counts = counts[:, [position[c] for c in scored.clip_ids]]
            point = _mean_dicts([decoding_metrics(d, scored.true, scored.scale) for d in scored.draws])
            boot = scored.bootstrap(sub_counts)
            for metric in METRIC_KEYS:
                value = float(point[metric])
                rows.append(scored.row(metric, value, subject, confidence_interval(boot[metric], level),
                                       len(scored.clip_ids)))
                boots.setdefault((scored.name, metric), []).append(boot[metric])
                by_subject[(subject, scored.name, metric)] = boot[metric]
                points[(subject, scored.name, metric)] = value
    means = subject_means(rows)[len(rows):]
    for i, mean in enumerate(means):
        means[i] = replace(mean, interval=confidence_interval(np.mean(boots[(mean.name, mean.metric)], axis=0), level),
                           n=len(universe))
    rows += means
    for diff in differences:
        both = [s for s in sets if (s, diff.a, METRIC_KEYS[0]) in points and (s, diff.b, METRIC_KEYS[0]) in points]
        for metric in METRIC_KEYS if both else ():
            value = float(np.mean([points[(s, diff.a, metric)] - points[(s, diff.b, metric)] for s in both]))
            boot = np.mean([by_subject[(s, diff.a, metric)] - by_subject[(s, diff.b, metric)] for s in both], axis=0)
            rows.append(diff.like.row(metric, value, interval=confidence_interval(boot, level), n=len(universe)))
    return rows


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


def decoding_sets(run: Run, seed: int) -> dict[str, list[ScoredSet]]:
    """`test` and the two baselines of every subject as scored sets."""
    sets: dict[str, list[ScoredSet]] = {}
    for subject, p in run.subjects.items():
        sets[subject] = [ScoredSet(p.pred[None], p.true, p.clip_ids, p.scale)]
        for name, pred in baseline_predictions(p.pred, p.train_mean, seed).items():
            sets[subject].append(ScoredSet(pred[None], p.true, p.clip_ids, p.scale, set="baseline", baseline=name))
    return sets
