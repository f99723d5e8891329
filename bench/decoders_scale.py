"""Benchmark: the decoders' own cost at the real size, on synthetic windows.

    python bench/decoders_scale.py [--subjects 5] [--voxels 64000] [--clips 480] [--window 10]
                                   [--decoders ridge ridge_aligned contrastive mlp transformer] [--epochs 2]

Each decoder runs in its own process on random windows `[clips, window, voxels]` (float32, one
array per subject, voxel counts spread over 0.85-1.0 x `--voxels` as cortex masks differ) with
acoustic-sized targets `[clips, 1, 112]`, and fits every subject: the closed forms in closed form
(`ridge_aligned` with all subjects' alignments), the trained decoders their ridge start on 90% of
the clips and `--epochs` epochs of full-batch steps over each subject. Prints seconds and peak
memory (max RSS) per decoder, and the memory of the windows themselves, beside this machine's RAM.
The data's preprocessing is `bench/scale.py`'s.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

GIB = 2**30


def child(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from b2m.core.config import compose
    from b2m.decoders import build_decoder

    rng = np.random.default_rng(0)
    sizes = [int(args.voxels * f) for f in np.linspace(1.0, 0.85, args.subjects)]
    xs = [rng.standard_normal((args.clips, args.window, v), dtype=np.float32) for v in sizes]
    y = rng.standard_normal((args.clips, 1, 112)).astype(np.float32)
    ids = [f"clip{i}" for i in range(args.clips)]
    decoder = build_decoder(compose("train", [f"decoder={args.decoder}"]).decoder, sizes, args.window, (1, 112))
    start = time.perf_counter()
    if decoder.closed_form:
        decoder.fit_subjects(xs, [y] * len(xs), [ids] * len(xs))
    else:
        n = int(0.9 * args.clips)
        decoder.set_target_stats(torch.from_numpy(y[:n]))
        for s, x in enumerate(xs):
            decoder.start_from(s, x[:n], y[:n])
        optimizer = decoder.configure_optimizers()["optimizer"]
        for _ in range(args.epochs):
            for s, x in enumerate(xs):
                loss = decoder.training_step({"x": torch.from_numpy(x[:n]), "y": torch.from_numpy(y[:n]),
                                              "subject": torch.full((n,), s)}, 0)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "peak": peak, "data": sum(x.nbytes for x in xs)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=5)
    parser.add_argument("--voxels", type=int, default=64000)
    parser.add_argument("--clips", type=int, default=480)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--decoders", nargs="+", default=["ridge", "ridge_aligned", "contrastive", "mlp",
                                                           "transformer"])
    parser.add_argument("--decoder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.decoder:
        child(args)
        return
    ram = int(subprocess.run(["awk", "/MemTotal/ {print $2}", "/proc/meminfo"], capture_output=True, text=True,
                             check=True).stdout) * 1024
    print(f"{args.subjects} subjects x {args.voxels} voxels x {args.window} TRs x {args.clips} clips; "
          f"machine RAM {ram / GIB:.1f} GiB\n")
    print("| decoder | seconds | peak memory (GiB) | of which the windows (GiB) |")
    print("|---|---|---|---|")
    for name in args.decoders:
        cmd = [sys.executable, __file__, "--decoder", name, *[f"--{k}={getattr(args, k)}" for k in
                                                               ("subjects", "voxels", "clips", "window", "epochs")]]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            reason = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"
            print(f"| {name} | failed: {reason} | | |")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {name} | {r['seconds']:.0f} | {r['peak'] / GIB:.1f} | {r['data'] / GIB:.1f} |", flush=True)


if __name__ == "__main__":
    main()
