"""From preprocessed runs to samples: one window of TRs per clip presentation.

A presentation at onset `o` seconds gives the window `[W, V]` of the TRs
`round(o / TR) + d` for each delay `d` in `delays_tr` (FIR delays; W = len(delays_tr)).

ds003720 specifics, handled here:
- Row 0 of every run repeats a clip shown elsewhere (Training: the previous run's
  last clip; Test: the run's own last clip) and is dropped ...
- ... except as a stand-in: the last clip of a run (onset 600 s of a 615 s run) has
  a window that runs past the end of the run. It is replaced by a complete row-0
  presentation of the same clip from another run of the task when there is one,
  and dropped with a warning otherwise. Nothing is read past the end of a run.
- A clip whose onset lies past the last volume means the run is too short for its
  events: that is an error.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from b2m.data.bids import Presentation, Run
from b2m.core.clips import Clip
from b2m.core.errors import B2MError


@dataclass
class TaskSamples:
    """Windows of one task. `x` `[N, W, V]` float32 with `clips[n]`; for a task with repeats,
    `repeats` `[N, R, W, V]` holds the single presentations and `x` their mean."""

    x: np.ndarray
    clips: list[Clip]
    repeats: np.ndarray | None = None


def build_samples(
    task: str,
    runs: list[Run],
    events: dict[str, list[Presentation]],
    data: dict[str, np.ndarray],
    tr: float,
    delays_tr: list[int],
    average_repeats: bool,
) -> TaskSamples:
    """Windows for every presentation of `task`'s runs (events and `[T, V]` data keyed by run name).

    With `average_repeats`, presentations of the same clip are stacked into `repeats`
    and averaged into `x` (one sample per clip); otherwise each presentation is a sample.
    """
    delays = np.asarray(delays_tr, dtype=int)
    if delays.size == 0 or (delays < 0).any():
        raise B2MError(f"data.delays_tr: expected a non-empty list of TRs >= 0, got {list(delays_tr)}")
    kept: list[tuple[Clip, np.ndarray]] = []
    standins: dict[Clip, list[np.ndarray]] = defaultdict(list)
    truncated: list[tuple[Run, Presentation]] = []
    for run in runs:
        x = data[run.name]
        n_tr = len(x)
        for p in events[run.name]:
            onset_tr = int(round(p.onset / tr))
            if onset_tr >= n_tr:
                raise B2MError(
                    f"{run.events}: the clip at onset {p.onset:g} s (row {p.row}) lies past the last volume: "
                    f"{run.bold.name} has {n_tr} volumes of {tr:g} s"
                )
            idx = onset_tr + delays
            complete = idx.max() < n_tr
            if p.row == 0:
                if complete:
                    standins[p.clip].append(x[idx])
            elif complete:
                kept.append((p.clip, x[idx]))
            else:
                truncated.append((run, p))
    for run, p in truncated:
        if standins.get(p.clip):
            kept.append((p.clip, standins[p.clip].pop(0)))
        else:
            warnings.warn(
                f"{run.events}: clip {p.clip.clip_id} at onset {p.onset:g} s has a window past the end of "
                f"the run and no complete row-0 presentation to stand in; dropped", stacklevel=2)
    if not kept:
        raise B2MError(f"{runs[0].bold.parent}: no complete task-{task} presentation for delays {list(delays_tr)}")
    if not average_repeats:
        return TaskSamples(np.stack([w for _, w in kept]).astype(np.float32), [c for c, _ in kept])

    by_clip: dict[Clip, list[np.ndarray]] = defaultdict(list)
    for clip, window in kept:
        by_clip[clip].append(window)
    clips = sorted(by_clip)
    n_rep = min(len(by_clip[c]) for c in clips)
    if any(len(by_clip[c]) != n_rep for c in clips):
        warnings.warn(f"task-{task}: clips have unequal repeat counts; keeping the first {n_rep} of each",
                      stacklevel=2)
    repeats = np.stack([np.stack(by_clip[c][:n_rep]) for c in clips]).astype(np.float32)
    return TaskSamples(repeats.mean(axis=1), clips, repeats)


def split_by_clip(clips: list[Clip], val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices `(train, val)` of a split by clip, stratified by genre; presentations of one
    clip never straddle the split."""
    rng = np.random.default_rng(seed)
    by_genre: dict[str, list[Clip]] = defaultdict(list)
    for clip in sorted(set(clips)):
        by_genre[clip.genre].append(clip)
    val_clips = set()
    for genre in sorted(by_genre):
        members = by_genre[genre]
        n_val = int(round(val_fraction * len(members)))
        for i in rng.permutation(len(members))[:n_val]:
            val_clips.add(members[i])
    is_val = np.array([c in val_clips for c in clips])
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)
