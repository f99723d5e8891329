"""Batch generation through Lightning's predict loop, and the manifest of what it wrote.

Input: a training run's predictions (`b2m.core.runs`), `pred` float32 [N, L, D] per subject.
Output: `<out_dir>/<subject>/<clip_id>_<k>.wav` (32 kHz, k < n_samples) and
`<out_dir>/manifest.jsonl`, one JSON record per wav (`subject`, `clip_id`, `k`, `path`
relative to out_dir, `seed`, `config_hash`, `input_hash` (`SubjectPredictions.input_hash`) and the
`predictions` file it hashes a row of, the wav's
`sha256`, `duration_s`, the engine's resolved `precision` and `attention`, and `random_weights`: made
by a random-weight generator, whose audio evaluation labels as such). Every rank writes
its records to a `.manifest.part-*.jsonl` after each batch, so a killed run keeps every
finished wav; a rerun redoes only what is missing, changed since it was written (its sha256), or made
with another configuration or input.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytorch_lightning as pl
import soundfile as sf
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset

from b2m.core.clips import sanitise
from b2m.core.errors import B2MError
from b2m.core.io import atomic_path, file_digest, write_text
from b2m.core.runs import read_predictions
from b2m.reconstruction.musicgen.builders import RANDOM_GENERATORS
from b2m.reconstruction.musicgen.codec import decode_codes
from b2m.reconstruction.musicgen.lm import MusicGenLM, SamplingConfig
from b2m.reconstruction.musicgen.probe import Engine
from b2m.reconstruction import Manifest, inside

MAX_DURATION_S = 30.0  # MusicGen's training context; longer needs windowed continuation
FRAME_RATE = 50  # EnCodec 32 kHz frames per second
MANIFEST = "manifest.jsonl"

# Generator keys that change the audio; batch_size and n_samples do not change a given wav. The
# precision is hashed as resolved (`auto` is whatever the probe chose), with the attention kernel.
_HASHED_KEYS = ("name", "weights", "format", "duration_s", "guidance_scale", "top_k", "top_p",
                "temperature", "greedy", "seed")


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
    predictions: str  # the prediction file (absolute), which evaluation checks the input hash against


def stable_seed(base_seed: int, subject: str, clip_id: str, k: int) -> int:
    """A 63-bit seed from (base seed, subject, clip id, sample index), stable across runs and machines."""
    digest = hashlib.sha256(f"{base_seed}\x1f{subject}\x1f{clip_id}\x1f{k}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def config_hash(gen: DictConfig, engine: Engine) -> str:
    """Short hash of the generator settings that change the audio, and of the engine that makes it."""
    values = {key: OmegaConf.to_container(gen, resolve=True).get(key) for key in _HASHED_KEYS}
    values |= {"precision": engine.precision, "attention": engine.attention}
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def wav_done(path: Path, record: dict | None, cfg_hash: str, input_hash: str) -> bool:
    """True if `record` describes `path` as made with this configuration from this input, and the file
    is still the one it describes (same sha256: not swapped, cut or overwritten since). A record of an
    older b2m, which did not say whether the generator had random weights, is redone."""
    if record is None or record.get("config_hash") != cfg_hash or record.get("input_hash") != input_hash:
        return False
    if not isinstance(record.get("random_weights"), bool):
        return False
    try:
        return file_digest(path) == record.get("sha256")
    except OSError:
        return False


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


# ----------------------------------------------------------------- Lightning pieces
class BatchDataset(Dataset):
    """Item i: batch i of `jobs`, `{"job": int64 [B] positions in jobs, "cond": float32 [B, L, D]}`.

    A batch, not a wav, is the unit of work: DDP ranks (Lightning's distributed sampler splits the
    items) then run the very batches one process runs, the same rows through the same kernels, so the
    wavs they write are the ones a single process writes."""

    def __init__(self, jobs: list[Job], preds: dict[str, np.ndarray], batch_size: int):
        self.jobs, self.preds, self.batch_size = jobs, preds, batch_size

    def __len__(self) -> int:
        return -(-len(self.jobs) // self.batch_size)

    def __getitem__(self, i: int) -> dict:
        rows = range(i * self.batch_size, min(len(self.jobs), (i + 1) * self.batch_size))
        cond = np.stack([self.preds[self.jobs[r].subject][self.jobs[r].index] for r in rows])
        return {"job": torch.tensor(list(rows)), "cond": torch.from_numpy(cond)}


class GenerationModule(pl.LightningModule):
    """Predict step = generate codes for a batch of jobs, decode them, write the wavs."""

    def __init__(self, lm: MusicGenLM, codec: Any, gen: DictConfig, engine: Engine, out_dir: Path,
                 cfg_hash: str, jobs: list[Job]):
        super().__init__()
        self.jobs = jobs  # batches carry indices into this list
        self.lm, self.codec = lm.requires_grad_(False), codec.requires_grad_(False)
        self.gen, self.engine, self.out_dir, self.cfg_hash = gen, engine, out_dir, cfg_hash
        self.n_frames = round(float(gen.duration_s) * FRAME_RATE)
        self.sampling = SamplingConfig(greedy=bool(gen.greedy), top_k=int(gen.top_k), top_p=float(gen.top_p),
                                       temperature=float(gen.temperature))
        self.records: list[dict] = []
        self.part_path: Path | None = None

    def on_predict_start(self) -> None:
        self.engine.apply(self.lm)
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
                digest = file_digest(tmp)
            rec = asdict(job) | {"config_hash": self.cfg_hash, "sha256": digest, "duration_s": len(wave) / rate,
                                 "precision": self.engine.precision, "attention": self.engine.attention,
                                 "random_weights": self.gen.name in RANDOM_GENERATORS}
            rec.pop("index")
            records.append(rec)
        self.records.extend(records)
        # Rewritten whole after each batch: a crash keeps every finished wav's record.
        write_text(self.part_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.records))
        return records


# ----------------------------------------------------------------- planning
def plan_jobs(gen: DictConfig, files: Sequence[Path], cond_dim: int) -> tuple[list[Job], dict[str, np.ndarray]]:
    """Every (subject, clip, k) to produce from the prediction files, and each subject's predictions;
    checks widths and shapes."""
    preds: dict[str, np.ndarray] = {}
    jobs: list[Job] = []
    shape = None
    for file in files:
        subject = sanitise(file.stem)
        p = read_predictions(file)
        pred, clip_ids = p.pred, p.clip_ids
        if pred.shape[2] != cond_dim:
            raise B2MError(f"{file}: prediction width D={pred.shape[2]} differs from the generator's text-encoder "
                           f"width {cond_dim} (generator.name={gen.name})")
        if shape is not None and pred.shape[1:] != shape:
            raise B2MError(f"{file}: prediction shape [L, D]={list(pred.shape[1:])} differs from the other "
                           f"subjects' {list(shape)}")
        shape = pred.shape[1:]
        names = [sanitise(c) for c in clip_ids]  # unique: read_predictions checks
        preds[subject] = pred
        for index, (clip_id, name) in enumerate(zip(clip_ids, names)):
            input_hash = p.input_hash(index)
            for k in range(int(gen.n_samples)):
                jobs.append(Job(subject, clip_id, k, stable_seed(int(gen.seed), subject, clip_id, k), index,
                                input_hash, f"{subject}/{name}_{k}.wav", str(Path(file).resolve())))
    return jobs, preds


def write_manifest(out_dir: Path, jobs: list[Job], records: dict[tuple[str, str, int], dict]) -> None:
    """Merge the per-rank parts into `manifest.jsonl`, in job order, and remove the parts."""
    lines = [json.dumps(records[(j.subject, j.clip_id, j.k)], sort_keys=True) + "\n" for j in jobs]
    write_text(out_dir / MANIFEST, "".join(lines))
    for part in out_dir.glob(".manifest.part-*.jsonl"):
        part.unlink()


def read_generated(folder: str | Path) -> Manifest:
    """Generated wavs per subject and clip, by sample index `k`, from `<folder>/manifest.jsonl`;
    strict, unlike `read_records` (for evaluation): a damaged line, a wav path outside the folder or a
    sample listed twice is a B2MError, and each clip's samples must be k = 0, 1, ..."""
    folder = Path(folder)
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise B2MError(f"{manifest}: generation manifest not found (run generate.py first)")
    out = Manifest(folder)
    samples: dict[tuple[str, str], dict[int, Path]] = {}
    for line_no, line in enumerate(manifest.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            subject, clip_id, k = str(rec["subject"]), str(rec["clip_id"]), rec["k"]
            if type(k) is not int or k < 0:
                raise ValueError(f"sample index k = {k!r}")
            path = inside(folder, rec["path"], manifest)
            if k in samples.setdefault((subject, clip_id), {}):
                raise ValueError(f"sample {k} of {subject} {clip_id} listed twice")
            samples[(subject, clip_id)][k] = path
            out.digests[path] = str(rec["sha256"])
            if not isinstance(rec["random_weights"], bool):
                raise ValueError(f"random_weights = {rec['random_weights']!r}")
            out.random_weights |= rec["random_weights"]
            if out.made_from.setdefault(subject, Path(rec["predictions"])) != Path(rec["predictions"]):
                raise ValueError(f"samples of {subject} made from two prediction files")
            inputs = out.inputs.setdefault(subject, {})
            if inputs.setdefault(clip_id, str(rec["input_hash"])) != str(rec["input_hash"]):
                raise ValueError(f"samples of {subject} {clip_id} made from different predictions")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
            raise B2MError(f"{manifest}: line {line_no}: not a generation record of this b2m "
                           f"({type(err).__name__}: {err}); run generate again") from None
    if not samples:
        raise B2MError(f"{manifest}: no records")
    digest = file_digest(manifest)
    for (subject, clip_id), by_k in sorted(samples.items()):
        if sorted(by_k) != list(range(len(by_k))):
            raise B2MError(f"{manifest}: samples of {subject} {clip_id} are k = {sorted(by_k)}, not 0 to {len(by_k) - 1}")
        out.files.setdefault(subject, {})[clip_id] = [by_k[k] for k in range(len(by_k))]
        out.sources[subject], out.source_digests[subject] = manifest, digest
    return out
