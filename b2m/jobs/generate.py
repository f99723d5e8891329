"""The generate job: MusicGen reconstructions of a training run's test predictions.

Reads `<predictions>/predictions/<subject>.npz` (a train out_dir, or its predictions folder)
through `b2m.core.runs`; writes `<out_dir>/<subject>/<clip_id>_<k>.wav` and `manifest.jsonl`
(`b2m.reconstruction.musicgen.batch`). `trainer.devices=N trainer.strategy=ddp` shards the
work with Lightning's distributed sampler, whole batches to each rank, so the wavs are one
process's; a rerun generates only what is missing. With `select=brain` the `generator.n_samples`
wavs of each clip are the candidates of brain-guided selection (`b2m.reconstruction.selection`),
which needs the training run folder: `selection_<subject>.json`.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from b2m.core import outputs
from b2m.core.config import check_accelerator, check_values
from b2m.core.errors import B2MError
from b2m.core.runs import PREDICTIONS, load_run, prediction_files
from b2m.reconstruction.musicgen.batch import (FRAME_RATE, MANIFEST, MAX_DURATION_S, BatchDataset, GenerationModule,
                                               Job, config_hash, plan_jobs, read_records, wav_done, write_manifest)
from b2m.reconstruction.musicgen.builders import build_generator
from b2m.reconstruction.musicgen.probe import resolve_engine
from b2m.reconstruction.selection import apply_selection, check_selection, clear_selection


def probe_device(accelerator: str) -> torch.device:
    """The device Lightning will generate on, for the engine probe (before the Trainer exists)."""
    if accelerator == "gpu" or accelerator.startswith("cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def generate(cfg: DictConfig) -> dict:
    """Generate `generator.n_samples` wavs per test clip and subject; returns a summary dict.

    Keys used: predictions, out_dir, generator.*, trainer.devices/strategy/accelerator.
    Under DDP every rank runs this function; the summary is complete on every rank.
    """
    check_values(cfg)
    accelerator = cfg.trainer.get("accelerator", "auto")
    check_accelerator(accelerator, "trainer.accelerator")
    gen = cfg.generator
    duration = float(gen.duration_s)
    if not 0 < duration <= MAX_DURATION_S:
        raise B2MError(f"generator.duration_s: {duration} s is outside (0, {MAX_DURATION_S}] s, MusicGen's context")
    out_dir = Path(cfg.out_dir)
    files = prediction_files(cfg.predictions)
    check_selection(cfg.select)
    # Selection fits encoding models on the run's data: it needs the run folder, not only its predictions.
    source = Path(cfg.predictions)
    run = load_run(source.parent if source.name == PREDICTIONS else source) if cfg.select.method == "brain" else None
    lm, codec = build_generator(gen)
    jobs, preds = plan_jobs(gen, files, lm.cfg.cond_dim)
    n_frames = round(duration * FRAME_RATE)
    text_len = next(iter(preds.values())).shape[1]
    engine = resolve_engine(str(gen.precision), lm.cfg, probe_device(accelerator), int(gen.batch_size),
                            n_frames + lm.cfg.n_codebooks - 1, text_len, float(gen.guidance_scale) > 1)
    cfg_hash = config_hash(gen, engine)

    def done(job: Job, records: dict) -> bool:
        return wav_done(out_dir / job.path, records.get((job.subject, job.clip_id, job.k)), cfg_hash, job.input_hash)

    # Planned before trainer.predict: DDP ranks start generating only once all of them got here.
    outputs.mark(out_dir, "generate")
    records = read_records(out_dir)
    todo = [job for job in jobs if not done(job, records)]
    module = GenerationModule(lm, codec, gen, engine, out_dir, cfg_hash, todo)
    trainer = pl.Trainer(accelerator=accelerator, devices=cfg.trainer.get("devices", 1),
                         strategy=cfg.trainer.get("strategy", "auto"), logger=False, enable_checkpointing=False,
                         enable_model_summary=False, use_distributed_sampler=True)
    if todo:
        loader = DataLoader(BatchDataset(todo, preds, int(gen.batch_size)), batch_size=None, shuffle=False)
        trainer.predict(module, dataloaders=loader, return_predictions=False)
    trainer.strategy.barrier()
    records = read_records(out_dir)
    missing = [job.path for job in jobs if not done(job, records)]
    if trainer.is_global_zero:
        if missing:
            raise B2MError(f"{out_dir}: {len(missing)} wav(s) missing after generation, e.g. {missing[0]}")
        clear_selection(out_dir, sorted(preds))
        write_manifest(out_dir, jobs, records)
        candidates: dict[str, dict[str, list[Path]]] = {}
        for job in sorted(jobs, key=lambda j: j.k):
            candidates.setdefault(job.subject, {}).setdefault(job.clip_id, []).append(out_dir / job.path)
        apply_selection(run, candidates, cfg.select, out_dir, {s: out_dir / MANIFEST for s in candidates})
    trainer.strategy.barrier()
    return {"n_wavs": len(jobs), "n_generated": len(todo), "out_dir": str(out_dir), "config_hash": cfg_hash,
            "precision": engine.precision, "attention": engine.attention,
            "manifest": str(out_dir / MANIFEST), "subjects": sorted(preds), "missing": len(missing)}
