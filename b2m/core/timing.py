"""Choosing the fastest of several ways to do the same work, without being fooled by noise.

A timing taken while other work shares the cores can come out 5-10x slow, and two kernels within a
few percent of each other swap places from run to run. So `fastest` times the candidates in
interleaved rounds (every round runs each once, in a rotated order, so that a disturbance falls on
all of them), and keeps the incumbent (the first candidate, the safe default) unless a challenger
is faster beyond the spread of both: its median below the incumbent's (times `needs`, for a
challenger that must be clearly faster to pay) by more than their two relative spreads together
(interquartile range over median, each). Two candidates of the same speed under 5% noise then swap
in about 3 of 1,000 probes of 7 rounds (simulated), where "the fastest timing wins" swaps them in
every other one.
Candidates are tried in order, each against the winner so far. A call shorter than `min_sample_s`
is repeated within each timing (as timeit does) so that a sub-millisecond step is not timer noise. A candidate whose timings spread more than `max_spread`
(interquartile range over median) makes the whole measurement `disturbed`: the incumbent is
chosen, and a caller must not cache the answer.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

ROUNDS = 7
MAX_SPREAD = 0.5  # quiet here: up to 30%; another job on the cores: 100% and more
MIN_SAMPLE_S = 0.005


@dataclass(frozen=True)
class Choice:
    """The chosen candidate's name; per candidate the median seconds and the relative spread
    (interquartile range / median) of its timings; whether the timings looked disturbed."""

    name: str
    seconds: dict[str, float]
    spread: dict[str, float]
    disturbed: bool


def fastest(candidates: dict[str, Callable[[], object]], rounds: int = ROUNDS, needs: float = 1.0,
            max_spread: float = MAX_SPREAD, min_sample_s: float = MIN_SAMPLE_S,
            clock: Callable[[], float] = time.perf_counter) -> Choice:
    """Time each of `candidates` (name -> a warmed-up call) `rounds` times, interleaved, and choose
    (module doc). The first candidate is the incumbent; `min_sample_s=0` times single calls."""
    names = list(candidates)
    calls = dict.fromkeys(names, 1)
    for name in names if min_sample_s > 0 else ():
        start = clock()
        candidates[name]()
        calls[name] = max(1, math.ceil(min_sample_s / max(clock() - start, 1e-9)))
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = clock()
            for _ in range(calls[name]):
                candidates[name]()
            samples[name].append((clock() - start) / calls[name])
    low, median, high = ({name: float(np.percentile(samples[name], q)) for name in names} for q in (25, 50, 75))
    spread = {name: (high[name] - low[name]) / median[name] if median[name] > 0 else 0.0 for name in names}
    disturbed = any(s > max_spread for s in spread.values())
    choice = names[0]
    if not disturbed:
        for name in names[1:]:
            if median[name] < needs * median[choice] * (1 - spread[name] - spread[choice]):
                choice = name
    return Choice(choice, median, spread, disturbed)
