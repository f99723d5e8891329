"""The run folder: what a training run leaves for the jobs after it, written and read here only.

    <run>/config.yaml                 the resolved config (data.*, target.*, decoder.*, seed, ...)
    <run>/clips.json                  every clip the run used: {"clips": {clip_id: {genre, track, start,
                                      end}}, "subjects": {subject: {"training": [clip_id, ...]}}}
    <run>/predictions/<subject>.npz   pred, true float32 [N, L, D]; clip_ids unicode [N]; train_mean, train_std
                                      [L, D] (the training clips' embedding statistics, for scoring)
    <run>/metrics.json                the training job's metrics

`clips.json` lets evaluation, retrieval and generation know what a clip is (its genre,
track and excerpt) without reading the BIDS events again; `training` lists the distinct
clips of a subject's selected Training runs, sorted. Every reader goes through
`load_run` / `read_predictions`, with one set of checks.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from b2m.core.clips import GENRES, Clip, sanitise
from b2m.core.config import save_config
from b2m.core.errors import B2MError
from b2m.core.io import read_text, save_npz, write_json
from b2m.core.metrics import Standardiser

CONFIG = "config.yaml"
CLIPS = "clips.json"
PREDICTIONS = "predictions"
PREDICTION_KEYS = ("pred", "true", "clip_ids", "train_mean", "train_std")
# Top-level keys that name where or how a run is written, not what it computes.
NOT_HASHED = ("out_dir", "restart")
# What a training run writes into its out_dir (`clear_run` removes these and nothing else).
RUN_ENTRIES = (CONFIG, CLIPS, PREDICTIONS, "metrics.json", "checkpoints", "decoder.safetensors", "decoder",
               "wandb", "logs")


@dataclass
class SubjectPredictions:
    """One subject's test predictions: `pred`, `true` `[N, L, D]`, `clip_ids[n]`, and the mean and sd
    `[L, D]` of the training clips' embeddings."""

    subject: str
    pred: np.ndarray
    true: np.ndarray
    clip_ids: list[str]
    train_mean: np.ndarray
    train_std: np.ndarray

    @property
    def scale(self) -> Standardiser:
        """What the decoding metrics standardise with."""
        return Standardiser(self.train_mean.astype(np.float64), self.train_std.astype(np.float64))

    def input_hash(self, index: int) -> str:
        """A short hash of prediction row `index` `[L, D]`: what a reconstruction of that clip records it was
        made from, so that one made from other predictions is told apart."""
        return hashlib.sha256(np.ascontiguousarray(self.pred[index]).tobytes()).hexdigest()[:16]


@dataclass
class Run:
    """A training run as the later jobs see it: folder, resolved config, predictions and clips."""

    path: Path
    cfg: DictConfig
    subjects: dict[str, SubjectPredictions]
    clip_table: dict[str, Clip]
    training_ids: dict[str, list[str]]

    def training_clips(self, subject: str) -> list[Clip]:
        """The distinct clips of `subject`'s Training runs, sorted."""
        return [self.clip_table[c] for c in self.training_ids[subject]]

    def test_clips(self, subject: str) -> list[Clip]:
        """The Clip of each of `subject`'s predictions, in prediction order."""
        return [self.clip_table[c] for c in self.subjects[subject].clip_ids]


# ----------------------------------------------------------------- writing
def check_config(out_dir: str | Path, cfg: DictConfig) -> None:
    """A B2MError if `out_dir` holds a run of another config than `cfg` (`NOT_HASHED` keys aside).

    A rerun of the same config resumes; anything else in the same out_dir would mix two runs.
    """
    path = Path(out_dir) / CONFIG
    if path.is_file():
        old = OmegaConf.to_container(read_config(path), resolve=True)
        key = _first_difference(old, OmegaConf.to_container(cfg, resolve=True))
        if key is not None:
            raise B2MError(f"{path}: out_dir holds a run with another config ({key} differs); "
                           f"choose another out_dir, or restart=true to replace that run")


def write_config(out_dir: str | Path, cfg: DictConfig) -> None:
    """Write `<out_dir>/config.yaml`, refusing a folder that holds a run of another config (`check_config`)."""
    check_config(out_dir, cfg)
    save_config(cfg, Path(out_dir) / CONFIG)


def config_hash(cfg: DictConfig) -> str:
    """sha256 of the resolved config without `NOT_HASHED` keys: equal for a rerun, a copy or a move."""
    plain = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in NOT_HASHED}
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()


def clear_run(out_dir: str | Path) -> None:
    """Remove a training run's files (`RUN_ENTRIES`) from `out_dir`, leaving anything else there."""
    for name in RUN_ENTRIES:
        path = Path(out_dir) / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def write_clips(out_dir: str | Path, training: dict[str, list[Clip]], test: dict[str, list[Clip]]) -> None:
    """Write `<out_dir>/clips.json`: the clips of each subject's Training runs and test predictions."""
    table: dict[str, dict] = {}
    for clips in [*training.values(), *test.values()]:
        for c in clips:
            table[c.clip_id] = {"genre": c.genre, "track": c.track, "start": c.start, "end": c.end}
    subjects = {s: {"training": [c.clip_id for c in clips]} for s, clips in training.items()}
    write_json(Path(out_dir) / CLIPS, {"clips": table, "subjects": subjects})


def write_predictions(out_dir: str | Path, subject: str, pred: np.ndarray, true: np.ndarray,
                      clip_ids: list[str], scale: Standardiser) -> Path:
    """Write `<out_dir>/predictions/<subject>.npz` (float32 arrays, unicode clip ids) with the training
    clips' statistics `scale`; returns its path."""
    path = Path(out_dir) / PREDICTIONS / f"{sanitise(subject)}.npz"
    save_npz(path, pred=np.asarray(pred, np.float32), true=np.asarray(true, np.float32),
             clip_ids=np.array([str(c) for c in clip_ids]), train_mean=np.asarray(scale.mean, np.float32),
             train_std=np.asarray(scale.std, np.float32))
    return path


# ----------------------------------------------------------------- reading
def prediction_files(run: str | Path) -> list[Path]:
    """The `predictions/sub-*.npz` files of a run folder (or of a predictions folder itself)."""
    run = Path(run)
    folder = run / PREDICTIONS if (run / PREDICTIONS).is_dir() else run
    files = sorted(folder.glob("sub-*.npz"))
    if not files:
        raise B2MError(f"{folder}: no sub-*.npz prediction files (run train.py first)")
    return files


def read_predictions(path: str | Path) -> SubjectPredictions:
    """One subject's test predictions; a file that breaks the contract is a B2MError naming it."""
    path = Path(path)
    try:
        # Our own handle: np.load leaves its file open when the zip is cut short.
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # missing, truncated, not an .npz
        raise B2MError(f"{path}: unreadable predictions file ({err})") from None
    missing = [k for k in PREDICTION_KEYS if k not in arrays]
    if missing:
        raise B2MError(f"{path}: predictions file lacks {', '.join(missing)}")
    pred, true, ids, mean, std = (arrays[k] for k in PREDICTION_KEYS)
    if (pred.ndim != 3 or pred.shape != true.shape or ids.shape != (len(pred),) or mean.shape != pred.shape[1:]
            or std.shape != mean.shape):
        raise B2MError(f"{path}: pred {list(pred.shape)}, true {list(true.shape)}, train_mean {list(mean.shape)}, "
                       f"train_std {list(std.shape)} and clip_ids {list(ids.shape)} do not match (expected "
                       f"[N, L, D], [N, L, D], [L, D], [L, D], [N])")
    if not (np.isfinite(std).all() and (std >= 0).all()):
        raise B2MError(f"{path}: train_std must be finite and >= 0")
    if pred.dtype != np.float32 or ids.dtype.kind != "U":
        raise B2MError(f"{path}: pred must be float32 and clip_ids unicode, got {pred.dtype} and {ids.dtype}")
    if not np.isfinite(pred).all():
        raise B2MError(f"{path}: pred contains NaN or infinite values")
    clip_ids = [str(c) for c in ids]
    if len(set(clip_ids)) != len(clip_ids):
        raise B2MError(f"{path}: clip_ids are not unique")
    return SubjectPredictions(path.stem, pred, true.astype(np.float32), clip_ids, mean.astype(np.float32),
                              std.astype(np.float32))


def load_run(path: str | Path) -> Run:
    """Read a training run folder; a missing folder, config, clip table or prediction file is a B2MError."""
    path = Path(path)
    if not path.is_dir():
        raise B2MError(f"{path}: training run folder not found: no sub-*.npz prediction files (run train.py first)")
    subjects = {f.stem: read_predictions(f) for f in prediction_files(path)}
    cfg = read_config(path / CONFIG)
    for key in ("data", "target"):
        if key not in cfg:
            raise B2MError(f"{path / CONFIG}: no '{key}' section")
    table, training = _read_clips(path / CLIPS)
    for subject, p in subjects.items():
        unknown = [c for c in p.clip_ids if c not in table]
        if unknown or subject not in training:
            what = f"clip {unknown[0]}" if unknown else f"subject {subject}"
            raise B2MError(f"{path / CLIPS}: {what} of {path / PREDICTIONS / (subject + '.npz')} is not listed")
    return Run(path, cfg, subjects, table, training)


def read_config(path: Path) -> DictConfig:
    """A run's `config.yaml`; unreadable, not a mapping, or edited to hold interpolations: a B2MError."""
    if not path.is_file():
        raise B2MError(f"{path}: the run's resolved config is missing")
    try:
        cfg = OmegaConf.load(path)
    except Exception as err:  # omegaconf raises yaml and its own errors
        raise B2MError(f"{path}: unreadable config ({str(err).splitlines()[0]})") from None
    if not isinstance(cfg, DictConfig):
        raise B2MError(f"{path}: the run's config is not a mapping")
    # The config is saved resolved: an interpolation in it was put there by hand, and could read the
    # environment (`${oc.env:...}`) into outputs that are shared.
    interpolated = _first_interpolation(OmegaConf.to_container(cfg, resolve=False))
    if interpolated is not None:
        raise B2MError(f"{path}: {interpolated} holds an interpolation (${{...}}); a run's config is saved "
                       f"resolved, so this one was edited")
    return cfg


def _first_interpolation(obj, prefix: str = "") -> str | None:
    """The dotted key of the first string value holding `${`, or None."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, value in items:
        name = f"{prefix}{key}"
        found = _first_interpolation(value, name + ".") if isinstance(value, (dict, list)) else (
            name if isinstance(value, str) and "${" in value else None)
        if found is not None:
            return found
    return None


def _read_clips(path: Path) -> tuple[dict[str, Clip], dict[str, list[str]]]:
    if not path.exists():
        raise B2MError(f"{path}: the run's clip table is missing (a run of an older b2m: train it again)")
    try:
        data = json.loads(read_text(path, "the run's clip table"))
    except json.JSONDecodeError as err:
        raise B2MError(f"{path}: not a clip table (invalid JSON: {err})") from None
    if not (isinstance(data, dict) and isinstance(data.get("clips"), dict) and isinstance(data.get("subjects"), dict)):
        raise B2MError(f"{path}: not a clip table (expected an object with the objects clips and subjects)")
    table = {clip_id: _clip_entry(path, clip_id, entry) for clip_id, entry in data["clips"].items()}
    training = {}
    for subject, entry in data["subjects"].items():
        ids = entry.get("training") if isinstance(entry, dict) else None
        if not isinstance(ids, list) or not all(isinstance(c, str) for c in ids):
            raise B2MError(f"{path}: subjects.{subject}.training must be a list of clip ids")
        unknown = [c for c in ids if c not in table]
        if unknown:
            raise B2MError(f"{path}: training clip {unknown[0]} of {subject} is not in the table")
        training[subject] = ids
    return table, training


def _clip_entry(path: Path, clip_id: str, entry) -> Clip:
    """The Clip of one entry of a clip table, checked as `write_clips` writes it: a known genre, a track
    number >= 0, finite times >= 0 (s) with end after start, and `clip_id` its id."""
    where = f"{path}: clip {clip_id}"
    if not isinstance(entry, dict) or not {"genre", "track", "start", "end"} <= set(entry):
        raise B2MError(f"{where}: expected an object with genre, track, start and end")
    genre, track, start, end = (entry[k] for k in ("genre", "track", "start", "end"))
    if genre not in GENRES:
        raise B2MError(f"{where}: unknown genre {genre!r} (expected one of {', '.join(GENRES)})")
    if isinstance(track, bool) or not isinstance(track, int) or track < 0:
        raise B2MError(f"{where}: track must be an integer >= 0, got {track!r}")
    for name, value in (("start", start), ("end", end)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise B2MError(f"{where}: {name} must be a finite number of seconds >= 0, got {value!r}")
    if end <= start:
        raise B2MError(f"{where}: end {end} s is not after start {start} s")
    clip = Clip(genre, track, float(start), float(end))
    if clip.clip_id != clip_id:
        # An id names the clip in the predictions: an entry edited apart from it would describe another clip.
        raise B2MError(f"{where}: the id does not match its entry, whose id is {clip.clip_id}")
    return clip


def _first_difference(old, new, prefix: str = "") -> str | None:
    """The first dotted key whose value differs between two plain configs (`NOT_HASHED` aside), or None."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            if not prefix and key in NOT_HASHED:
                continue
            name = f"{prefix}{key}"
            if key not in old or key not in new:
                return name
            diff = _first_difference(old[key], new[key], name + ".")
            if diff is not None:
                return diff
        return None
    return None if old == new else prefix.rstrip(".")
