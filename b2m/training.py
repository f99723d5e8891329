"""The training job behind `train.py`: data, targets, decoder, test metrics, files.

Writes into `out_dir`: `config.yaml` (resolved), `metrics.json`, and
`predictions/<subject>.npz` (`pred` and `true` float32 `[N, L, D]`, `clip_ids` `[N]`,
`train_mean` `[L, D]`: the mean training embedding, for the baseline).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from b2m.config import save_config
from b2m.data.datamodule import BrainDataModule
from b2m.decoders import Decoder, build_decoder
from b2m.evaluation.metrics import metrics_table, summarise
from b2m.io import save_npz, write_json
from b2m.targets import build_space


def train(cfg: DictConfig) -> dict[str, float]:
    """Run one training job from a composed config; returns the metrics written to metrics.json."""
    out_dir = Path(cfg.out_dir)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)

    target_params = OmegaConf.to_container(cfg.target, resolve=True)
    space = build_space(target_params.pop("name"), **target_params)
    dm = BrainDataModule(cfg.data, space, seed=int(cfg.seed))
    dm.setup()
    # Bad input fails in setup, before anything is written to out_dir.
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out_dir / "config.yaml")
    train_splits, val_splits = dm.split("train"), dm.split("val")
    decoder = build_decoder(cfg.decoder, [s.data.n_voxels for s in dm.subjects],
                            len(cfg.data.delays_tr), space.shape)
    if decoder.closed_form:
        # Cross-validation inside the closed form picks the hyperparameters, so it sees train + val.
        for s, (tr, va) in enumerate(zip(train_splits, val_splits)):
            decoder.fit_closed_form(s, np.concatenate([tr.x, va.x]), np.concatenate([tr.y, va.y]))

    per_subject = {}
    for s, subject in enumerate(dm.subjects):
        test = subject.test
        pred = predict(decoder, test.x, s)
        train_mean = subject.train.y.mean(axis=0)
        save_npz(out_dir / "predictions" / f"{subject.subject}.npz", pred=pred, true=test.y,
                 clip_ids=np.array(test.clip_ids), train_mean=train_mean)
        per_subject[subject.subject] = metrics_table(pred, test.y, train_mean, seed=int(cfg.seed))
    metrics = summarise(per_subject)
    metrics["n_test_clips"] = len(dm.subjects[0].test.clips)
    write_json(out_dir / "metrics.json", metrics)
    return metrics


@torch.no_grad()
def predict(decoder: Decoder, x: np.ndarray, subject: int, batch_size: int = 64) -> np.ndarray:
    """Decoder outputs for windows `x` `[N, W, V]` of one subject: float32 `[N, L, D]`."""
    decoder.eval()
    out = [decoder(torch.from_numpy(np.asarray(x[lo:lo + batch_size])), subject)
           for lo in range(0, len(x), batch_size)]
    return torch.cat(out).float().numpy()
