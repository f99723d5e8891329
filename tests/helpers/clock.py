"""A fake clock for timing code: only the candidates it scripts move it."""

from __future__ import annotations


class FakeClock:
    """A clock that only the candidates move: each call of candidate `name` takes its next scripted time."""

    def __init__(self, times: dict[str, list[float]]):
        self.now, self.times, self.calls = 0.0, {name: list(t) for name, t in times.items()}, []

    def __call__(self) -> float:
        return self.now

    def candidates(self) -> dict:
        def call(name):
            def run():
                self.calls.append(name)
                self.now += self.times[name].pop(0)
            return run
        return {name: call(name) for name in self.times}
