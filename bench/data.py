"""Benchmark: load and preprocess one full-size run, b2m vs a naive nibabel + numpy pipeline.

    python bench/data.py [--run RUN.nii --mask MASK.nii.gz] [--workdir DIR]

Without --run, writes one full-size demo run (96x96x68x410 int16 with its cortex mask)
with the demo generator into --workdir (default: a temporary folder). Each pipeline runs
in its own process, so its peak memory (max RSS) is its own; the page cache is warmed
first so both read from memory. Both produce the same `[T, V]` array (checked).

naive: nibabel.load(...).get_fdata() (float64 4D), mask, scipy.ndimage.median_filter
       over 240 s, z-score.
b2m:   block-wise int16 reads of the masked voxels as float32, bottleneck running median,
       z-score (b2m.data.nifti + b2m.data.preprocess).
Goal: >= 3x faster, peak memory < 1.5x the run's int16 size.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TR = 1.5


def naive(run: Path, mask_path: Path) -> np.ndarray:
    import nibabel as nib
    import scipy.ndimage as ndi

    mask = nib.load(str(mask_path)).get_fdata() > 0
    data = nib.load(str(run)).get_fdata()                 # [X, Y, Z, T] float64
    x = data[mask].T                                       # [T, V]
    trend = ndi.median_filter(x, size=(161, 1), mode="nearest")
    x = x - trend
    return ((x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1)).astype(np.float32)


def ours(run: Path, mask_path: Path) -> np.ndarray:
    from b2m.data.nifti import load_mask, open_run, read_masked
    from b2m.data.preprocess import PreprocessConfig, clean, zscore

    image = open_run(run)
    mask = load_mask(mask_path, image.grid)
    x = clean(read_masked(image, mask), TR, PreprocessConfig())
    return zscore(x)[0]


def worker(kind: str, run: Path, mask: Path, out: Path) -> None:
    start = time.perf_counter()
    result = {"naive": naive, "ours": ours}[kind](run, mask)
    seconds = time.perf_counter() - start
    np.save(out, result)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb, "shape": list(result.shape)}))


def measure(kind: str, run: Path, mask: Path, out: Path) -> dict:
    res = subprocess.run([sys.executable, __file__, "--worker", kind, "--run", str(run), "--mask", str(mask),
                          "--out", str(out)], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def baseline_mb() -> float:
    """Max RSS of a process that only imports what both pipelines import."""
    code = ("import resource, numpy, scipy.ndimage, nibabel, torch, bottleneck;"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path)
    parser.add_argument("--mask", type=Path)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--worker", choices=["naive", "ours"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.run, args.mask, args.out)
        return

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="b2m-bench-data-"))
    run, mask = args.run, args.mask
    if run is None:
        subprocess.run([sys.executable, "-m", "b2m.demo", "--size", "full", "--subjects", "1",
                        "--max-training-runs", "1", "--max-test-runs", "0", "--out", str(workdir)],
                       check=True)
        run = workdir / "sub-001" / "func" / "sub-001_task-Training_run-01_bold.nii"
        mask = workdir / "derivatives" / "demo" / "sub-001" / "sub-001_desc-cortex_mask.nii.gz"
    run_mb = run.stat().st_size / 2**20
    run.read_bytes()  # warm the page cache for both
    results = {kind: measure(kind, run, mask, workdir / f"{kind}.npy") for kind in ("naive", "ours")}
    a, b = np.load(workdir / "naive.npy"), np.load(workdir / "ours.npy")
    max_diff = float(np.abs(a - b).max())
    base = baseline_mb()

    n, o = results["naive"], results["ours"]
    print(f"run: {run.name}, {run_mb:.0f} MiB int16, [T, V] = {o['shape']}; imports alone: {base:.0f} MB")
    print(f"{'pipeline':<8} {'seconds':>8} {'peak MB':>9} {'peak / run size':>16}")
    for kind, r in results.items():
        print(f"{kind:<8} {r['seconds']:>8.2f} {r['peak_mb']:>9.0f} {r['peak_mb'] / run_mb:>15.2f}x")
    print(f"speed-up: {n['seconds'] / o['seconds']:.1f}x (goal >= 3x); "
          f"peak memory of b2m: {o['peak_mb'] / run_mb:.2f}x the run (goal < 1.5x); "
          f"max |naive - b2m| = {max_diff:.2e}")


if __name__ == "__main__":
    main()
