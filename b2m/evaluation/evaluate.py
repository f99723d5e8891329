"""The evaluation job behind `evaluate.py`: decoding metrics of a training run, with baselines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from b2m.errors import B2MError
from b2m.evaluation.metrics import metrics_table, summarise
from b2m.io import write_json

PREDICTION_KEYS = ("pred", "true", "clip_ids", "train_mean")


def load_predictions(path: Path) -> dict[str, np.ndarray]:
    """One subject's test predictions as written by train.py; a bad file is a B2MError."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as err:
        raise B2MError(f"{path}: unreadable predictions file ({err})") from None
    missing = [k for k in PREDICTION_KEYS if k not in arrays]
    if missing:
        raise B2MError(f"{path}: predictions file lacks {', '.join(missing)}")
    if arrays["pred"].shape != arrays["true"].shape or len(arrays["pred"]) != len(arrays["clip_ids"]):
        raise B2MError(f"{path}: pred {arrays['pred'].shape}, true {arrays['true'].shape} and "
                       f"{len(arrays['clip_ids'])} clip ids do not match")
    return arrays


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Score every subject of `cfg.run`; writes `cfg.out_dir/metrics.json` and returns it."""
    run = Path(cfg.run)
    files = sorted((run / "predictions").glob("sub-*.npz"))
    if not files:
        raise B2MError(f"{run / 'predictions'}: no sub-*.npz prediction files (run train.py first)")
    per_subject = {}
    for path in files:
        arrays = load_predictions(path)
        per_subject[path.stem] = metrics_table(arrays["pred"], arrays["true"], arrays["train_mean"], int(cfg.seed))
    metrics = summarise(per_subject)
    write_json(Path(cfg.out_dir) / "metrics.json", metrics)
    return metrics
