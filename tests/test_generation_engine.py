"""The engine's precisions (int8 against torchao) and the `auto` probe with its cache."""

import functools
import json
import math

import pytest
import torch

from b2m.reconstruction.musicgen import lm as lm_module
from b2m.reconstruction.musicgen import probe
from b2m.reconstruction.musicgen.batch import config_hash
from b2m.reconstruction.musicgen.lm import ATTENTION_KERNELS
from b2m.reconstruction.musicgen.loaders import lm_from_transformers
from b2m.reconstruction.musicgen.precision import Int8Linear, apply_precision
from b2m.reconstruction.musicgen.probe import PROBE_FILE, Engine, resolve_engine
from b2m.targets.pretrained import random_musicgen
from b2m.core import timing
from b2m.core.config import group_config
from helpers.clock import FakeClock


@pytest.fixture(scope="module")
def reference():
    return random_musicgen("tiny", seed=0)


def test_int8_linear_matches_torchao():
    torchao = pytest.importorskip("torchao.quantization")
    torch.manual_seed(0)
    linear = torch.nn.Linear(256, 384, bias=False)
    x = torch.randn(8, 256)
    exact = linear(x)
    ours = Int8Linear(linear)
    assert ours.weight.dtype == torch.int8 and ours.weight.shape == (384, 256)
    assert ours.weight.element_size() * ours.weight.numel() == linear.weight.numel()  # a quarter of fp32's bytes
    theirs = torch.nn.Sequential(torch.nn.Linear(256, 384, bias=False)).to(torch.bfloat16)
    theirs[0].weight.data.copy_(linear.weight.to(torch.bfloat16))
    torchao.quantize_(theirs, torchao.Int8WeightOnlyConfig())
    got, ref = ours(x.to(torch.bfloat16)).float(), theirs(x.to(torch.bfloat16)).float()
    scale = exact.abs().max().item()
    torch.testing.assert_close(got, ref, rtol=0, atol=0.02 * scale)
    torch.testing.assert_close(got, exact, rtol=0, atol=0.03 * scale)


def test_int8_precision_quantises_the_step_and_stays_close(reference):
    cond = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(1))
    tokens = torch.randint(0, 2048, (2, 4, 4), generator=torch.Generator().manual_seed(2))
    logits = {}
    for precision in ("fp32", "int8"):
        lm = apply_precision(lm_from_transformers(reference), precision)
        with torch.no_grad():
            state = lm.new_state(cond, n_frames=1, guidance_scale=1.0)
            for t in range(4):
                out = lm.forward_step(state, tokens[:, :, t], kv_len=t + 1)
                state.t += 1
        logits[precision] = out
    assert isinstance(lm.heads, Int8Linear) and isinstance(lm.blocks[0].self_attn.qkv, Int8Linear)
    assert isinstance(lm.cond_proj, torch.nn.Linear)  # has a bias and runs once: not quantised
    assert lm.compute_dtype == torch.bfloat16 and out.dtype == torch.float32
    scale = logits["fp32"].abs().max().item()
    torch.testing.assert_close(logits["int8"], logits["fp32"], rtol=0, atol=0.05 * scale)
    codes = lm.generate(cond, 6, seeds=torch.arange(2))
    assert codes.shape == (2, 4, 6) and codes.min() >= 0 and codes.max() < 2048


def probe_args(reference, precision="auto"):
    cfg = lm_from_transformers(reference).cfg
    return dict(precision=precision, cfg=cfg, device=torch.device("cpu"), batch=2, n_steps=12, text_len=3,
                guidance=True)


def fake_probe(monkeypatch, measured: dict[tuple[str, str], list[float]]) -> list:
    """The probe's steps take `measured` seconds (one per round, on a fake clock); returns the engines built."""
    clock, built = FakeClock({f"{p}/{a}": times for (p, a), times in measured.items()}), []
    steps = clock.candidates()

    def prepare(cfg, engine, *args):
        built.append(engine)
        return steps[f"{engine.precision}/{engine.attention}"]

    monkeypatch.setattr(probe, "prepare_step", prepare)
    monkeypatch.setattr(probe, "fastest", functools.partial(timing.fastest, min_sample_s=0, clock=clock))
    return built


def test_auto_picks_the_fastest_measured_candidate_and_caches_it(reference, tmp_path, monkeypatch):
    monkeypatch.setenv("B2M_CACHE", str(tmp_path))
    measured = {("fp32", "sdpa"): 3.0, ("fp32", "matmul"): 2.0, ("fp32", "fused"): 2.5,
                ("bf16", "sdpa"): 4.0, ("bf16", "matmul"): 1.0, ("bf16", "fused"): 1.5}
    rounds = lambda: {key: [t] * 4 * timing.ROUNDS for key, t in measured.items()}  # noqa: E731
    monkeypatch.setattr(probe, "supported", lambda device: ["bf16", "fp32"])
    calls = fake_probe(monkeypatch, rounds())
    assert resolve_engine(**probe_args(reference)) == Engine("bf16", "matmul")
    assert calls[0] == Engine("fp32", "sdpa") and len(calls) == 6  # every precision with every CPU kernel
    cache = json.loads((tmp_path / PROBE_FILE).read_text())
    (entry,) = cache.values()
    assert entry["choice"] == "bf16/matmul" and entry["seconds_per_step"]["fp32/sdpa"] == 3.0
    assert entry["spread"]["fp32/sdpa"] == 0.0
    assert resolve_engine(**probe_args(reference)) == Engine("bf16", "matmul")
    assert len(calls) == 6  # the second call read the cache
    calls = fake_probe(monkeypatch, rounds())
    assert resolve_engine(**probe_args(reference, "fp32")) == Engine("fp32", "matmul")  # a fixed precision
    assert {e.precision for e in calls} == {"fp32"} and len(calls) == 3
    (tmp_path / PROBE_FILE).write_text("{not json")
    calls = fake_probe(monkeypatch, rounds())
    assert resolve_engine(**probe_args(reference)) == Engine("bf16", "matmul")  # a damaged cache: probe again
    assert len(calls) == 6


def test_a_close_or_disturbed_measurement_keeps_the_incumbent_and_a_disturbed_one_is_not_cached(
        reference, tmp_path, monkeypatch):
    monkeypatch.setenv("B2M_CACHE", str(tmp_path))
    monkeypatch.setattr(probe, "supported", lambda device: ["bf16", "fp32"])
    monkeypatch.setattr(probe, "attention_kernels", lambda device: ("sdpa",))
    noise = [0.0, 0.03, -0.03, 0.02, -0.02, 0.01, -0.01]
    # bf16 2% faster in the median, within the timings' spread: fp32 stays, and is cached.
    fake_probe(monkeypatch, {("fp32", "sdpa"): [1.0 + e for e in noise], ("bf16", "sdpa"): [0.98 + e for e in noise]})
    assert resolve_engine(**probe_args(reference)) == Engine("fp32", "sdpa")
    (entry,) = json.loads((tmp_path / PROBE_FILE).read_text()).values()
    assert entry["choice"] == "fp32/sdpa" and entry["seconds_per_step"]["bf16/sdpa"] < entry["seconds_per_step"]["fp32/sdpa"]

    # Another job on the cores in some rounds: bf16 looks twice as fast, but nothing is cached.
    (tmp_path / PROBE_FILE).unlink()
    fake_probe(monkeypatch, {("fp32", "sdpa"): [1.0, 6.0, 1.0, 6.0, 1.0, 6.0, 6.0],
                             ("bf16", "sdpa"): [0.5, 0.5, 3.0, 0.5, 3.0, 0.5, 0.5]})
    with pytest.warns(UserWarning, match=r"timings spread by up to \d+% .*this run uses fp32/sdpa and the next one "
                                         r"probes again"):
        assert resolve_engine(**probe_args(reference)) == Engine("fp32", "sdpa")
    assert not (tmp_path / PROBE_FILE).exists()


def test_a_fused_kernel_that_does_not_compile_is_left_out(reference, tmp_path, monkeypatch):
    monkeypatch.setenv("B2M_CACHE", str(tmp_path))

    def no_compiler():
        def fail(*args):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore lines")
        return fail

    monkeypatch.setattr(lm_module, "_compiled_attention", no_compiler)
    engine = resolve_engine(**probe_args(reference, "fp32"))
    assert engine.precision == "fp32" and engine.attention in ("sdpa", "matmul")
    (entry,) = json.loads((tmp_path / PROBE_FILE).read_text()).values()
    assert set(entry["seconds_per_step"]) == {"fp32/sdpa", "fp32/matmul"}
    assert entry["unavailable"] == {"fp32/fused": "RuntimeError: InvalidCxxCompiler: No working C++ compiler found"}


def test_probe_times_real_steps(reference, tmp_path, monkeypatch):
    monkeypatch.setenv("B2M_CACHE", str(tmp_path))
    args = probe_args(reference, "int8")
    engine = resolve_engine(**args)
    assert engine.precision == "int8" and engine.attention in ATTENTION_KERNELS
    (entry,) = json.loads((tmp_path / PROBE_FILE).read_text()).values()
    assert set(entry["seconds_per_step"]) == {"int8/sdpa", "int8/matmul", "int8/fused"} and not entry["unavailable"]
    assert all(math.isfinite(s) and s > 0 for s in entry["seconds_per_step"].values())  # timings recorded


def test_config_hash_names_the_resolved_engine():
    gen = group_config("generator", "tiny")
    hashes = {config_hash(gen, Engine(p, a)) for p in ("fp32", "bf16") for a in ("sdpa", "matmul")}
    assert len(hashes) == 4
    gen.precision = "bf16"  # the name asked for does not matter, only what runs
    assert config_hash(gen, Engine("fp32", "sdpa")) in hashes
