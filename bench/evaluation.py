"""Benchmark the evaluation's inner loops against the plain way, measured in the same run.

    python bench/evaluation.py [--clips 60] [--features 512] [--boot 1000] [--voxels 20000]

Rows: the bootstrap of all five decoding metrics (vectorised over resamples, `bootstrap_metrics`)
against recomputing `decoding_metrics` on each explicitly resampled set; Benjamini-Hochberg
(`fdr_bh`) against scipy's `false_discovery_control`. Prints seconds (best of 3) and the ratio.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.stats import false_discovery_control

from b2m.evaluation.bootstrap import bootstrap_metrics, resample_counts
from b2m.core.metrics import decoding_metrics
from b2m.evaluation.stats import fdr_bh


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--features", type=int, default=512)
    parser.add_argument("--boot", type=int, default=1000)
    parser.add_argument("--voxels", type=int, default=20000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    true = rng.normal(size=(args.clips, 1, args.features)).astype(np.float32)
    pred = (0.5 * true + rng.normal(size=true.shape)).astype(np.float32)
    counts = resample_counts(args.clips, args.boot, seed=0)
    samples = [np.repeat(np.arange(args.clips), row) for row in counts]

    rows = [
        (f"bootstrap, {args.boot} x {args.clips} clips x {args.features}",
         best_of(lambda: bootstrap_metrics(pred, true, counts)),
         best_of(lambda: [decoding_metrics(pred[i], true[i]) for i in samples], repeats=1)),
    ]
    p = rng.uniform(size=args.voxels)
    rows.append((f"BH-FDR, {args.voxels} p-values", best_of(lambda: fdr_bh(p, 0.05)),
                 best_of(lambda: false_discovery_control(p, method="bh"))))
    print(f"| {'task':<42} | {'b2m s':>8} | {'reference s':>11} | {'b2m / ref':>9} |")
    print(f"|{'-' * 44}|{'-' * 10}|{'-' * 13}|{'-' * 11}|")
    for name, ours, ref in rows:
        print(f"| {name:<42} | {ours:8.4f} | {ref:11.4f} | {ours / ref:9.4f} |")


if __name__ == "__main__":
    main()
