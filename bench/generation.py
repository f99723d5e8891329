"""Benchmark: the b2m engine vs transformers' MusicGen `generate`, and vs the matmul floor.

Random weights of the musicgen-small architecture, guidance 3.0, top-k 250 sampling.
For each (dtype, batch), with the attention kernel that the engine's probe picks for it
(`b2m.reconstruction.musicgen.probe`): a greedy parity check (fp32 only: codes equal for a
few steps), then ms/step, seconds of audio per second, peak extra memory, and ratios:
- `ours/floor`: the engine's step against its matrix products alone (every weight of
  the step read once, at the same rows and dtype): how close the loop is to the
  weight-streaming limit.
- `+attn`, `ours/(floor+attn)`: self-attention alone over a cache of the mean length
  (steps / 2) added to the floor: at large batches the KV cache the step must read
  rivals the weights (batch 32, 250 steps, bf16: ~0.8 GB per step vs 0.7 GB of weights).
- `hf/ours`: speedup over transformers' generate at the same dtype and batch.
- `hf+compile`: transformers' generate with its decoder under `torch.compile(dynamic=True)`,
  the strongest reference that runs here (compiled once per dtype, outside the timings).
  transformers' MusicGen generate never builds a static cache for text conditioning
  (`cache_implementation="static"` is ignored), so the issue's static-cache + compile
  reference reduces to compile alone; `--no-compiled-reference` skips it (~3 min of
  compilation per dtype on a 2-core CPU).
- `vs hf fp32`: throughput over transformers' default (fp32) at the same batch.
- Fidelity of each reduced precision (bf16, int8) against fp32 on the same items and seeds:
  `tokens = fp32` (sampled codes equal to fp32's) and `acoustic dist`, the distance of the
  decoded audio's log-mel band means and deviations (`b2m.targets.acoustic`; its modulation
  bands need clips of 2 s or more) to fp32's, relative to the
  distance between two fp32 draws of other seeds (1.0: as different as another sample).
Also measured: how often bf16 tokens change when the same items run in another batch.
`--attention-only STEPS...` prints only self-attention per kernel at those cache lengths.

  python bench/generation.py                       # full table: 250 steps, batch 1 8 32, fp32 bf16
  python bench/generation.py --steps 20 --batches 8 --dtypes fp32 int8
  python bench/generation.py --attention-only 15 125 750 --batches 8 32
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import os
import threading
import time

import numpy as np
import torch
from scipy.signal import resample_poly

from b2m.reconstruction.musicgen.codec import decode_codes
from b2m.reconstruction.musicgen.lm import MusicGenLM, SamplingConfig, attend, attention_kernels
from b2m.reconstruction.musicgen.loaders import lm_from_transformers
from b2m.reconstruction.musicgen.precision import DTYPES, PRECISIONS, apply_precision
from b2m.reconstruction.musicgen.probe import machine_key, resolve_engine
from b2m.targets.acoustic import AcousticSpace
from b2m.targets.pretrained import random_musicgen
GUIDANCE = 3.0
TEXT_LEN = 16  # conditioning tokens


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every 5 ms (CPU), or CUDA's peak."""

    def __init__(self, device: torch.device):
        self.device, self.peak = device, 0

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        self.base, self.running = self._rss(), True

        def watch():
            while self.running:
                self.peak = max(self.peak, self._rss() - self.base)
                time.sleep(0.005)

        self.thread = threading.Thread(target=watch, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self.running = False
            self.thread.join()


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    with PeakRSS(device) as mem:
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    return out, elapsed, mem.peak


def hf_generate(model, ids, mask, steps, greedy):
    """Codes [B, K, F] from transformers' generate; its EnCodec decode is skipped (not part of the LM)."""
    captured = {}
    decode = model.audio_encoder.decode

    def keep_codes(codes, *args, **kwargs):
        captured["codes"] = codes[0]
        return decode(codes[..., :1], *args, **kwargs)  # one frame: negligible, keeps generate's contract

    model.audio_encoder.decode = keep_codes
    try:
        with torch.no_grad():
            sampling = {"do_sample": False} if greedy else {"do_sample": True, "top_k": 250}  # no top_k greedy
            model.generate(input_ids=ids, attention_mask=mask, guidance_scale=GUIDANCE, max_new_tokens=steps,
                           **sampling)
    finally:
        model.audio_encoder.decode = decode
    return captured["codes"]


def attention_floor(lm: MusicGenLM, batch: int, length: int, reps: int, kernel: str | None = None) -> float:
    """Seconds per step for self-attention alone over a cache of `length` steps, all layers (the
    engine's kernel unless `kernel` is given). Each layer has its own cache, as in the step, up to
    2 GiB in all; past that 4 caches (each then far larger than a CPU's last-level cache) are cycled."""
    cfg, dt, dev = lm.cfg, lm.compute_dtype, lm.heads.weight.device
    kernel = kernel or lm.blocks[0].self_attn.kernel
    shape = (2 * batch, cfg.n_heads, max(1, length), cfg.dim // cfg.n_heads)
    layer_bytes = 2 * math.prod(shape) * dt.itemsize
    n_caches = cfg.n_layers if cfg.n_layers * layer_bytes <= 2**31 else 4
    caches = [(torch.randn(shape, dtype=dt, device=dev), torch.randn(shape, dtype=dt, device=dev))
              for _ in range(n_caches)]
    q = torch.randn(shape[0], shape[1], 1, shape[3], dtype=dt, device=dev)
    with torch.no_grad():
        attend(q, *caches[0], None, kernel)  # compiles `fused` for this layout, outside the timing
        start = time.perf_counter()
        for _ in range(reps):
            for layer in range(cfg.n_layers):
                attend(q, *caches[layer % len(caches)], None, kernel)
        if dev.type == "cuda":
            torch.cuda.synchronize()
    return (time.perf_counter() - start) / reps


def attention_table(base: MusicGenLM, dtypes: list[str], batches: list[int], lengths: list[int],
                    device: torch.device) -> None:
    """Self-attention alone, every kernel the probe may pick, per compute dtype, batch and cache length."""
    kernels = attention_kernels(device)
    print(f"\n| dtype | batch | cached steps | {' | '.join(f'{k} ms/step' for k in kernels)} | fastest |")
    print("|" + "---|" * (len(kernels) + 4))
    for dtype_name in [d for d in dtypes if d != "int8"]:  # int8 attends in bf16
        lm = apply_precision(copy.deepcopy(base), dtype_name)
        for batch in batches:
            for length in lengths:
                ms = {k: 1e3 * attention_floor(lm, batch, length, reps=3, kernel=k) for k in kernels}
                cells = " | ".join(f"{ms[k]:.1f}" for k in kernels)
                print(f"| {dtype_name} | {batch} | {length} | {cells} | {min(ms, key=ms.get)} |", flush=True)
        del lm


def floor_step(lm: MusicGenLM, batch: int, reps: int) -> float:
    """Seconds per step for the step's matrix products alone (the model's own layers, so int8 runs
    its int8 kernel): each weight read once, same rows."""
    rows = 2 * batch
    dt, dev = lm.compute_dtype, lm.heads.weight.device
    products = []  # (rows, layer)
    for block in lm.blocks:
        products += [(rows, block.self_attn.qkv), (rows, block.self_attn.out), (batch, block.cross_attn.q),
                     (batch, block.cross_attn.out), (rows, block.fc1), (rows, block.fc2)]
    products.append((rows, lm.heads))
    inputs = {layer.weight.shape[1]: torch.randn(rows, layer.weight.shape[1], dtype=dt, device=dev)
              for _, layer in products}

    def step():
        for r, layer in products:
            layer(inputs[layer.weight.shape[1]][:r])

    with torch.no_grad():
        step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(reps):
            step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
    return (time.perf_counter() - start) / reps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=250, help="generation steps (50 per second of audio)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=PRECISIONS,
                        help="fp32 runs first when listed: the others' fidelity is measured against it")
    parser.add_argument("--parity-steps", type=int, default=6)
    parser.add_argument("--drift-batch", type=int, default=8, help="batch for the bf16 batch-shape drift check")
    parser.add_argument("--no-reference", action="store_true", help="skip transformers' generate timings")
    parser.add_argument("--no-compiled-reference", action="store_true",
                        help="skip transformers' generate with a torch.compile'd decoder")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved timing runs; the fastest is kept")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-cuda-graph", action="store_true", help="CUDA: run the step eagerly, not as a graph")
    parser.add_argument("--attention-only", type=int, nargs="+", metavar="STEPS",
                        help="only the attention kernels' table, at these cache lengths (steps)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)

    chip = torch.cuda.get_device_name(device) if device.type == "cuda" else machine_key(device).split("|")[1]
    print(f"torch {torch.__version__}, device {device} ({chip}), threads {torch.get_num_threads()}, "
          f"steps {args.steps}, guidance {GUIDANCE}, top-k 250 sampling")
    hf = random_musicgen("small", seed=0).to(device)
    base = lm_from_transformers(hf, "random musicgen-small").to(device)  # fp32; copied for each precision
    if args.attention_only:
        attention_table(base, args.dtypes, args.batches, args.attention_only, device)
        return
    n_frames = args.steps - hf.decoder.config.num_codebooks + 1
    sampling = SamplingConfig(top_k=250)
    texts = {}  # batch -> (ids, mask, fp32 conditioning): the same items in every precision
    for batch in args.batches:
        ids = torch.randint(1, 32000, (batch, TEXT_LEN), generator=torch.Generator().manual_seed(batch)).to(device)
        with torch.no_grad():
            cond = hf.text_encoder(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
        texts[batch] = ids, torch.ones_like(ids), cond
    rows_out = []
    codes: dict[tuple[str, int], torch.Tensor] = {}
    hf_fp32_ms: dict[int, float] = {}
    hfc_best_ms: dict[int, float] = {}
    for dtype_name in sorted(args.dtypes, key=lambda d: d != "fp32"):
        ours = apply_precision(copy.deepcopy(base), dtype_name)
        hf_dtype = DTYPES.get(dtype_name)  # transformers has no int8 path here: no reference for it
        if hf_dtype is not None:
            hf.to(hf_dtype)
        for batch in args.batches:
            ids, mask, cond = texts[batch]
            engine = resolve_engine(dtype_name, ours.cfg, device, batch, args.steps, TEXT_LEN, True)
            ours.set_attention(engine.attention)
            seeds = torch.arange(batch)
            parity = "-"
            if dtype_name == "fp32":
                ref = hf_generate(hf, ids[:2], mask[:2], args.parity_steps, greedy=True)
                got = ours.generate(cond[:2], args.parity_steps - 3, guidance_scale=GUIDANCE,
                                    sampling=SamplingConfig(greedy=True))
                parity = "equal" if torch.equal(ref.cpu(), got.cpu()) else "DIFFER"
            reference = not args.no_reference and hf_dtype is not None
            compiled = reference and not args.no_compiled_reference
            ours.generate(cond, 2, guidance_scale=GUIDANCE, sampling=sampling, seeds=seeds)  # warm-up
            if reference:
                hf_generate(hf, ids, mask, 2, greedy=False)  # warm-up
            if compiled:
                with compiled_decoder(hf):  # compiles here (the first time per dtype), not in the timings
                    hf_generate(hf, ids, mask, 4, greedy=False)
            # Repeats interleave the contenders and keep each one's fastest run: on a shared
            # machine the minimum is the least disturbed measurement.
            t_ours = t_hf = t_hfc = floor = attn = float("inf")
            mem_ours = mem_hf = 0
            for _ in range(args.repeats):
                out, t, m = timed(lambda: ours.generate(cond, n_frames, guidance_scale=GUIDANCE, sampling=sampling,
                                                        seeds=seeds, cuda_graph=not args.no_cuda_graph), device)
                t_ours, mem_ours = min(t_ours, t), max(mem_ours, m)
                floor = min(floor, floor_step(ours, batch, reps=5))
                attn = min(attn, attention_floor(ours, batch, args.steps // 2, reps=5))
                if reference:
                    _, t, m = timed(lambda: hf_generate(hf, ids, mask, args.steps, greedy=False), device)
                    t_hf, mem_hf = min(t_hf, t), max(mem_hf, m)
                if compiled:
                    with compiled_decoder(hf):
                        _, t, _ = timed(lambda: hf_generate(hf, ids, mask, args.steps, greedy=False), device)
                    t_hfc = min(t_hfc, t)
            codes[(dtype_name, batch)] = out.cpu()
            ms_ours, ms_floor, ms_attn = 1e3 * t_ours / args.steps, 1e3 * floor, 1e3 * attn
            ms_hf = 1e3 * t_hf / args.steps if reference else None
            ms_hfc = 1e3 * t_hfc / args.steps if compiled else None
            if dtype_name == "fp32" and ms_hf is not None:
                hf_fp32_ms[batch] = ms_hf
            if ms_hfc is not None:  # the fastest compiled reference of any dtype
                hfc_best_ms[batch] = min(hfc_best_ms.get(batch, float("inf")), ms_hfc)
            audio_s = batch * n_frames / 50
            rows_out.append(dict(dtype=dtype_name, attention=engine.attention, batch=batch, parity=parity,
                                 ms_ours=ms_ours, ms_hf=ms_hf, ms_hfc=ms_hfc, ms_floor=ms_floor, ms_attn=ms_attn,
                                 xrt_ours=audio_s / t_ours,
                                 xrt_hf=None if ms_hf is None else audio_s / (ms_hf * args.steps / 1e3),
                                 mem_ours=mem_ours / 2**20, mem_hf=None if ms_hf is None else mem_hf / 2**20,
                                 hf32=hf_fp32_ms.get(batch)))
            print_row(rows_out[-1], header=len(rows_out) == 1)
    best_precision(rows_out, hfc_best_ms)
    hf.to(torch.float32)
    if "fp32" in args.dtypes and len(args.dtypes) > 1:
        fidelity(base, hf, texts, codes, n_frames, sampling)
    if "bf16" in args.dtypes:
        batch_shape_drift(apply_precision(base, "bf16"), hf, device, args.drift_batch, args.steps)


_COMPILED: dict[int, object] = {}  # id(model) -> its decoder's compiled forward, kept across batches


@contextlib.contextmanager
def compiled_decoder(model):
    """Within the block, transformers' `model.decoder.forward` runs under `torch.compile(dynamic=True)`
    (one compilation serves every batch and cache length; a dtype change recompiles)."""
    if id(model) not in _COMPILED:
        _COMPILED[id(model)] = torch.compile(model.decoder.forward, dynamic=True)
    model.decoder.forward = _COMPILED[id(model)]
    try:
        yield
    finally:
        del model.decoder.forward  # the class's own forward again


def best_precision(rows: list[dict], hfc_best_ms: dict[int, float]) -> None:
    """Per batch: the fastest of `auto`'s candidates (int8 apart: it trades fidelity) against
    transformers' fp32 generate and against its fastest compiled generate (any dtype)."""
    for batch in sorted({r["batch"] for r in rows}):
        for label, group in (("fastest exact precision", [r for r in rows if r["dtype"] != "int8"]),
                             ("opt-in weight-only", [r for r in rows if r["dtype"] == "int8"])):
            group = [r for r in group if r["batch"] == batch]
            if not group:
                continue
            best = min(group, key=lambda r: r["ms_ours"])
            vs = "-" if best["hf32"] is None else f"{best['hf32'] / best['ms_ours']:.2f}x"
            vs_c = "" if batch not in hfc_best_ms else \
                f", {hfc_best_ms[batch] / best['ms_ours']:.2f}x its fastest compiled generate"
            print(f"batch {batch}: {label}: {best['dtype']} ({best['attention']} attention), "
                  f"{best['ms_ours']:.1f} ms/step, {vs} transformers' fp32 generate{vs_c}")


def fidelity(lm: MusicGenLM, hf, texts: dict, codes: dict, n_frames: int, sampling: SamplingConfig) -> None:
    """Each reduced precision's sampled codes and decoded audio against fp32's (same items and seeds);
    `lm` (fp32) draws the other-seed samples that set the scale."""
    space = AcousticSpace(n_mels=64, n_groups=8)
    rate = int(hf.audio_encoder.config.sampling_rate)

    def embed(c: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            audio = decode_codes(hf.audio_encoder, c.to(hf.device)).float().cpu().numpy()
        audio = resample_poly(audio, space.sample_rate, rate, axis=1)
        return space.embed_batch(list(audio))[:, 0, :2 * space.n_mels]  # modulation bands need >= 2 s

    print("\n| precision | batch | tokens = fp32 | acoustic dist (fp32, other seeds = 1) |\n|---|---|---|---|")
    for (name, batch), c in codes.items():
        if name == "fp32":
            continue
        ref = codes[("fp32", batch)]
        _, _, cond = texts[batch]
        other = lm.generate(cond, n_frames, guidance_scale=GUIDANCE, sampling=sampling,
                            seeds=torch.arange(batch) + 10_000).cpu()
        e_ref, e_got, e_other = embed(ref), embed(c), embed(other)
        dist = np.linalg.norm(e_got - e_ref, axis=1).mean() / np.linalg.norm(e_other - e_ref, axis=1).mean()
        print(f"| {name} | {batch} | {100 * (c == ref).float().mean().item():.1f}% | {dist:.2f} |")


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def print_row(r: dict, header: bool) -> None:
    if header:
        print("\n| dtype | attention | batch | parity | ours ms/step | hf ms/step | hf+compile ms/step | floor ms/step | ours/floor | +attn ms "
              "| ours/(floor+attn) | hf/ours | hf+compile/ours | vs hf fp32 | ours audio s/s | hf audio s/s | ours peak MiB "
              "| hf peak MiB |")
        print("|" + "---|" * 18)
    hf_ratio = None if r["ms_hf"] is None else r["ms_hf"] / r["ms_ours"]
    hfc_ratio = None if r["ms_hfc"] is None else r["ms_hfc"] / r["ms_ours"]
    vs32 = None if r["hf32"] is None else r["hf32"] / r["ms_ours"]
    print(f"| {r['dtype']} | {r['attention']} | {r['batch']} | {r['parity']} | {r['ms_ours']:.1f} | {fmt(r['ms_hf'], '.1f')} | "
          f"{fmt(r['ms_hfc'], '.1f')} | {r['ms_floor']:.1f} | {r['ms_ours'] / r['ms_floor']:.2f} | {r['ms_attn']:.1f} | "
          f"{r['ms_ours'] / (r['ms_floor'] + r['ms_attn']):.2f} | {fmt(hf_ratio, '.2f')} | {fmt(hfc_ratio, '.2f')} | {fmt(vs32, '.2f')} | "
          f"{r['xrt_ours']:.2f} | {fmt(r['xrt_hf'], '.2f')} | {r['mem_ours']:.0f} | {fmt(r['mem_hf'], '.0f')} |",
          flush=True)


def batch_shape_drift(ours: MusicGenLM, hf, device, batch: int, steps: int) -> None:
    """bf16 (`ours`): the first two items generated inside a batch of `batch` vs as a batch of 2, same seeds."""
    ids = torch.randint(1, 32000, (batch, TEXT_LEN), device=device)
    with torch.no_grad():
        cond = hf.text_encoder(input_ids=ids).last_hidden_state
    n_frames = steps - 3
    seeds = torch.arange(batch) + 100
    sampling = SamplingConfig(top_k=250)
    big = ours.generate(cond, n_frames, guidance_scale=GUIDANCE, sampling=sampling, seeds=seeds)[:2]
    small = ours.generate(cond[:2], n_frames, guidance_scale=GUIDANCE, sampling=sampling, seeds=seeds[:2])
    same = (big == small).float().mean().item()
    differs = (big != small).any(dim=(0, 1)).nonzero()
    first = int(differs[0]) if len(differs) else None
    greedy = SamplingConfig(greedy=True)
    g_big = ours.generate(cond, n_frames, guidance_scale=GUIDANCE, sampling=greedy)[:2]
    g_small = ours.generate(cond[:2], n_frames, guidance_scale=GUIDANCE, sampling=greedy)
    print(f"\nbf16 batch-shape drift (items 0-1 in a batch of {batch} vs a batch of 2, {n_frames} frames): "
          f"top-k sampling: {100 * same:.1f}% tokens equal, first differing frame {first}; "
          f"greedy: {100 * (g_big == g_small).float().mean().item():.1f}% tokens equal")


if __name__ == "__main__":
    main()
