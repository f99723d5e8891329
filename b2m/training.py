"""The training job behind `train.py`: data, targets, decoder, test metrics, files.

Writes into `out_dir`: `config.yaml` (resolved), `metrics.json`,
`predictions/<subject>.npz` (`pred` and `true` float32 `[N, L, D]`, `clip_ids` `[N]`,
`train_mean` `[L, D]`: the mean training embedding, for the baseline), and for trained
decoders `checkpoints/{best,last}.ckpt`. A rerun of the same command resumes from
`last.ckpt`.
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

from b2m.config import save_config
from b2m.data.datamodule import BrainDataModule
from b2m.decoders import Decoder, build_decoder
from b2m.evaluation.metrics import metrics_table, summarise
from b2m.io import save_npz, write_json
from b2m.targets import build_space


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

    target_params = OmegaConf.to_container(cfg.target, resolve=True)
    space = build_space(target_params.pop("name"), **target_params)
    dm = BrainDataModule(cfg.data, space, seed=seed)
    dm.setup()
    # Bad input fails in setup, before anything is written to out_dir.
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out_dir / "config.yaml")
    decoder = build_decoder(cfg.decoder, [s.data.n_voxels for s in dm.subjects],
                            len(cfg.data.delays_tr), space.shape)
    logger = None
    if decoder.closed_form:
        # Cross-validation inside the closed form picks the hyperparameters, so it sees train + val.
        for s, subject in enumerate(dm.subjects):
            decoder.fit_closed_form(s, np.concatenate([subject.train.x, subject.val.x]),
                                    np.concatenate([subject.train.y, subject.val.y]))
    else:
        decoder, logger = fit(cfg, decoder, dm, out_dir, callbacks)

    per_subject = {}
    for s, subject in enumerate(dm.subjects):
        test = subject.test
        pred = predict(decoder, test.x, s)
        train_mean = subject.train.y.mean(axis=0)
        save_npz(out_dir / "predictions" / f"{subject.subject}.npz", pred=pred, true=test.y,
                 clip_ids=np.array(test.clip_ids), train_mean=train_mean)
        per_subject[subject.subject] = metrics_table(pred, test.y, train_mean, seed=seed)
    metrics = summarise(per_subject)
    metrics["n_test_clips"] = len(dm.subjects[0].test.clips)
    if logger is not None:
        logger.log_metrics({k: v for k, v in metrics.items() if not k.startswith("sub-")})
    write_json(out_dir / "metrics.json", metrics)
    return metrics


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
    trainer.fit(decoder, datamodule=dm, ckpt_path=str(last) if last.exists() else None)
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


@torch.no_grad()
def predict(decoder: Decoder, x: np.ndarray, subject: int, batch_size: int = 64) -> np.ndarray:
    """Decoder outputs for windows `x` `[N, W, V]` of one subject: float32 `[N, L, D]`."""
    decoder.eval()
    out = [decoder(torch.from_numpy(np.asarray(x[lo:lo + batch_size])), subject)
           for lo in range(0, len(x), batch_size)]
    return torch.cat(out).float().numpy()
