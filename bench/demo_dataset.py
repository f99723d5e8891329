"""Build the demo dataset at a size, time it, and check how hard it is.

    python bench/demo_dataset.py --size default --out /tmp/b2m_demo

Prints the build time, the disk size, and per tuning class the quantiles of the
explainable variance measured on the Test runs the way the published
preprocessing would see them (240 s median-filter detrending, z-score per run,
4 repeats per test clip), next to the simulated signal fraction.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.ndimage import median_filter

from b2m.data.bids import read_events
from b2m.demo.build import META_DIR, N_TEST_RUNS, TR_S, Run, build_dataset

CLASSES = {0: "none", 1: "spectro-temporal", 2: "semantic"}
DELAY_TRS = 3  # haemodynamic delay of the response window
WINDOW_TRS = 10  # one 15 s clip
MEDIAN_TRS = 161  # 240 s


def preprocess(bold: np.ndarray) -> np.ndarray:
    """`[T, V]` -> median-filter detrended, z-scored per voxel."""
    bold = bold.astype(np.float32)
    resid = bold - median_filter(bold, size=(MEDIAN_TRS, 1), mode="nearest")
    return (resid - resid.mean(0)) / resid.std(0)


def repeated_test_windows(root: Path, subject: int, mask: np.ndarray, n_runs: int) -> np.ndarray:
    """`[4, clips * WINDOW_TRS, V]`: each test clip's 4 presentations, row 0 standing in for the last row."""
    repeats = []
    for r in range(1, n_runs + 1):
        run = Run(subject, "Test", r)
        data = preprocess(np.asanyarray(nib.load(run.func_path(root, "bold.nii")).dataobj)[mask].T)
        windows = defaultdict(list)
        for onset, clip in ((p.onset, p.clip) for p in read_events(run.func_path(META_DIR, "events.tsv"))):
            lo = int(round(onset / TR_S)) + DELAY_TRS
            if lo + WINDOW_TRS <= len(data):  # the last row's window runs past the run's end: row 0 replaces it
                windows[clip].append(data[lo:lo + WINDOW_TRS])
        assert all(len(w) == 4 for w in windows.values()), {c: len(w) for c, w in windows.items()}
        repeats += [np.stack(w) for w in windows.values()]
    return np.concatenate(repeats, axis=1)


def explainable_variance(repeats: np.ndarray) -> np.ndarray:
    """`[R, T, V]` -> `[V]`: share of the variance repeatable across the R presentations, bias-corrected."""
    n_rep = repeats.shape[0]
    ratio = repeats.mean(0).var(0) / repeats.var(1).mean(0)
    return (n_rep * ratio - 1.0) / (n_rep - 1.0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="default")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out = Path(args.out)
    t0 = time.perf_counter()
    build_dataset(out, args.size)
    seconds = time.perf_counter() - t0
    du = lambda p: subprocess.run(["du", "-sh", str(p)], capture_output=True, text=True).stdout.split()[0]
    print(f"\nsize {args.size}: build {seconds:.1f} s (stimuli included; 0 s for what already existed), "
          f"disk {du(out)} (stimuli {du(out / 'stimuli')})")

    print("\n| subject | class | voxels | signal fraction q50/q90 | EV q50 | EV q90 | EV q99 |")
    print("|---|---|---|---|---|---|---|")
    for sub_dir in sorted((out / "derivatives" / "demo").glob("sub-*")):
        subject = int(sub_dir.name[4:])
        mask = np.asanyarray(nib.load(sub_dir / f"{sub_dir.name}_desc-cortex_mask.nii.gz").dataobj) > 0
        truth = np.load(sub_dir / f"{sub_dir.name}_desc-truth.npz", allow_pickle=False)
        n_runs = len(list((out / sub_dir.name / "func").glob("*task-Test*_bold.nii")))
        ev = explainable_variance(repeated_test_windows(out, subject, mask, min(n_runs, N_TEST_RUNS)))
        for klass, name in CLASSES.items():
            sel = truth["tuning_class"] == klass
            s = truth["signal_fraction"][sel]
            q = np.quantile(ev[sel], [0.5, 0.9, 0.99])
            print(f"| {subject} | {name} | {sel.sum()} | {np.quantile(s, 0.5):.3f}/{np.quantile(s, 0.9):.3f} "
                  f"| {q[0]:.3f} | {q[1]:.3f} | {q[2]:.3f} |")


if __name__ == "__main__":
    sys.exit(main())
