"""`b2m.core.timing.fastest` with a fake clock: interleaved rounds, the incumbent kept within the spread,
disturbed timings flagged."""

from __future__ import annotations

import numpy as np
import pytest

from b2m.core.timing import fastest
from helpers.clock import FakeClock


def choose(times: dict[str, list[float]], **kwargs):
    clock = FakeClock(times)
    return fastest(clock.candidates(), rounds=len(next(iter(times.values()))), min_sample_s=0, clock=clock,
                   **kwargs), clock


def test_rounds_interleave_the_candidates_in_rotated_order():
    choice, clock = choose({"a": [1.0] * 3, "b": [1.0] * 3, "c": [1.0] * 3})
    assert clock.calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert choice.seconds == {"a": 1.0, "b": 1.0, "c": 1.0} and choice.spread == {"a": 0.0, "b": 0.0, "c": 0.0}


def test_a_challenger_wins_only_beyond_the_spread():
    noise = [0.00, 0.02, -0.02, 0.01, -0.01, 0.03, -0.03]
    incumbent = [1.0 + e for e in noise]
    clearly = fastest_of(incumbent, [0.8 + e for e in noise])
    assert clearly.name == "b" and not clearly.disturbed and clearly.seconds["b"] == pytest.approx(0.8)
    # 3% faster in the median, but within the timings' spread: the incumbent stays.
    close = fastest_of(incumbent, [0.97 + e for e in noise])
    assert close.seconds["b"] < close.seconds["a"] and close.name == "a" and not close.disturbed
    # The tournament goes on from the winner: c beats a but not b.
    choice, _ = choose({"a": incumbent, "b": [0.8 + e for e in noise], "c": [0.9 + e for e in noise]})
    assert choice.name == "b"


def test_a_challenger_that_must_be_much_faster_to_pay():
    assert fastest_of([1.0] * 5, [0.7] * 5, needs=0.6).name == "a"
    assert fastest_of([1.0] * 5, [0.5] * 5, needs=0.6).name == "b"


def test_disturbed_timings_keep_the_incumbent_and_say_so():
    # Another job took the cores during some rounds: five times slower there.
    choice = fastest_of([1.0, 5.0, 1.0, 5.2, 1.0, 4.9, 1.0], [0.5, 0.5, 2.5, 0.5, 2.4, 0.5, 0.5])
    assert choice.disturbed and choice.name == "a" and choice.spread["a"] > 1


def test_equal_candidates_under_noise_keep_the_incumbent_where_the_fastest_single_time_flips():
    rng = np.random.default_rng(0)
    choices, minimum = [], []
    for _ in range(5):  # five runs of the probe on one quiet machine: same speed, 5% noise
        a, b = (list(1.0 + 0.05 * rng.standard_normal(7)) for _ in range(2))
        choices.append(fastest_of(a, b).name)
        minimum.append("a" if min(a) <= min(b) else "b")
    assert choices == ["a"] * 5
    assert set(minimum) == {"a", "b"}  # what "the fastest timing wins" would have chosen


def fastest_of(a: list[float], b: list[float], **kwargs):
    return choose({"a": a, "b": b}, **kwargs)[0]


def test_a_call_shorter_than_a_sample_is_repeated_within_each_timing():
    clock = FakeClock({"a": [0.001] * 100, "b": [0.004] * 100})
    choice = fastest(clock.candidates(), rounds=3, min_sample_s=0.005, clock=clock)
    # One calibrating call each, then per round 5 calls of a (1 ms) and 2 of b (4 ms).
    assert clock.calls.count("a") == 1 + 3 * 5 and clock.calls.count("b") == 1 + 3 * 2
    assert choice.seconds == pytest.approx({"a": 0.001, "b": 0.004}) and choice.name == "a"
