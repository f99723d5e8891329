"""Benchmark: a retrieval index of a 10,000-file mp3 database, built sequentially, in parallel and in shards.

    python bench/index.py [--files 10000] [--target acoustic] [--shards 2] [--cache data/bench_index]

The database imitates FMA's (`fma_large/<3 digits>/<6 digits>.mp3`, 30 s of 44.1 kHz stereo mp3). It
is made once and cached in `--cache` (a second run reuses it): `--distinct` demo tracks
(`b2m.demo.music`, 10 genres) encoded as mp3, each database file one of them behind its own ID3 tag,
so that every file is a distinct file whose decoding costs what a real one's does (encoding 10,000
distinct 30 s mp3 files would take about 4 h here: 1.5 s each). Then, each into a fresh index folder
(`b2m.reconstruction.retrieval.build_index`, the run's target space):

- `sequential`: one process decodes and embeds (`workers=0`);
- `parallel`: `--workers` processes decode (default: one per CPU) while the main process embeds;
- `shards`: `--shards` processes build one shard each at the same time (`workers=0` each), then a
  build without shards completes the index (it finds nothing left to embed).

It prints files per second for each, and checks the sharded index equal to the single build's (the
same paths in the same order, the same embeddings bit for bit). Timings need a quiet machine.
The last line is `parallel/sequential: <r>x; shards identical: yes|no`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

from b2m.core.clips import GENRES
from b2m.core.config import group_config
from b2m.reconstruction.retrieval import RetrievalIndex, build_index
from b2m.targets import build_space

RATE = 44100  # FMA's mp3 files: 44.1 kHz stereo, 30 s
SECONDS = 30.0


def _id3_tag(text: str) -> bytes:
    """A minimal ID3v2.3 tag holding one TXXX frame: what makes each database file its own file."""
    body = b"\x00b2m\x00" + text.encode()
    frame = b"TXXX" + struct.pack(">I", len(body)) + b"\x00\x00" + body
    size = len(frame)
    return b"ID3\x03\x00\x00" + bytes([(size >> 21) & 127, (size >> 14) & 127, (size >> 7) & 127, size & 127]) + frame


def _encode(args: tuple[int, Path]) -> Path:
    """Demo track `i` (genre i % 10) as a 30 s 44.1 kHz stereo mp3 at `path`."""
    from b2m.demo.music import render_track

    i, path = args
    left = render_track(GENRES[i % len(GENRES)], i // len(GENRES), sample_rate=RATE, seconds=SECONDS)
    right = np.roll(left, int(0.007 * RATE))  # a 7 ms delay: the channels differ, as real stereo does
    sf.write(path, np.stack([left, right], axis=1), RATE, format="MP3")
    return path


def make_database(cache: Path, n_files: int, distinct: int) -> Path:
    """The cached database folder with `n_files` mp3 files (made once per size)."""
    done = cache / "database.json"
    spec = {"files": n_files, "distinct": distinct, "rate": RATE, "seconds": SECONDS}
    root = cache / "fma"
    if done.is_file() and json.loads(done.read_text()) == spec:
        return root
    shutil.rmtree(root, ignore_errors=True)
    pool = cache / "pool"
    pool.mkdir(parents=True, exist_ok=True)
    todo = [(i, pool / f"{i:04d}.mp3") for i in range(distinct) if not (pool / f"{i:04d}.mp3").is_file()]
    print(f"encoding {len(todo)} of {distinct} distinct tracks (cached in {pool})", flush=True)
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as ex:
        list(ex.map(_encode, todo))
    tracks = [(pool / f"{i:04d}.mp3").read_bytes() for i in range(distinct)]
    for i in range(n_files):
        path = root / f"{i // 1000:03d}" / f"{i:06d}.mp3"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_id3_tag(f"{i:06d}") + tracks[i % distinct])
    done.write_text(json.dumps(spec))
    return root


def timed_build(database: Path, index: Path, target: str, **kwargs) -> float:
    start = time.perf_counter()
    build_index(database, index, build_space(group_config("target", target)), **kwargs)
    return time.perf_counter() - start


def sharded_build(database: Path, index: Path, target: str, n: int) -> float:
    """`n` processes at once, each building its shard, then the completing build; seconds in all."""
    code = ("import sys; from pathlib import Path; from b2m.core.config import group_config; "
            "from b2m.reconstruction.retrieval import Shard, build_index; from b2m.targets import build_space; "
            "build_index(Path(sys.argv[1]), Path(sys.argv[2]), build_space(group_config('target', sys.argv[3])), "
            "shard=Shard(int(sys.argv[4]), int(sys.argv[5])))")
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", code, str(database), str(index), target, str(i), str(n)])
             for i in range(n)]
    if any(p.wait() for p in procs):
        raise SystemExit("a shard build failed")
    build_index(database, index, build_space(group_config("target", target)))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10000)
    parser.add_argument("--distinct", type=int, default=100, help="distinct encoded tracks the files repeat")
    parser.add_argument("--target", default="acoustic", help="the embedding space (b2m/conf/target)")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=Path("data/bench_index"))
    args = parser.parse_args()

    database = make_database(args.cache, args.files, args.distinct)
    n = args.files
    print(f"{n} mp3 files of {SECONDS:.0f} s ({RATE} Hz stereo) in {database}; space {args.target}; "
          f"{os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(dir=args.cache) as tmp:
        tmp = Path(tmp)
        seconds = {
            "sequential (workers=0)": timed_build(database, tmp / "sequential", args.target, workers=0),
            f"parallel (workers={args.workers})": timed_build(database, tmp / "parallel", args.target,
                                                             workers=args.workers),
            f"{args.shards} shards at once + completing build": sharded_build(database, tmp / "sharded",
                                                                              args.target, args.shards),
        }
        single = RetrievalIndex.load(tmp / "parallel", device="cpu", precision="fp32")
        sequential = RetrievalIndex.load(tmp / "sequential", device="cpu", precision="fp32")
        sharded = RetrievalIndex.load(tmp / "sharded", device="cpu", precision="fp32")
        identical = (sharded.paths == single.paths == sequential.paths and len(single) == n
                     and np.array_equal(sharded.unit.numpy(), single.unit.numpy())
                     and np.array_equal(sequential.unit.numpy(), single.unit.numpy()))

    base = seconds["sequential (workers=0)"]
    print(f"\n| build | seconds | files/s | x sequential |\n|---|---|---|---|")
    for name, s in seconds.items():
        print(f"| {name} | {s:.1f} | {n / s:.1f} | {base / s:.2f} |")
    ratio = base / seconds[f"parallel (workers={args.workers})"]
    print(f"\n100,000 files at the parallel rate: {1e5 * seconds[f'parallel (workers={args.workers})'] / n / 3600:.2f} h "
          f"on this machine")
    print(f"parallel/sequential: {ratio:.2f}x; shards identical: {'yes' if identical else 'no'}")


if __name__ == "__main__":
    main()
