"""Benchmark: the generation job at Brain2Music's size, 5 subjects x 60 test clips x 4 samples x 15 s (1,200 wavs).

    python bench/generation_job.py [--generator small] [--check-generator tiny] [--processes 2]

Every run is `python -m b2m generate` as a user runs it (random-weight generators: no download), on
random predictions of the generator's conditioning width (16 tokens), `generator.precision=auto`.

1. Throughput and memory: the job with `--generator` (`small`: musicgen-small's architecture and size)
   on one batch and on 1 + `--batches` batches of `batch_size` wavs; the difference is the time per
   batch once running, the rest the job's fixed cost (loading, the engine probe). Projected: the fixed
   cost + ceil(1200 / batch_size) batches. Memory: the peak resident set of the job's process.
2. The split: the whole job (1,200 wavs x 15 s) with `--check-generator` (`tiny`: minutes, where the
   small one takes hours here), once in one process and once as `--processes` Lightning DDP processes
   (`trainer.devices=N trainer.strategy=ddp`); the union of the ranks' wavs must equal the one
   process's, byte for byte (sha256), and their manifest records too. Every process of the check runs
   `--check-threads` torch threads (default 1): Lightning gives each DDP rank on a CPU its share of
   the cores, and a product computed with another number of threads rounds differently, which a
   sampled token can amplify; on GPUs each rank computes as one process does.

Timings need a quiet machine. The last line is `projected: <h> h; split identical: yes|no`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from b2m.core.metrics import Standardiser
from b2m.core.runs import write_predictions
from b2m.targets.pretrained import musicgen_config

SUBJECTS, CLIPS, SAMPLES, SECONDS = 5, 60, 4, 15.0
TEXT_LEN = 16
REPO = Path(__file__).resolve().parents[1]


def predictions(root: Path, subjects: int, clips: int, width: int) -> Path:
    """A train-like folder with random predictions `[clips, TEXT_LEN, width]` for `subjects` subjects."""
    rng = np.random.default_rng(0)
    for s in range(1, subjects + 1):
        pred = rng.standard_normal((clips, TEXT_LEN, width)).astype(np.float32)
        ids = [f"blues.{c:05d}_0.00" for c in range(clips)]
        write_predictions(root, f"sub-{s:03d}", pred, pred, ids, Standardiser.fit(pred))
    return root


def generate(preds: Path, out: Path, generator: str, batch_size: int, processes: int = 1,
             threads: int | None = None) -> tuple[float, float]:
    """Run the job (`threads` torch threads per process, if given); returns (seconds, peak resident GiB of
    the job's processes)."""
    args = [f"predictions={preds}", f"out_dir={out}", f"generator={generator}", f"generator.duration_s={SECONDS}",
            f"generator.n_samples={SAMPLES}", f"generator.batch_size={batch_size}", "trainer.accelerator=cpu"]
    if processes > 1:
        args += [f"trainer.devices={processes}", "trainer.strategy=ddp"]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "b2m", "generate", *args], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, HF_HUB_OFFLINE="1", **({"OMP_NUM_THREADS": str(threads)} if threads else {})))
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"generate failed:\n{proc.stderr[-3000:]}")
    # The largest child waited for so far: each measured job runs after the previous one ended.
    return seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2 ** 20


def measure(tmp: Path, generator: str, bs: int, batches: int, n_wavs: int) -> float:
    """Time the job on 1 and 1 + `batches` batches and print the table; returns the projected seconds."""
    width = musicgen_config(generator).text_encoder.d_model
    one, more = bs // SAMPLES, (1 + batches) * bs // SAMPLES  # clips of one subject
    t1, _ = generate(predictions(tmp / "p1", 1, one, width), tmp / "g1", generator, bs)
    t2, peak = generate(predictions(tmp / "p2", 1, more, width), tmp / "g2", generator, bs)
    per_batch = (t2 - t1) / batches
    fixed = max(0.0, t1 - per_batch)
    projected = fixed + math.ceil(n_wavs / bs) * per_batch
    engine = next(iter(records(tmp / "g2").values()))
    print(f"generator {generator} (random weights), batch {bs}, {SECONDS:.0f} s wavs, "
          f"engine {engine['precision']}/{engine['attention']}, {os.cpu_count()} CPUs")
    print("\n| measure | value |\n|---|---|")
    print(f"| job of 1 batch ({bs} wavs) | {t1:.1f} s |")
    print(f"| job of {1 + batches} batches ({(1 + batches) * bs} wavs) | {t2:.1f} s |")
    print(f"| per batch, running | {per_batch:.1f} s ({bs * SECONDS / per_batch:.3f} s of audio per s) |")
    print(f"| fixed cost (load, probe) | {fixed:.1f} s |")
    print(f"| peak resident memory | {peak:.2f} GiB |")
    print(f"| projected: {SUBJECTS} subjects x {CLIPS} clips x {SAMPLES} samples ({n_wavs} wavs) | "
          f"{projected / 3600:.2f} h |")
    return projected


def records(out: Path) -> dict[tuple, dict]:
    lines = (out / "manifest.jsonl").read_text().splitlines()
    return {(r["subject"], r["clip_id"], r["k"]): r for r in map(json.loads, lines)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default="small")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=2, help="batches beyond the first, timed")
    parser.add_argument("--check-generator", default="tiny")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--check-clips", type=int, default=CLIPS, help="clips per subject of the split check")
    parser.add_argument("--check-only", action="store_true", help="only the split check (2.)")
    parser.add_argument("--check-threads", type=int, default=1,
                        help="torch threads of every process in the split check (0: torch's and Lightning's defaults)")
    args = parser.parse_args()
    n_wavs = SUBJECTS * CLIPS * SAMPLES
    bs = args.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        projected = math.nan
        if not args.check_only:
            projected = measure(tmp, args.generator, bs, args.batches, n_wavs)

        width = musicgen_config(args.check_generator).text_encoder.d_model
        preds = predictions(tmp / "p", SUBJECTS, args.check_clips, width)
        t_one, _ = generate(preds, tmp / "one", args.check_generator, bs, threads=args.check_threads)
        t_split, _ = generate(preds, tmp / "split", args.check_generator, bs, args.processes, args.check_threads)
        single, split = records(tmp / "one"), records(tmp / "split")
        wavs = sorted(p.relative_to(tmp / "one") for p in (tmp / "one").rglob("*.wav"))
        same_files = wavs == sorted(p.relative_to(tmp / "split") for p in (tmp / "split").rglob("*.wav"))
        equal = sum((tmp / "one" / w).read_bytes() == (tmp / "split" / w).read_bytes() for w in wavs)
        identical = same_files and single == split and equal == len(wavs) == SUBJECTS * args.check_clips * SAMPLES
        print(f"\nsplit check, generator {args.check_generator}, {args.check_threads or 'default'} thread(s) per process: "
              f"{len(wavs)} wavs; one process {t_one:.1f} s, {args.processes} DDP processes {t_split:.1f} s; "
              f"wavs byte-identical: {equal} of {len(wavs)}; "
              f"manifest records equal: {'yes' if single == split else 'no'}")
    shown = "not measured" if math.isnan(projected) else f"{projected / 3600:.2f} h"
    print(f"projected: {shown}; split identical: {'yes' if identical else 'no'}")


if __name__ == "__main__":
    main()
