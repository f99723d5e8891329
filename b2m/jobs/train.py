"""The train job: data, targets, decoder, test metrics, the run folder.

Writes the run folder (`b2m.core.runs`) into `out_dir`: `config.yaml` (resolved),
`clips.json`, `predictions/<subject>.npz` (`pred` and `true` float32 `[N, L, D]`,
`clip_ids` `[N]`, `train_mean`, `train_std` `[L, D]`: the training clips' embedding statistics, which
the metrics standardise with and the mean-training baseline predicts),
`metrics.json`, `decoder.safetensors` (the fitted decoder: `b2m.decoders.load_decoder(out_dir)`),
`decoder/<subject>_mask.nii.gz` and, for the ridge, `decoder/<subject>_voxel_weight.nii.gz`, and for
trained decoders `checkpoints/{best,last}.ckpt`. A rerun of the
same config resumes from `last.ckpt`; another config in the same out_dir is refused.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint

from b2m.core import runs
from b2m.core.io import write_json
from b2m.core.metrics import Standardiser, aggregate_subjects, metrics_table
from b2m.data.bids import subject_label
from b2m.data.datamodule import BrainDataModule
from b2m.data.subjects import load_subject
from b2m.decoders import Decoder, build_decoder, save_decoder
from b2m.evaluation.encoding import write_map
from b2m.targets import build_space
from b2m.targets.dataset import clip_targets


class EpochSeed(Callback):
    """Reseed every RNG at the start of each epoch from (seed, epoch), so that an epoch's
    dropout masks do not depend on whether the run was resumed from a checkpoint."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seed = (self.seed * 100_003 + trainer.current_epoch) % 2**31
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)


def train(cfg: DictConfig, callbacks: Sequence[Callback] = ()) -> dict[str, float]:
    """Run one training job from a composed config; returns the metrics written to metrics.json.

    `callbacks` are extra Lightning callbacks for trained decoders.
    """
    out_dir = Path(cfg.out_dir)
    seed = int(cfg.seed)
    pl.seed_everything(seed, workers=True, verbose=False)

    space = build_space(cfg.target)
    labels = [subject_label(s) for s in cfg.data.subjects]
    subjects = [load_subject(cfg.data, s, lambda clips: clip_targets(cfg.data, space, clips), seed) for s in labels]
    dm = BrainDataModule(subjects, int(cfg.data.batch_size), int(cfg.data.num_workers), seed)
    decoder = build_decoder(cfg.decoder, [s.data.n_voxels for s in subjects], len(cfg.data.delays_tr), space.shape)
    # Bad input fails above, before anything is written to out_dir.
    runs.write_config(out_dir, cfg)
    runs.write_clips(out_dir, {s.subject: s.training_clips for s in subjects},
                     {s.subject: s.test.clips for s in subjects})
    logger = None
    if decoder.closed_form:
        # Cross-validation inside the closed form picks the hyperparameters, so it sees train + val.
        for s, subject in enumerate(subjects):
            decoder.fit_closed_form(s, np.concatenate([subject.train.x, subject.val.x]),
                                    np.concatenate([subject.train.y, subject.val.y]))
    else:
        decoder, logger = fit(cfg, decoder, dm, out_dir, callbacks)

    save_decoder(out_dir, decoder)
    write_voxel_maps(out_dir, decoder, subjects)
    per_subject = {}
    for s, subject in enumerate(subjects):
        test = subject.test
        pred = decoder.predict_windows(test.x, s)
        scale = Standardiser.fit(np.concatenate([subject.train.y, subject.val.y]))
        runs.write_predictions(out_dir, subject.subject, pred, test.y, test.clip_ids, scale)
        per_subject[subject.subject] = metrics_table(pred, test.y, scale, seed=seed)
    metrics = aggregate_subjects(per_subject)
    metrics["n_test_clips"] = len(subjects[0].test.clips)
    if logger is not None:
        logger.log_metrics({k: v for k, v in metrics.items() if not k.startswith("sub-")})
    write_json(out_dir / "metrics.json", metrics)
    return metrics


def write_voxel_maps(out_dir: Path, decoder: Decoder, subjects: Sequence) -> None:
    """`decoder/<subject>_mask.nii.gz` (the voxels the decoder reads, in the BOLD's space) and, for
    decoders that weight voxels, `decoder/<subject>_voxel_weight.nii.gz`."""
    for s, subject in enumerate(subjects):
        data = subject.data
        folder = out_dir / "decoder"
        write_map(folder / f"{subject.subject}_mask.nii.gz", np.ones(data.n_voxels, np.float32), data.mask, data.affine)
        weight = getattr(decoder, f"voxel_weight_{s}", None)
        if weight is not None:
            write_map(folder / f"{subject.subject}_voxel_weight.nii.gz", weight.cpu().numpy(), data.mask, data.affine)


def fit(cfg: DictConfig, decoder: Decoder, dm: BrainDataModule, out_dir: Path,
        callbacks: Sequence[Callback]) -> tuple[Decoder, object]:
    """Train with early stopping on val/id_acc; resume from `last.ckpt` if present; return the
    decoder with the best validation weights, and the logger."""
    tcfg = cfg.trainer
    decoder.set_target_stats(torch.from_numpy(np.concatenate([s.train.y for s in dm.subjects])))
    ckpt_dir = out_dir / "checkpoints"
    # The best weights only (the test uses them); the full training state is in last.ckpt.
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val/id_acc", mode="max",
                                 save_weights_only=True, enable_version_counter=False)
    # A second checkpoint, unmonitored, rewritten after every epoch: what a resumed run starts from.
    last_checkpoint = ModelCheckpoint(dirpath=ckpt_dir, filename="last", enable_version_counter=False)
    logger = build_logger(cfg, out_dir)
    trainer = pl.Trainer(
        max_epochs=int(cfg.decoder.max_epochs),
        accelerator=tcfg.accelerator, devices=tcfg.devices, precision=tcfg.precision,
        deterministic=bool(tcfg.deterministic), logger=logger if logger is not None else False,
        callbacks=[EarlyStopping("val/id_acc", mode="max", patience=int(tcfg.patience)), checkpoint, last_checkpoint,
                   EpochSeed(int(cfg.seed)), *callbacks],
        default_root_dir=out_dir, log_every_n_steps=1, enable_model_summary=False,
    )
    last = ckpt_dir / "last.ckpt"
    trainer.fit(decoder, datamodule=dm, ckpt_path=str(last) if last.exists() else None, weights_only=True)
    best = checkpoint.best_model_path or str(last)
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    decoder.load_state_dict(state)
    return decoder, logger


def build_logger(cfg: DictConfig, out_dir: Path):
    """wandb (offline unless configured otherwise or run by a sweep agent), CSV, or none."""
    kind = cfg.trainer.logger
    if kind == "wandb":
        from pytorch_lightning.loggers import WandbLogger

        mode = os.environ.get("WANDB_MODE", cfg.trainer.wandb_mode)
        return WandbLogger(project=cfg.trainer.wandb_project, save_dir=str(out_dir), mode=mode,
                           config=OmegaConf.to_container(cfg, resolve=True))
    if kind == "csv":
        from pytorch_lightning.loggers import CSVLogger

        return CSVLogger(str(out_dir), name="logs")
    return None
