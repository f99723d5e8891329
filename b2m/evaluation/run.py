"""A training run's out_dir as the evaluation reads it: resolved config, test predictions, clips.

    <run>/config.yaml                 the resolved config (data.*, target.*, decoder.*, seed)
    <run>/predictions/<subject>.npz   pred, true float32 [N, L, D]; clip_ids [N]; train_mean [L, D]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from b2m.data.bids import BIDSDataset, read_events
from b2m.data.clips import Clip
from b2m.errors import B2MError
from b2m.targets import EmbeddingSpace, build_space

PREDICTION_KEYS = ("pred", "true", "clip_ids", "train_mean")


@dataclass
class SubjectPredictions:
    """One subject's test predictions: `pred`, `true` `[N, L, D]`, `clip_ids[n]`, `train_mean` `[L, D]`."""

    subject: str
    pred: np.ndarray
    true: np.ndarray
    clip_ids: list[str]
    train_mean: np.ndarray


@dataclass
class TrainingRun:
    """A loaded training run: its folder, resolved config and per-subject predictions."""

    path: Path
    cfg: DictConfig
    subjects: dict[str, SubjectPredictions]

    def space(self) -> EmbeddingSpace:
        """The embedding space the decoder predicts (`target.*` of the run's config)."""
        params = OmegaConf.to_container(self.cfg.target, resolve=True)
        return build_space(params.pop("name"), **params)

    def clips(self, subject: str, task: str) -> list[Clip]:
        """The distinct clips of `subject`'s selected runs of `task` ("Training" or "Test"), sorted."""
        data = self.cfg.data
        key = "training_runs" if task == "Training" else "test_runs"
        numbers = data.get(key)
        runs = BIDSDataset(data.root).select_runs(subject, task, None if numbers is None else [int(n) for n in numbers])
        return sorted({p.clip for run in runs for p in read_events(run.events)})

    def test_clips(self, subject: str) -> list[Clip]:
        """The Clip of each of `subject`'s predictions, in prediction order."""
        by_id = {c.clip_id: c for c in self.clips(subject, "Test")}
        preds = self.subjects[subject]
        missing = [c for c in preds.clip_ids if c not in by_id]
        if missing:
            raise B2MError(f"{self.path / 'predictions' / (subject + '.npz')}: clip {missing[0]} is not in the "
                           f"test runs of {self.cfg.data.root}")
        return [by_id[c] for c in preds.clip_ids]


def load_predictions(path: Path) -> SubjectPredictions:
    """One subject's test predictions as written by train.py; a bad file is a B2MError."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as err:
        raise B2MError(f"{path}: unreadable predictions file ({err})") from None
    missing = [k for k in PREDICTION_KEYS if k not in arrays]
    if missing:
        raise B2MError(f"{path}: predictions file lacks {', '.join(missing)}")
    pred, true, ids, mean = (arrays[k] for k in PREDICTION_KEYS)
    if pred.ndim != 3 or pred.shape != true.shape or len(pred) != len(ids) or mean.shape != pred.shape[1:]:
        raise B2MError(f"{path}: pred {pred.shape}, true {true.shape}, train_mean {mean.shape} and "
                       f"{len(ids)} clip ids do not match (expected [N, L, D], [N, L, D], [L, D], N)")
    if len(pred) < 2:
        raise B2MError(f"{path}: {len(pred)} test clip(s); identification needs at least 2")
    return SubjectPredictions(path.stem, pred.astype(np.float32), true.astype(np.float32),
                              [str(c) for c in ids], mean.astype(np.float32))


def load_run(path: str | Path) -> TrainingRun:
    """Read a training run folder; a missing folder, config or prediction file is a B2MError."""
    path = Path(path)
    if not path.is_dir():
        raise B2MError(f"{path}: training run folder not found: no sub-*.npz prediction files (run train.py first)")
    files = sorted((path / "predictions").glob("sub-*.npz"))
    if not files:
        raise B2MError(f"{path / 'predictions'}: no sub-*.npz prediction files (run train.py first)")
    config = path / "config.yaml"
    if not config.is_file():
        raise B2MError(f"{config}: the run's resolved config is missing")
    try:
        cfg = OmegaConf.load(config)
    except Exception as err:  # omegaconf raises yaml and its own errors
        raise B2MError(f"{config}: unreadable config ({str(err).splitlines()[0]})") from None
    for key in ("data", "target"):
        if key not in cfg:
            raise B2MError(f"{config}: no '{key}' section")
    return TrainingRun(path, cfg, {f.stem: load_predictions(f) for f in files})
