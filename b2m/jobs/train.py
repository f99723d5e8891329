"""The train job: data, targets, decoder, test metrics, the run folder.

Writes the run folder (`b2m.core.runs`) into `out_dir`: `config.yaml` (resolved),
`clips.json`, `predictions/<subject>.npz` (`pred` and `true` float32 `[N, L, D]`,
`clip_ids` `[N]`, `train_mean`, `train_std` `[L, D]`: the training clips' embedding statistics, which
the metrics standardise with and the mean-training baseline predicts),
`metrics.json`, `decoder.safetensors` (the fitted decoder: `b2m.decoders.load_decoder(out_dir)`),
`decoder/<subject>_mask.nii.gz` and, for the ridge, `decoder/<subject>_voxel_weight.nii.gz`, and for
trained decoders `checkpoints/{best,last}.ckpt`. A rerun of the same config resumes from `last.ckpt`
(also in a copied or moved run folder, which resumes its own files); another config in the same
out_dir is refused, or replaced with `restart=true`.

Under a wandb sweep agent (WANDB_SWEEP_ID set) the run logs online, so that the sweep sees
`val/id_acc`; its summary keeps the best epoch's value (the checkpoint the test metrics use) and the
config is logged flat (`decoder.lr`, ...), the keys a sweep sets.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from b2m.core import outputs, runs
from b2m.jobs import tracking
from b2m.core.config import check_accelerator, check_values
from b2m.core.errors import B2MError
from b2m.core.io import write_json
from b2m.core.metrics import Standardiser, aggregate_subjects, metrics_table
from b2m.data.bids import subject_label
from b2m.data.datamodule import BrainDataModule
from b2m.data.nifti import write_map
from b2m.data.subjects import load_subject
from b2m.decoders import Decoder, build_decoder, save_decoder
from b2m.targets import build_space
from b2m.targets.dataset import clip_targets

log = logging.getLogger(__name__)
# In last.ckpt: the hash of the config that wrote it, so that no other config resumes it.
CONFIG_HASH_KEY = "b2m_config_hash"
LAST_CHECKPOINT = "checkpoints/last.ckpt"


class FlatWandbLogger(WandbLogger):
    """Lightning's WandbLogger without its hyperparameter logging: the run's config is the flat
    resolved config given to `wandb.init`, not the module's nested arguments on top of it."""

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass


class RunCheckpoint(ModelCheckpoint):
    """A ModelCheckpoint whose restored paths follow the run folder: a run folder that was copied or
    moved resumes with its best score and its own files, never the original folder's."""

    def load_state_dict(self, state_dict: dict) -> None:
        def here(path: str) -> str:
            return str(Path(self.dirpath) / Path(path).name) if path else path

        state = dict(state_dict, dirpath=self.dirpath)
        for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
            state[key] = here(state_dict.get(key, ""))
        state["best_k_models"] = {here(k): v for k, v in state_dict.get("best_k_models", {}).items()}
        super().load_state_dict(state)


class ConfigStamp(Callback):
    """Writes the config hash into every checkpoint (`CONFIG_HASH_KEY`)."""

    def __init__(self, config_hash: str) -> None:
        self.config_hash = config_hash

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint[CONFIG_HASH_KEY] = self.config_hash


class EpochLine(Callback):
    """One stage line per epoch (epoch, val/id_acc, the best so far): Lightning's own bar is off."""

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        score = trainer.callback_metrics.get("val/id_acc")
        best = trainer.checkpoint_callback.best_model_score if trainer.checkpoint_callback else None
        scores = [float(v) for v in (score, best) if v is not None]
        text = f": val/id_acc {scores[0]:.3f} (best {max(scores):.3f})" if scores else ""
        log.info(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}{text}")


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
    check_values(cfg)
    check_accelerator(cfg.trainer.accelerator, "trainer.accelerator")
    check_accelerator(cfg.decoder.get("device", "cpu"), "decoder.device")
    out_dir = Path(cfg.out_dir)
    # The run already in out_dir is checked before the data are read (restart=true discards it).
    resume = False
    if not cfg.get("restart", False):
        runs.check_config(out_dir, cfg)
        resume = check_resume(out_dir / LAST_CHECKPOINT, runs.config_hash(cfg))
    seed = int(cfg.seed)
    pl.seed_everything(seed, workers=True, verbose=False)

    space = build_space(cfg.target)
    labels = [subject_label(s) for s in cfg.data.subjects]
    if len(set(labels)) != len(labels):
        raise B2MError(f"config: data.subjects: {list(cfg.data.subjects)} names a subject twice")
    stray = [k for k in (cfg.data.get("subject_training_runs") or {}) if subject_label(k) not in labels]
    if stray:
        raise B2MError(f"config: data.subject_training_runs: {stray[0]} is not one of data.subjects {labels}")
    subjects = [load_subject(cfg.data, s, lambda clips: clip_targets(cfg.data, space, clips), seed) for s in labels]
    dm = BrainDataModule(subjects, int(cfg.data.batch_size), int(cfg.data.num_workers), seed)
    decoder = build_decoder(cfg.decoder, [s.data.n_voxels for s in subjects], len(cfg.data.delays_tr), space.shape)
    needed = max(int(cfg.decoder.get("n_folds", 2)), 2)
    for s in subjects:
        n_fit, n_test = len(s.train.x) + len(s.val.x), len(s.test.x)
        if n_fit < needed or n_test < 2:
            raise B2MError(f"{cfg.data.root}: {s.subject} has {n_fit} training and {n_test} test windows with "
                           f"data.delays_tr={list(cfg.data.delays_tr)}; needs at least {needed} and 2 "
                           f"(delays past the end of the runs drop their presentations)")
    if not decoder.closed_form and not any(len(s.val.x) > 1 for s in subjects):
        raise B2MError(f"{cfg.data.root}: no subject has 2 validation clips (data.val_fraction="
                       f"{cfg.data.val_fraction}); early stopping on val/id_acc needs them: add training runs "
                       f"or raise data.val_fraction")
    # Bad input fails above, before anything is written to out_dir.
    outputs.mark(out_dir, "train")
    if cfg.get("restart", False):
        runs.clear_run(out_dir)
    runs.write_config(out_dir, cfg)
    runs.write_clips(out_dir, {s.subject: s.training_clips for s in subjects},
                     {s.subject: s.test.clips for s in subjects})
    logger = build_logger(cfg, out_dir)
    if decoder.closed_form:
        # Cross-validation inside the closed form picks the hyperparameters, so it sees train + val.
        for subject in subjects:
            log.info(f"{cfg.decoder._target_.rsplit('.', 1)[-1]} {subject.subject}: "
                     f"{len(subject.train.x) + len(subject.val.x)} windows x {subject.data.n_voxels} voxels, "
                     f"fitted in closed form")
        decoder.fit_subjects([np.concatenate([s.train.x, s.val.x]) for s in subjects],
                             [np.concatenate([s.train.y, s.val.y]) for s in subjects],
                             [s.train.clip_ids + s.val.clip_ids for s in subjects])
    else:
        decoder = fit(cfg, decoder, dm, out_dir, logger, resume, callbacks)

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
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()  # evaluate.py resumes this run by id to add its metrics
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


def fit(cfg: DictConfig, decoder: Decoder, dm: BrainDataModule, out_dir: Path, logger, resume: bool,
        callbacks: Sequence[Callback]) -> Decoder:
    """Train with early stopping on val/id_acc; resume from `last.ckpt` if present; return the
    decoder with the best validation weights. `logger`: `build_logger`'s; `resume`: `check_resume`'s."""
    tcfg = cfg.trainer
    decoder.set_target_stats(torch.from_numpy(np.concatenate([s.train.y for s in dm.subjects])))
    if not resume:  # a resumed run takes its weights from last.ckpt
        for s, subject in enumerate(dm.subjects):
            log.info(f"{subject.subject}: the linear path's start ({decoder.start}) on {len(subject.train.x)} "
                     f"training windows")
            decoder.start_from(s, subject.train.x, subject.train.y)
    ckpt_dir = out_dir / "checkpoints"
    last, best = out_dir / LAST_CHECKPOINT, ckpt_dir / "best.ckpt"
    # The best weights only (the test uses them); the full training state is in last.ckpt.
    checkpoint = RunCheckpoint(dirpath=ckpt_dir, filename=best.stem, monitor="val/id_acc", mode="max",
                               save_weights_only=True, enable_version_counter=False)
    # A second checkpoint, unmonitored, rewritten after every epoch: what a resumed run starts from.
    last_checkpoint = RunCheckpoint(dirpath=ckpt_dir, filename=last.stem, enable_version_counter=False)
    trainer = pl.Trainer(
        max_epochs=int(cfg.decoder.max_epochs),
        accelerator=tcfg.accelerator, devices=tcfg.devices, strategy=tcfg.get("strategy", "auto"),
        precision=tcfg.precision,
        deterministic=bool(tcfg.deterministic), logger=logger if logger is not None else False,
        callbacks=[EarlyStopping("val/id_acc", mode="max", patience=int(tcfg.patience)), checkpoint, last_checkpoint,
                   EpochSeed(int(cfg.seed)), ConfigStamp(runs.config_hash(cfg)), EpochLine(), *callbacks],
        default_root_dir=out_dir, log_every_n_steps=1, enable_model_summary=False, enable_progress_bar=False,
        use_distributed_sampler=False,  # the data module's batch sampler shards the batches itself
    )
    trainer.fit(decoder, datamodule=dm, ckpt_path=str(last) if resume else None, weights_only=True)
    if checkpoint.best_model_score is not None and isinstance(logger, WandbLogger) and trainer.is_global_zero:
        # The summary holds the best epoch's score (the checkpoint the test metrics come from), a plain
        # number where a sweep reads it; define_metric(summary="max") would nest it as {"max": ...}.
        logger.experiment.summary["val/id_acc"] = float(checkpoint.best_model_score)
    # This folder's own best.ckpt: never a path restored from a checkpoint written elsewhere.
    state = torch.load(best if best.exists() else last, map_location="cpu", weights_only=True)["state_dict"]
    decoder.load_state_dict(state)
    return decoder


def check_resume(last: Path, config_hash: str) -> bool:
    """True if `last` is a checkpoint to resume; a B2MError if it is truncated, unreadable or written by
    another config (read with `weights_only=True`: a checkpoint never runs code)."""
    if not last.exists():
        return False
    hint = "delete it (or rerun with restart=true) to start over"
    try:
        checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError... for a damaged file
        reason = " ".join(str(err).split())[:120] or type(err).__name__
        raise B2MError(f"{last}: not a readable checkpoint ({reason}); {hint}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise B2MError(f"{last}: not a Lightning checkpoint; {hint}")
    if checkpoint.get(CONFIG_HASH_KEY) != config_hash:
        raise B2MError(f"{last}: written by another config than {last.parent.parent / runs.CONFIG}; {hint}")
    return True


def build_logger(cfg: DictConfig, out_dir: Path):
    """wandb (offline unless configured otherwise or run by a sweep agent), CSV, or none."""
    kind = cfg.trainer.logger
    if kind == "wandb":
        if rank_zero_only.rank != 0:  # a DDP rank after the first: Lightning gives it a no-op experiment
            return FlatWandbLogger(project=cfg.trainer.wandb_project, save_dir=str(out_dir))
        return FlatWandbLogger(experiment=tracking.start(cfg, out_dir))
    if kind == "csv":
        from pytorch_lightning.loggers import CSVLogger

        return CSVLogger(str(out_dir), name="logs")
    return None
