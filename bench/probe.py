"""Benchmark: are the `auto` probes' choices stable? Each probe run `--runs` times afresh on this machine.

    python bench/probe.py [--runs 5] [--batches 8 32] [--steps 753]

- The generation engine's probe (`b2m.reconstruction.musicgen.probe.resolve_engine`) for random
  musicgen-small's widths, guidance 3, 16 conditioning tokens, at each `--batches` and `--steps`
  (753: 15 s of audio), every run with an empty cache (in one process: the `fused` kernel compiles
  once).
- Retrieval's first-pass probe (`b2m.reconstruction.retrieval.first_pass_precision`) on 100,000
  random unit vectors of 768 values, its memory of earlier answers cleared before each run.

Per run: the choice, each candidate's median time and spread (interquartile range / median), and
whether the timings looked disturbed (then nothing would be cached). Run it on a quiet machine.
The last line is `probe stable over <n> runs: yes|no`.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

import torch
import torch.nn.functional as F

from b2m.reconstruction import retrieval
from b2m.reconstruction.musicgen.loaders import lm_from_transformers
from b2m.reconstruction.musicgen.probe import PROBE_FILE, machine_key, resolve_engine
from b2m.targets.pretrained import random_musicgen

TEXT_LEN = 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--steps", type=int, default=753)
    args = parser.parse_args()
    cfg = lm_from_transformers(random_musicgen("small"), "random small").cfg
    print(machine_key(torch.device("cpu")))
    stable = True
    for batch in args.batches:
        choices = []
        for run in range(args.runs):
            with tempfile.TemporaryDirectory() as cache:
                os.environ["B2M_CACHE"] = cache
                engine = resolve_engine("auto", cfg, torch.device("cpu"), batch, args.steps, TEXT_LEN, True)
                entry = _only_entry(os.path.join(cache, PROBE_FILE))
            choices.append(f"{engine.precision}/{engine.attention}")
            times = ", ".join(f"{name} {1e3 * s:.1f} ms ({100 * entry['spread'][name]:.0f}%)"
                              for name, s in sorted(entry["seconds_per_step"].items())) if entry else "not cached"
            print(f"engine, batch {batch}, run {run + 1}: {choices[-1]}{'' if entry else ' (disturbed)'}; {times}")
        stable &= len(set(choices)) == 1

    unit = F.normalize(torch.randn(100_000, 768, generator=torch.Generator().manual_seed(0)), dim=1)
    choices = []
    for run in range(args.runs):
        retrieval._PROBED.clear()
        choices.append(retrieval.first_pass_precision(unit))
        print(f"retrieval first pass, run {run + 1}: {choices[-1]}{'' if retrieval._PROBED else ' (disturbed)'}")
    stable &= len(set(choices)) == 1
    print(f"probe stable over {args.runs} runs: {'yes' if stable else 'no'}")


def _only_entry(path: str) -> dict | None:
    """The one cache entry a probe with an empty cache wrote, or None (disturbed: nothing cached)."""
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        (entry,) = json.load(f).values()
    return entry


if __name__ == "__main__":
    main()
