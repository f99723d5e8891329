"""Retrieval speed: cosine top-10 over an FMA-large-sized database, against numpy and the bare product.

100,000 random unit vectors of D = 768 and 300 queries (60 test clips x 5 subjects).
Compares `RetrievalIndex.query` (the default `precision="auto"`, and `"fp32"`, the exact product
alone) with a plain numpy baseline (similarities, full argsort) and with the bare similarity
products `queries @ database.T` in torch, fp32 (the floor of a search that computes every
similarity exactly) and bf16. Goals: query >= 10x faster than numpy argsort, the default query
<= 0.6x the bare fp32 product, and every top-10 identical to numpy's.

    python bench/retrieval.py [--device cpu|cuda] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from b2m.reconstruction.retrieval import RetrievalIndex

M, D, Q, K = 100_000, 768, 300, 10


def best_time(fn, repeats: int) -> tuple[float, object]:
    """Fastest of `repeats` runs, in seconds, and the last result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times), out


def rss_mib(field: str) -> float:
    """`VmRSS` (now) or `VmHWM` (peak since the last reset) of this process, MiB."""
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_extra_mib(fn) -> float:
    """Peak resident memory that `fn` adds on top of what is resident before it, MiB."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = rss_mib("VmRSS")
    fn()
    return rss_mib("VmHWM") - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default=None, help="torch device (default: cuda when present)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    db = rng.standard_normal((M, D), dtype=np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    queries = rng.standard_normal((Q, 1, D), dtype=np.float32)
    paths = [f"fma/{i:06d}.mp3" for i in range(M)]

    def numpy_build():
        return db / np.linalg.norm(db, axis=1, keepdims=True)

    def numpy_query(unit):
        q = queries.reshape(Q, D)
        sims = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ unit.T
        return np.argsort(-sims, axis=1)[:, :K]

    t_np_build, np_unit = best_time(numpy_build, args.repeats)
    t_build, index = best_time(lambda: RetrievalIndex(db, paths, device=args.device), args.repeats)
    exact = RetrievalIndex(db, paths, device=args.device, precision="fp32")
    q_dev = torch.from_numpy(queries.reshape(Q, D)).to(index.device)
    q_low, db_low = q_dev.bfloat16(), exact.unit.bfloat16()

    t_np_query, np_top = best_time(lambda: numpy_query(np_unit), args.repeats)
    t_query, (top, _, _) = best_time(lambda: index.query(queries, K), args.repeats)
    t_exact, (top_exact, _, _) = best_time(lambda: exact.query(queries, K), args.repeats)
    t_product, _ = best_time(lambda: q_dev @ exact.unit.T, args.repeats)
    t_low, _ = best_time(lambda: q_low @ db_low.T, args.repeats)
    same = np.array_equal(top, np_top) and np.array_equal(top_exact, np_top)
    assert same, "top-10 differs from the numpy reference"

    mem_np = peak_extra_mib(lambda: numpy_query(np_unit)) if index.device.type == "cpu" else float("nan")
    mem_q = peak_extra_mib(lambda: index.query(queries, K)) if index.device.type == "cpu" else float("nan")
    index_mib = index.unit.element_size() * index.unit.nelement() / 2 ** 20

    print(f"database {M} x {D} float32 ({index_mib:.0f} MiB on {index.device}), {Q} queries, top-{K}; "
          f"torch threads {torch.get_num_threads()}; best of {args.repeats}; precision=auto chose "
          f"{index.precision}; every top-10 identical to numpy: yes")
    print(f"{'step':<40}{'seconds':>10}{'peak extra MiB':>16}{'vs fp32 product':>18}")
    rows = [
        ("build: numpy normalise", t_np_build, None),
        ("build: RetrievalIndex (auto)", t_build, None),
        ("query: numpy sims + argsort", t_np_query, mem_np),
        ("query: bare product fp32 q @ db.T", t_product, None),
        ("query: bare product bf16 q @ db.T", t_low, None),
        ("query: RetrievalIndex fp32", t_exact, None),
        (f"query: RetrievalIndex auto ({index.precision})", t_query, mem_q),
    ]
    for name, seconds, mem in rows:
        mem_text = f"{mem:.0f}" if mem is not None else ""
        ratio = f"{seconds / t_product:.2f}x" if name.startswith("query") else ""
        print(f"{name:<40}{seconds:>10.4f}{mem_text:>16}{ratio:>18}")
    print(f"speed-up over numpy argsort: {t_np_query / t_query:.1f}x (goal >= 10x); "
          f"default query / bare fp32 product: {t_query / t_product:.2f}x (goal <= 0.6x)")

if __name__ == "__main__":
    main()
