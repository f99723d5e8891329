"""Batch generation from a training run's predictions, through Lightning's predict loop.

Input (written by the training job): `<train_out_dir>/predictions/<subject>.npz` with
`pred` float32 [N, L, D], `true` float32 [N, L, D], `clip_ids` unicode [N].
Output: `<out_dir>/<subject>/<clip_id>_<k>.wav` (32 kHz, k < n_samples) and
`<out_dir>/manifest.jsonl` (one record per wav). `trainer.devices=N trainer.strategy=ddp`
shards the work with Lightning's distributed sampler; a rerun generates only what is
missing, corrupt (wrong frame count) or made with another configuration.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import soundfile as sf
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

from b2m.data.clips import sanitise
from b2m.errors import B2MError
from b2m.generation.codec import decode_codes
from b2m.generation.configs import random_musicgen
from b2m.generation.lm import MusicGenLM, SamplingConfig
from b2m.generation.loaders import codec_from_audiocraft, lm_from_audiocraft, lm_from_transformers, load_transformers
from b2m.io import atomic_path, write_text

MAX_DURATION_S = 30.0  # MusicGen's training context; longer needs windowed continuation
FRAME_RATE = 50  # EnCodec 32 kHz frames per second
MANIFEST = "manifest.jsonl"

# Generator keys that change the audio; batch_size and n_samples do not change a given wav.
_HASHED_KEYS = ("name", "weights", "format", "duration_s", "guidance_scale", "top_k", "top_p",
                "temperature", "greedy", "precision", "seed")


@dataclass(frozen=True)
class Job:
    """One wav to produce: sample k of a clip's prediction for a subject."""

    subject: str
    clip_id: str
    k: int
    seed: int
    index: int  # row of the subject's `pred` array
    input_hash: str  # hash of that row, so new predictions are regenerated
    path: str  # relative to out_dir


def stable_seed(base_seed: int, subject: str, clip_id: str, k: int) -> int:
    """A 63-bit seed from (base seed, subject, clip id, sample index), stable across runs and machines."""
    digest = hashlib.sha256(f"{base_seed}\x1f{subject}\x1f{clip_id}\x1f{k}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def config_hash(gen: DictConfig) -> str:
    """Short hash of the generator settings that change the audio."""
    values = {key: OmegaConf.to_container(gen, resolve=True).get(key) for key in _HASHED_KEYS}
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def predictions_dir(path: str | os.PathLike) -> Path:
    """The predictions folder: `<path>/predictions` for a training run's out_dir, else `path`."""
    path = Path(path)
    folder = path / "predictions" if (path / "predictions").is_dir() else path
    if not folder.is_dir() or not any(folder.glob("*.npz")):
        raise B2MError(f"predictions: no <subject>.npz files in {folder}")
    return folder


def load_predictions(path: Path) -> tuple[np.ndarray, list[str]]:
    """pred [N, L, D] float32 and the N clip ids of one `<subject>.npz`."""
    try:
        with np.load(path, allow_pickle=False) as data:
            pred, clip_ids = data["pred"], data["clip_ids"]
    except (KeyError, ValueError, OSError) as err:
        raise B2MError(f"{path}: not a predictions file with 'pred' and 'clip_ids' ({err})") from err
    if pred.ndim != 3 or pred.dtype != np.float32:
        raise B2MError(f"{path}: 'pred' must be float32 [N, L, D], got {pred.dtype} {list(pred.shape)}")
    if clip_ids.dtype.kind != "U" or clip_ids.shape != (pred.shape[0],):
        raise B2MError(f"{path}: 'clip_ids' must be unicode [{pred.shape[0]}], got {clip_ids.dtype} "
                       f"{list(clip_ids.shape)}")
    if not np.isfinite(pred).all():
        raise B2MError(f"{path}: 'pred' contains NaN or infinite values")
    return pred, [str(c) for c in clip_ids]


def wav_ok(path: Path, n_samples: int, sample_rate: int) -> bool:
    """True if `path` is a readable wav with exactly `n_samples` frames at `sample_rate`."""
    try:
        info = sf.info(str(path))
    except (RuntimeError, OSError, sf.LibsndfileError):
        return False
    return info.frames == n_samples and info.samplerate == sample_rate


def read_records(out_dir: Path) -> dict[tuple[str, str, int], dict]:
    """Manifest records by (subject, clip_id, k): the merged manifest, then newer per-rank parts."""
    records: dict[tuple[str, str, int], dict] = {}
    files = [out_dir / MANIFEST] + sorted(out_dir.glob(".manifest.part-*.jsonl"), key=os.path.getmtime)
    for file in files:
        if not file.is_file():
            continue
        for line in file.read_text().splitlines():
            try:
                rec = json.loads(line)
                records[(rec["subject"], rec["clip_id"], int(rec["k"]))] = rec
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a damaged line only means that wav is checked and redone
    return records


# ----------------------------------------------------------------- model
def auto_precision(precision: str, device: torch.device) -> torch.dtype:
    """fp32/bf16/fp16 by name; `auto`: bf16 where the device supports it, else fp16 (CUDA) or fp32."""
    named = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision in named:
        return named[precision]
    if precision != "auto":
        raise B2MError(f"generator.precision: {precision!r} is not one of auto, fp32, bf16, fp16")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.bfloat16
    return torch.float32


def build_generator(gen: DictConfig) -> tuple[MusicGenLM, Any]:
    """(LM in fp32, EnCodec model) for `generator.name` tiny|small (random) or pretrained."""
    if gen.name in ("tiny", "small"):
        model = random_musicgen(gen.name)
        return lm_from_transformers(model, f"random {gen.name}"), model.audio_encoder
    if gen.name != "pretrained":
        raise B2MError(f"generator.name: {gen.name!r} is not one of tiny, small, pretrained")
    if not gen.weights:
        raise B2MError("generator.weights: a pretrained generator needs a local path")
    if gen.format == "transformers":
        model = load_transformers(gen.weights)
        return lm_from_transformers(model, str(gen.weights)), model.audio_encoder
    if gen.format == "audiocraft":  # a folder with audiocraft's two files
        folder = Path(gen.weights)
        lm = lm_from_audiocraft(folder / "state_dict.bin")
        return lm, codec_from_audiocraft(folder / "compression_state_dict.bin")
    raise B2MError(f"generator.format: {gen.format!r} is not one of transformers, audiocraft")


# ----------------------------------------------------------------- Lightning pieces
class JobDataset(Dataset):
    def __init__(self, jobs: list[Job], preds: dict[str, np.ndarray]):
        self.jobs, self.preds = jobs, preds

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int) -> dict:
        job = self.jobs[i]
        return {"job": i, "cond": torch.from_numpy(self.preds[job.subject][job.index])}


class GenerationModule(pl.LightningModule):
    """Predict step = generate codes for a batch of jobs, decode them, write the wavs."""

    def __init__(self, lm: MusicGenLM, codec: Any, gen: DictConfig, out_dir: Path, cfg_hash: str,
                 jobs: list[Job]):
        super().__init__()
        self.jobs = jobs  # batches carry indices into this list
        self.lm, self.codec = lm.requires_grad_(False), codec.requires_grad_(False)
        self.gen, self.out_dir, self.cfg_hash = gen, out_dir, cfg_hash
        self.n_frames = round(float(gen.duration_s) * FRAME_RATE)
        self.sampling = SamplingConfig(greedy=bool(gen.greedy), top_k=int(gen.top_k), top_p=float(gen.top_p),
                                       temperature=float(gen.temperature))
        self.records: list[dict] = []
        self.part_path: Path | None = None

    def on_predict_start(self) -> None:
        self.lm.set_precision(auto_precision(str(self.gen.precision), self.device))
        stamp = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-rank{self.global_rank}"
        self.part_path = self.out_dir / f".manifest.part-{stamp}.jsonl"

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        jobs = [self.jobs[i] for i in batch["job"].tolist()]
        seeds = torch.tensor([job.seed for job in jobs], dtype=torch.long)
        codes = self.lm.generate(batch["cond"], self.n_frames, guidance_scale=float(self.gen.guidance_scale),
                                 sampling=self.sampling, seeds=seeds)
        waves = decode_codes(self.codec, codes).clamp(-1, 1).numpy()
        rate = int(self.codec.config.sampling_rate)
        records = []
        for job, wave in zip(jobs, waves):
            with atomic_path(self.out_dir / job.path) as tmp:
                sf.write(str(tmp), wave, rate, subtype="PCM_16")
            rec = asdict(job) | {"config_hash": self.cfg_hash, "duration_s": len(wave) / rate}
            rec.pop("index")
            records.append(rec)
        self.records.extend(records)
        # Rewritten whole after each batch: a crash keeps every finished wav's record.
        write_text(self.part_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.records))
        return records


# ----------------------------------------------------------------- entry point
def plan_jobs(gen: DictConfig, pred_dir: Path, cond_dim: int) -> tuple[list[Job], dict[str, np.ndarray]]:
    """Every (subject, clip, k) to produce, and each subject's predictions; checks widths and shapes."""
    preds: dict[str, np.ndarray] = {}
    jobs: list[Job] = []
    shape = None
    for file in sorted(pred_dir.glob("*.npz")):
        subject = sanitise(file.stem)
        pred, clip_ids = load_predictions(file)
        if pred.shape[2] != cond_dim:
            raise B2MError(f"{file}: prediction width D={pred.shape[2]} differs from the generator's text-encoder "
                           f"width {cond_dim} (generator.name={gen.name})")
        if shape is not None and pred.shape[1:] != shape:
            raise B2MError(f"{file}: prediction shape [L, D]={list(pred.shape[1:])} differs from the other "
                           f"subjects' {list(shape)}")
        shape = pred.shape[1:]
        names = [sanitise(c) for c in clip_ids]
        if len(set(names)) != len(names):
            raise B2MError(f"{file}: clip_ids are not unique (after making them safe file names)")
        preds[subject] = pred
        for index, (clip_id, name) in enumerate(zip(clip_ids, names)):
            input_hash = hashlib.sha256(pred[index].tobytes()).hexdigest()[:16]
            for k in range(int(gen.n_samples)):
                jobs.append(Job(subject, clip_id, k, stable_seed(int(gen.seed), subject, clip_id, k), index,
                                input_hash, f"{subject}/{name}_{k}.wav"))
    return jobs, preds


def generate_from_config(cfg: DictConfig) -> dict:
    """Generate `generator.n_samples` wavs per test clip and subject; returns a summary dict.

    Keys used: predictions, out_dir, generator.*, trainer.devices/strategy/accelerator.
    Under DDP every rank runs this function; the summary is complete on every rank.
    """
    gen = cfg.generator
    duration = float(gen.duration_s)
    if not 0 < duration <= MAX_DURATION_S:
        raise B2MError(f"generator.duration_s: {duration} s is outside (0, {MAX_DURATION_S}] s, MusicGen's context")
    out_dir = Path(cfg.out_dir)
    pred_dir = predictions_dir(cfg.predictions)
    lm, codec = build_generator(gen)
    jobs, preds = plan_jobs(gen, pred_dir, lm.cfg.cond_dim)
    cfg_hash = config_hash(gen)
    rate = int(codec.config.sampling_rate)
    n_wav = round(duration * FRAME_RATE) * int(rate // codec.config.frame_rate)

    def done(job: Job, records: dict) -> bool:
        rec = records.get((job.subject, job.clip_id, job.k))
        return (rec is not None and rec.get("config_hash") == cfg_hash and rec.get("input_hash") == job.input_hash
                and wav_ok(out_dir / job.path, n_wav, rate))

    # Planned before trainer.predict: DDP ranks start generating only once all of them got here.
    records = read_records(out_dir)
    todo = [job for job in jobs if not done(job, records)]
    module = GenerationModule(lm, codec, gen, out_dir, cfg_hash, todo)
    trainer = pl.Trainer(accelerator=cfg.trainer.get("accelerator", "auto"), devices=cfg.trainer.get("devices", 1),
                         strategy=cfg.trainer.get("strategy", "auto"), logger=False, enable_checkpointing=False,
                         enable_model_summary=False, use_distributed_sampler=True)
    if todo:
        loader = DataLoader(JobDataset(todo, preds), batch_size=int(gen.batch_size), shuffle=False)
        trainer.predict(module, dataloaders=loader, return_predictions=False)
    trainer.strategy.barrier()
    records = read_records(out_dir)
    missing = [job.path for job in jobs if not done(job, records)]
    if trainer.is_global_zero:
        if missing:
            raise B2MError(f"{out_dir}: {len(missing)} wav(s) missing after generation, e.g. {missing[0]}")
        lines = [json.dumps(records[(j.subject, j.clip_id, j.k)], sort_keys=True) + "\n" for j in jobs]
        write_text(out_dir / MANIFEST, "".join(lines))
        for part in out_dir.glob(".manifest.part-*.jsonl"):
            part.unlink()
    trainer.strategy.barrier()
    return {"n_wavs": len(jobs), "n_generated": len(todo), "out_dir": str(out_dir), "config_hash": cfg_hash,
            "manifest": str(out_dir / MANIFEST), "subjects": sorted(preds), "missing": len(missing)}
