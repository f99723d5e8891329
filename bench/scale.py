"""Benchmark: every stage on one subject at the real dataset's size, time and peak memory.

    python bench/scale.py [--data DIR] [--stages preprocess targets ridge mlp transformer encoding]
                          [--epochs 2] [--keep]

The subject is the demo's subject 1 at `--size full` in fMRIPrep's layout: 96x96x68 voxels,
410 volumes per run, 12 Training + 6 Test runs of float32 gzipped BOLD (1.0 GiB per run
once decompressed), about 60k cortex voxels, confound regression on (motion, wm_csf,
high_pass). Without --data it is written to a temporary folder (about 17 GB, 15 minutes);
with --data an existing build is reused or completed.

Each stage runs in its own process, so its peak memory (max RSS) is its own; "working"
is that peak less the peak of a process that only imports the stage's modules.
- preprocess: read, regress and z-score the 18 runs into a fresh cache (`load_preprocessed`).
- targets: the acoustic embedding of every clip (cached for the stages after it).
- ridge, mlp, transformer: `train.py` on the cached data (the networks for `--epochs` epochs).
- encoding: `evaluate.py` on the ridge run with the encoding analysis (acoustic space, 1000
  permutations) and without the report.
Goals: each stage within this machine's 24 GiB; preprocessing's working memory within 1.5x
the size of one run.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GIB = 2**30
RUN_BYTES = 96 * 96 * 68 * 410 * 4  # one decompressed float32 run
STAGES = ("preprocess", "targets", "ridge", "mlp", "transformer", "encoding")
IMPORTS = {"preprocess": "b2m.data.subjects", "targets": "b2m.targets.dataset", "ridge": "b2m.jobs.train",
           "mlp": "b2m.jobs.train", "transformer": "b2m.jobs.train", "encoding": "b2m.jobs.evaluate"}


def data_overrides(root: Path, cache: Path) -> list[str]:
    mask = root / "derivatives" / "demo" / "{subject}" / "{subject}_desc-cortex_mask.nii.gz"
    return ["data=fmriprep", f"data.root={root}", f"data.cache_dir={cache}", "data.subjects=[1]",
            f"data.preprocess.mask='{mask}'"]


def stage(name: str, root: Path, work: Path, epochs: int) -> dict:
    """Run one stage in this process; returns its seconds and a note."""
    from b2m.core.config import compose

    data = data_overrides(root, work / "cache")
    start = time.perf_counter()
    note = ""
    if name == "preprocess":
        from b2m.data.subjects import load_preprocessed

        pre = load_preprocessed(compose("train", data).data, "sub-001")
        runs = list(pre.data.runs.values())
        note = f"{len(runs)} runs, V = {pre.data.n_voxels}, T = {sum(len(r) for r in runs)}"
    elif name == "targets":
        from b2m.data.subjects import load_preprocessed
        from b2m.targets import build_space
        from b2m.targets.dataset import clip_targets

        cfg = compose("train", data)
        pre = load_preprocessed(cfg.data, "sub-001")
        clips = sorted({p.clip for events in pre.events.values() for p in events})
        emb = clip_targets(cfg.data, build_space(cfg.target), clips)
        note = f"{len(emb)} clips, {next(iter(emb.values())).shape}"
    elif name in ("ridge", "mlp", "transformer"):
        from b2m.jobs.train import train

        extra = [] if name == "ridge" else [f"decoder.max_epochs={epochs}"]
        metrics = train(compose("train", data + [f"decoder={name}", f"out_dir={work / name}",
                                                 "trainer.logger=none"] + extra))
        note = f"test/id_acc {metrics['test/id_acc']:.3f}" + ("" if name == "ridge" else f" after {epochs} epochs")
    elif name == "encoding":
        from b2m.jobs.evaluate import evaluate

        metrics = evaluate(compose("evaluate", [f"run={work / 'ridge'}", f"out_dir={work / 'evaluate'}",
                                                "report.enabled=false", "genre=false", "logo=false",
                                                "encoding.enabled=true", "encoding.spaces=[acoustic]"]))
        note = f"mean r {metrics['encoding/acoustic/mean_r']:.3f}"
    return {"seconds": time.perf_counter() - start, "note": note}


def peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def child(args: argparse.Namespace) -> None:
    if args.imports_only:
        __import__(IMPORTS[args.child])
        result = {}
    else:
        result = stage(args.child, args.data, args.work, args.epochs)
    print(json.dumps({**result, "peak": peak_bytes()}))


def measure(name: str, args: argparse.Namespace, work: Path, imports_only: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--child", name, "--data", str(args.data), "--work", str(work),
           "--epochs", str(args.epochs)] + (["--imports-only"] if imports_only else [])
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"stage {name} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="the full-size fMRIPrep demo (built there if incomplete)")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the network decoders")
    parser.add_argument("--keep", action="store_true", help="keep the cache and runs of this benchmark")
    parser.add_argument("--child", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--imports-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    scratch = Path(tempfile.mkdtemp(prefix="b2m-bench-scale-"))
    if args.data is None:
        args.data = scratch / "data"
    print(f"building (or checking) the full-size subject in {args.data} ...", flush=True)
    subprocess.run([sys.executable, "-m", "b2m.demo", "--size", "full", "--layout", "fmriprep", "--subjects", "1",
                    "--out", str(args.data)], check=True)
    work = scratch / "work"
    rows = []
    try:
        for name in args.stages:
            base = measure(name, args, work, imports_only=True)["peak"]
            result = measure(name, args, work)
            rows.append((name, result, base))
            print(f"  {name}: {result['seconds']:.0f} s", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
            if args.data.is_relative_to(scratch):
                shutil.rmtree(scratch, ignore_errors=True)
    print(f"\none subject at the real size; one run = {RUN_BYTES / GIB:.2f} GiB (float32); this machine: "
          f"{_machine()}")
    print("| stage | seconds | peak GiB | working GiB | working / run | within 24 GiB | notes |")
    print("|---|---|---|---|---|---|---|")
    for name, r, base in rows:
        working = max(r["peak"] - base, 0)
        print(f"| {name} | {r['seconds']:.0f} | {r['peak'] / GIB:.2f} | {working / GIB:.2f} | "
              f"{working / RUN_BYTES:.2f}x | {'yes' if r['peak'] < 24 * GIB else 'NO'} | {r['note']} |")
    print("goal: preprocessing's working memory <= 1.5x one run; every stage within 24 GiB")


def _machine() -> str:
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        model = "unknown CPU"
    import os

    return f"{model}, {os.cpu_count()} cores"


if __name__ == "__main__":
    main()
