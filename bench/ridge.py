"""Benchmark b2m's RidgeCV against himalaya and scikit-learn on one generated problem.

    python bench/ridge.py [--samples 2400 --features 20000 --targets 768 --alphas 10 --folds 5]
    python bench/ridge.py --real mean|fir [--solvers himalaya b2m]

`--real` sets the decoder's real size on ds003720: 480 training clips, 60 test clips, 768
targets, and 64,000 cortex voxels as features (`mean`: the decoder's default window mean) or
10 delays x 64,000 (`fir`: the window's delays side by side).

Each solver runs in its own subprocess on the same data (float32, written once to a
temporary folder), so its peak resident memory (ru_maxrss) is its own. Prints one
table: fit and predict time, time ratio to himalaya, peak memory, and agreement of
the chosen alphas and of held-out predictions with himalaya's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SOLVERS = ("himalaya", "b2m", "sklearn")
NOTES = """notes:
- himalaya: KernelRidgeCV(kernel='linear') on its torch backend when features > samples, else
  RidgeCV; b2m and himalaya use the same contiguous K folds and score (mean validation MSE).
- sklearn: RidgeCV(alpha_per_target=True) selects alphas by efficient leave-one-out (GCV), not
  K-fold (with cv=K it has no per-target alphas), so its alphas are expected to differ.
- fit and predict: the fastest of {repeats} runs in one process; ratio = (fit + predict) / himalaya's; max rel pred diff = max |pred - pred_himalaya| /
  max |pred_himalaya| over the test predictions; peak RSS includes the inputs each worker loads.
- workers ran with OMP_WAIT_POLICY={omp}, torch threads = {threads}."""


def make_problem(args: argparse.Namespace, folder: Path) -> None:
    """Gaussian features (z-scored voxels) and targets whose signal-to-noise ratio
    spans two orders of magnitude, so that targets choose different alphas."""
    rng = np.random.default_rng(0)
    n_total = args.samples + args.test_samples
    X = rng.standard_normal((n_total, args.features), dtype=np.float32)
    scale = np.logspace(-1.5, 0.5, args.targets, dtype=np.float32) / np.sqrt(args.features)
    Y = rng.standard_normal((n_total, args.targets), dtype=np.float32)
    for lo in range(0, args.features, 50_000):  # the weights block by block: [F, T] need not fit at once
        hi = min(lo + 50_000, args.features)
        Y += X[:, lo:hi] @ (rng.standard_normal((hi - lo, args.targets), dtype=np.float32) * scale)
    np.save(folder / "X_train.npy", X[: args.samples])
    np.save(folder / "Y_train.npy", Y[: args.samples])
    np.save(folder / "X_test.npy", X[args.samples:])


def build(solver: str, alphas: np.ndarray, n_folds: int, n_samples: int, n_features: int):
    """The estimator of one solver, configured for per-target alphas with an intercept."""
    if solver == "b2m":
        from b2m.core.ridge import RidgeCV

        return RidgeCV(alphas=alphas, n_folds=n_folds, dtype="float32", device="cpu")
    if solver == "himalaya":
        from himalaya.backend import set_backend

        set_backend("torch", on_error="raise")
        if n_features > n_samples:  # himalaya's advice: a linear kernel is faster here
            from himalaya.kernel_ridge import KernelRidgeCV

            return KernelRidgeCV(alphas=alphas, kernel="linear", fit_intercept=True, cv=n_folds)
        from himalaya.ridge import RidgeCV

        return RidgeCV(alphas=alphas, fit_intercept=True, cv=n_folds)
    from sklearn.linear_model import RidgeCV

    # Per-target alphas exist only with cv=None: efficient leave-one-out (GCV).
    return RidgeCV(alphas=alphas, alpha_per_target=True, fit_intercept=True)


def run_worker(solver: str, folder: Path, alphas: np.ndarray, n_folds: int, repeats: int) -> None:
    """Fit and predict with one solver; save its alphas and predictions; print timings."""
    X_train = np.load(folder / "X_train.npy")
    Y_train = np.load(folder / "Y_train.npy")
    X_test = np.load(folder / "X_test.npy")
    inputs_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fit_s = predict_s = float("inf")
    for _ in range(repeats):  # the fastest run: the first one also pays one-off library set-up
        model = None  # the previous fit's memory is freed first: the peak is one fit's
        model = build(solver, alphas, n_folds, *X_train.shape)
        start = time.perf_counter()
        model.fit(X_train, Y_train)
        fit_s = min(fit_s, time.perf_counter() - start)
        start = time.perf_counter()
        prediction = np.asarray(model.predict(X_test), dtype=np.float32)
        predict_s = min(predict_s, time.perf_counter() - start)

    chosen = model.alpha_ if solver == "sklearn" else model.best_alphas_
    np.save(folder / f"{solver}_alphas.npy", np.asarray(chosen, dtype=np.float64))
    np.save(folder / f"{solver}_prediction.npy", prediction)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"fit_s": fit_s, "predict_s": predict_s, "peak_mb": peak_kb / 1024,
                      "inputs_mb": inputs_kb / 1024}))


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def alpha_indices(chosen: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """Grid index of each chosen alpha (himalaya returns them as exp(-log(1/alpha)))."""
    return np.abs(np.log(chosen)[:, None] - np.log(alphas)[None, :]).argmin(1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=2400, help="training samples (TRs)")
    parser.add_argument("--features", type=int, default=20000, help="features (voxels)")
    parser.add_argument("--targets", type=int, default=768, help="targets (embedding dimensions)")
    parser.add_argument("--test-samples", type=int, default=240, help="held-out samples to predict")
    parser.add_argument("--alphas", type=int, default=10, help="size of the alpha grid, log-spaced 1e1..1e8")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="fits per solver; the fastest is reported")
    parser.add_argument("--solvers", nargs="+", choices=SOLVERS, default=list(SOLVERS))
    parser.add_argument("--real", choices=("mean", "fir"), help="the decoder's real size (see above)")
    parser.add_argument("--worker", choices=SOLVERS, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.real:
        args.samples, args.test_samples, args.targets = 480, 60, 768
        args.features = 64_000 * (10 if args.real == "fir" else 1)
    alphas = np.logspace(1, 8, args.alphas)

    if args.worker:
        run_worker(args.worker, args.data, alphas, args.folds, args.repeats)
        return

    with tempfile.TemporaryDirectory(prefix="b2m_bench_ridge_") as tmp:
        folder = Path(tmp)
        make_problem(args, folder)
        # The caller's OpenMP settings, the same for every worker: OMP_WAIT_POLICY=PASSIVE made
        # torch's CPU eigh (himalaya's) 4x slower on a quiet 2-core EPYC, so none is forced here.
        worker_env = dict(os.environ)
        results = {}
        for solver in args.solvers:
            command = [sys.executable, __file__, "--worker", solver, "--data", tmp,
                       "--alphas", str(args.alphas), "--folds", str(args.folds), "--repeats", str(args.repeats)]
            done = subprocess.run(command, capture_output=True, text=True, env=worker_env)
            if done.returncode != 0:
                sys.exit(f"{solver} failed:\n{done.stderr}")
            results[solver] = json.loads(done.stdout.strip().splitlines()[-1])
            results[solver]["alphas"] = alpha_indices(np.load(folder / f"{solver}_alphas.npy"), alphas)
            results[solver]["prediction"] = np.load(folder / f"{solver}_prediction.npy")

    print(f"ridge with per-target alphas: {args.samples} samples x {args.features} features x "
          f"{args.targets} targets, {args.alphas} alphas, {args.folds} folds, float32, CPU, "
          f"{args.test_samples} test samples")
    header = ("solver", "fit (s)", "predict (s)", "ratio to himalaya", "peak RSS (MB)", "above inputs (MB)",
              "alphas equal to himalaya", "max rel pred diff vs himalaya", "same, targets with equal alphas")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    reference = results.get("himalaya")
    for solver, r in results.items():
        total = r["fit_s"] + r["predict_s"]
        if reference is None:
            ratio = agree = diff = diff_equal = "n/a"
        else:
            ratio = f"{total / (reference['fit_s'] + reference['predict_s']):.2f}"
            agree = f"{np.mean(r['alphas'] == reference['alphas']):.4f}"
            # Relative to the largest prediction: targets that himalaya shrinks to ~0 would make a
            # per-target ratio meaningless.
            ref_pred = reference["prediction"]
            scale = np.abs(ref_pred).max()
            diff = f"{np.abs(r['prediction'] - ref_pred).max() / scale:.2e}"
            equal = r["alphas"] == reference["alphas"]
            diff_equal = f"{np.abs(r['prediction'] - ref_pred)[:, equal].max(initial=0) / scale:.2e}"
        print(f"| {solver} | {r['fit_s']:.2f} | {r['predict_s']:.2f} | {ratio} | {r['peak_mb']:.0f} | "
              f"{r['peak_mb'] - r['inputs_mb']:.0f} | {agree} | {diff} | {diff_equal} |")
    print(NOTES.format(repeats=args.repeats, omp=worker_env.get("OMP_WAIT_POLICY", "unset"), threads=torch_threads()))


if __name__ == "__main__":
    main()
