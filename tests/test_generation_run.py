"""Batch generation from prediction files: sharding, resume, manifest, input checks."""

import functools
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf

from b2m.core import outputs, timing
from b2m.core.errors import B2MError
from b2m.core.config import group_config
from b2m.core.io import save_npz
from b2m.core.metrics import Standardiser
from b2m.core.runs import write_predictions as write_run_predictions
from b2m.jobs.generate import generate
from b2m.reconstruction.musicgen import probe
from b2m.reconstruction.musicgen.batch import stable_seed
from b2m.reconstruction.musicgen.lm import ATTENTION_KERNELS

REPO = Path(__file__).resolve().parents[1]
CLIPS = np.array(["blues.00001_0", "jazz.00002_3", "rock.00003_6"])


def write_predictions(root: Path, width: int = 32) -> Path:
    rng = np.random.default_rng(0)
    for subject in ("sub-001", "sub-002"):
        pred, true = (rng.standard_normal((3, 2, width)).astype(np.float32) for _ in range(2))
        write_run_predictions(root / "train", subject, pred, true, list(CLIPS), Standardiser.fit(true))
    return root / "train"


def make_cfg(tmp_path: Path, out: str, devices: int = 1, **gen):
    generator = group_config("generator", "tiny")
    generator.merge_with({"duration_s": 0.2, "batch_size": 2, "precision": "fp32", "greedy": True,
                          "n_samples": 1, **gen})
    return OmegaConf.create({
        "predictions": str(tmp_path / "train"), "out_dir": str(tmp_path / out), "generator": generator,
        "select": group_config("select", "none"),
        "trainer": {"devices": devices, "strategy": "ddp" if devices > 1 else "auto", "accelerator": "cpu"}})


def manifest(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "manifest.jsonl").read_text().splitlines()]


def test_two_processes_produce_the_same_set_as_one(tmp_path, monkeypatch):
    write_predictions(tmp_path)
    # The engine the first run's probe picks is cached (even were its timings disturbed) and read by
    # the ranks, so all three processes run one engine.
    monkeypatch.setenv("B2M_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(probe, "fastest", functools.partial(timing.fastest, max_spread=float("inf")))
    # Every process with one torch thread: a product computed by another number of threads rounds
    # differently (Lightning gives each CPU rank its share of the cores unless OMP_NUM_THREADS says).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = generate(make_cfg(tmp_path, "one", n_samples=2, greedy=False))
    finally:
        torch.set_num_threads(threads)
    assert one["n_generated"] == 12
    # Through the command line, as a user runs it: Lightning relaunches `python -m b2m.__main__` for
    # rank 1 with Hydra's overrides.
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    args = [f"predictions={tmp_path / 'train'}", f"out_dir={tmp_path / 'two'}", "generator.duration_s=0.2",
            "generator.batch_size=2", "generator.precision=fp32", "generator.greedy=false", "generator.n_samples=2",
            "trainer.devices=2", "trainer.strategy=ddp", "trainer.accelerator=cpu"]
    # -v: Lightning's own lines, which name the ranks, are shown.
    proc = subprocess.run([sys.executable, "-m", "b2m", "generate", "-v", *args], env=env, capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MEMBER: 2/2" in proc.stderr + proc.stdout  # really ran as two ranks
    rec_one, rec_two = manifest(tmp_path / "one"), manifest(tmp_path / "two")
    key = lambda r: (r["subject"], r["clip_id"], r["k"])  # noqa: E731
    assert len(rec_two) == len({key(r) for r in rec_two}) == 12  # nothing missing, nothing twice
    # Each rank runs whole batches of the one process's: the same sampled wavs, byte for byte.
    assert sorted(rec_one, key=key) == sorted(rec_two, key=key)
    wavs = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.wav"))
    assert wavs == sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*.wav"))
    assert [p.name for p in (tmp_path / "two").glob(".*")] == [outputs.MARKER]  # partial manifests merged away
    for rel in wavs:
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes()
        a, rate = sf.read(tmp_path / "one" / rel)
        assert rate == 32000 and a.shape == (0.2 * 32000,)


def test_manifest_records_seeds_and_paths(tmp_path):
    write_predictions(tmp_path)
    cfg = make_cfg(tmp_path, "out", n_samples=2)
    generate(cfg)
    records = manifest(tmp_path / "out")
    assert len(records) == 12
    for rec in records:
        assert rec["seed"] == stable_seed(0, rec["subject"], rec["clip_id"], rec["k"])
        assert rec["path"] == f"{rec['subject']}/{rec['clip_id']}_{rec['k']}.wav"
        assert rec["duration_s"] == pytest.approx(0.2)
        assert sf.info(str(tmp_path / "out" / rec["path"])).frames == 6400
        assert rec["precision"] == "fp32" and rec["attention"] in ATTENTION_KERNELS  # the probe's kernel
    assert len({rec["seed"] for rec in records}) == 12
    assert len({rec["config_hash"] for rec in records}) == 1


def test_resume_redoes_only_missing_and_changed_wavs(tmp_path):
    write_predictions(tmp_path)
    cfg = make_cfg(tmp_path, "out", greedy=False)
    out = tmp_path / "out"
    generate(cfg)
    wavs = sorted(out.rglob("*.wav"))
    before = {p: p.stat().st_mtime_ns for p in wavs}
    deleted, truncated, swapped, silenced = wavs[0], wavs[3], wavs[4], wavs[5]
    reference = sf.read(deleted)[0]
    deleted.unlink()
    truncated.write_bytes(truncated.read_bytes()[:3000])
    swapped.write_bytes(wavs[1].read_bytes())  # another clip's wav: the right length, the wrong music
    audio, rate = sf.read(silenced)
    sf.write(silenced, np.zeros_like(audio), rate, subtype="PCM_16")  # silence of the right length
    summary = generate(cfg)
    assert summary["n_generated"] == 4
    changed = {p for p in wavs if p.stat().st_mtime_ns != before[p]}
    assert changed == {deleted, truncated, swapped, silenced}
    np.testing.assert_allclose(sf.read(deleted)[0], reference, atol=1e-4)  # same seed, same sample
    assert generate(cfg)["n_generated"] == 0
    assert sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in wavs) == sorted(
        r["sha256"] for r in manifest(out))


def test_with_batches_of_one_a_resume_is_bit_identical(tmp_path):
    """What a resume guarantees: the same seed and conditioning for every wav; batch-mates change the
    rounding of batched kernels, so only `batch_size=1` makes a resumed wav the uninterrupted run's bytes."""
    write_predictions(tmp_path)
    cfg = make_cfg(tmp_path, "out", greedy=False, batch_size=1, precision="fp32")
    generate(cfg)
    wavs = sorted((tmp_path / "out").rglob("*.wav"))
    reference = {p: p.read_bytes() for p in wavs}
    for p in wavs[::2]:
        p.unlink()
    assert generate(cfg)["n_generated"] == len(wavs[::2])
    assert {p: p.read_bytes() for p in wavs} == reference
    assert generate(make_cfg(tmp_path, "out", greedy=False, temperature=0.5))["n_generated"] == 6


def test_width_mismatch_names_file_and_widths(tmp_path):
    write_predictions(tmp_path, width=48)
    with pytest.raises(B2MError, match=r"sub-001\.npz.*D=48.*width 32"):
        generate(make_cfg(tmp_path, "out"))


def test_long_duration_refused(tmp_path):
    write_predictions(tmp_path)
    with pytest.raises(B2MError, match="duration_s"):
        generate(make_cfg(tmp_path, "out", duration_s=31))


def test_bad_predictions_file(tmp_path):
    zeros = np.zeros((3, 2, 32), np.float64)
    save_npz(tmp_path / "train" / "predictions" / "sub-001.npz", pred=zeros, true=zeros, clip_ids=CLIPS,
             train_mean=zeros[0], train_std=zeros[0])
    with pytest.raises(B2MError, match="float32"):
        generate(make_cfg(tmp_path, "out"))
