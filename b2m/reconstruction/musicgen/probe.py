"""`generator.precision: auto`: the fastest precision and attention kernel, measured here.

Which is fastest depends on the machine: bf16 ran 2-3x faster than fp32 on one 2-core AMD
EPYC and 1.35x slower on a 2-core Intel Xeon with the same instruction flags, CPU SDPA loses
to plain products in bf16 but not always in fp32, and the compiled `fused` kernel wins only
once the cache is long enough to outweigh its call overhead (batch 32, bf16: even at 30
steps, 1.4x faster at 250). So nothing is guessed: each candidate (precision x attention
kernel, `lm.attention_kernels`) runs steps of a model with the real widths, PROBE_LAYERS
layers of random weights, at the real batch rows and at mid-generation (the mean KV-cache
length), in interleaved rounds (`b2m.core.timing.fastest`). The incumbent, fp32 with the first
kernel (fp32 is the reference's arithmetic), is kept unless a candidate is faster beyond the
spread of the timings, so kernels within noise of each other do not swap from run to run. A
fixed precision (fp32, bf16, fp16, int8) only probes the kernel. A `fused` candidate whose
compilation fails is left out (the reason is kept in the cache under `unavailable`).

Results are cached in `<cache_root>/engine_probe.json`, keyed by the candidates, the machine
(CPU model or GPU name, torch threads, torch version), the model widths, rows and steps: a
machine probes a shape once, and DDP ranks on one machine, which wait on a file lock, agree on
the choice. Timings that look disturbed (other work on the cores) are not cached: that run uses
the incumbent, and the next one probes again.
"""

from __future__ import annotations

import fcntl
import json
import platform
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from b2m.core.io import write_text
from b2m.core.timing import fastest
from b2m.reconstruction.musicgen.lm import LMConfig, MusicGenLM, attention_kernels
from b2m.reconstruction.musicgen.precision import apply_precision, supported
from b2m.targets.pretrained import cache_root

PROBE_LAYERS = 2
PROBE_FILE = "engine_probe.json"


@dataclass(frozen=True)
class Engine:
    """How the LM runs: a precision name (`precision.PRECISIONS`) and an attention kernel."""

    precision: str
    attention: str

    def apply(self, lm: MusicGenLM) -> MusicGenLM:
        return apply_precision(lm, self.precision).set_attention(self.attention)


def machine_key(device: torch.device) -> str:
    """What the timings depend on besides the shape: the chip, torch's threads and version."""
    if device.type == "cuda":
        chip = torch.cuda.get_device_name(device)
    else:
        chip = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")),
                    platform.processor() or platform.machine())
    return f"{device.type}|{chip}|threads={torch.get_num_threads()}|torch={torch.__version__}"


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def prepare_step(cfg: LMConfig, engine: Engine, device: torch.device, batch: int, n_steps: int, text_len: int,
                 guidance: bool) -> Callable[[], None]:
    """One step at mid-generation of a random PROBE_LAYERS-layer model run by `engine`, as a call to time
    (already run once: compiled kernels and buffers are warm)."""
    torch.manual_seed(0)
    lm = engine.apply(MusicGenLM(replace(cfg, n_layers=min(cfg.n_layers, PROBE_LAYERS))).to(device))
    with torch.no_grad():
        state = lm.new_state(torch.randn(batch, text_len, cfg.cond_dim), n_steps - cfg.n_codebooks + 1,
                             guidance_scale=3.0 if guidance else 1.0, seeds=torch.arange(batch))

    @torch.no_grad()
    def step() -> None:
        state.t.fill_(n_steps // 2)
        lm.advance(state, kv_len=n_steps // 2 + 1)
        if device.type == "cuda":
            torch.cuda.synchronize()

    step()
    return step


def resolve_engine(precision: str, cfg: LMConfig, device: torch.device, batch: int, n_steps: int,
                   text_len: int, guidance: bool) -> Engine:
    """The Engine for `precision` (a name or `auto`), probing (or reading the cache) as needed."""
    precisions = supported(device) if precision == "auto" else [precision]
    kernels = attention_kernels(device)
    key = json.dumps({"machine": machine_key(device), "precisions": precisions, "kernels": kernels, "dim": cfg.dim,
                      "heads": cfg.n_heads, "ffn": cfg.ffn_dim, "card": cfg.card, "codebooks": cfg.n_codebooks,
                      "batch": batch, "steps": n_steps, "text_len": text_len, "guidance": guidance},
                     sort_keys=True)
    path = cache_root() / PROBE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one rank probes, the others then read its answer
        try:
            cache = json.loads(path.read_text()) if path.is_file() else {}
        except (json.JSONDecodeError, OSError):
            cache = {}  # a damaged cache is only a cache: probe again
        if key not in cache:
            # The incumbent first: fp32 (the reference's arithmetic) where it is a candidate.
            engines = [Engine(p, a) for p in sorted(precisions, key=lambda p: p != "fp32") for a in kernels]
            steps, unavailable = {}, {}
            for engine in engines:
                name = f"{engine.precision}/{engine.attention}"
                try:
                    steps[name] = prepare_step(cfg, engine, device, batch, n_steps, text_len, guidance)
                except RuntimeError as err:  # torch.compile's failures (no C++ compiler, say) are RuntimeErrors
                    if engine.attention != "fused":
                        raise
                    unavailable[name] = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200]}"
            measured = fastest(steps)
            if measured.disturbed:
                warnings.warn(f"generator.precision=auto: the engine probe's timings spread by up to "
                              f"{max(measured.spread.values()):.0%} (other work on this machine?); this run uses "
                              f"{measured.name} and the next one probes again", stacklevel=2)
                return Engine(*measured.name.split("/"))
            cache[key] = {"choice": measured.name, "seconds_per_step": measured.seconds, "spread": measured.spread,
                          "unavailable": unavailable}
            write_text(path, json.dumps(cache, indent=1, sort_keys=True))
    choice = cache[key]["choice"]
    precision_name, attention = choice.split("/")
    return Engine(precision_name, attention)
