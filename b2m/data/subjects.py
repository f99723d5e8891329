"""One subject's data: selected runs, preprocessing (cached), and train / val / test windows.

The data layer knows clips, not embeddings: `load_subject` takes the targets as a
function from clips to `[L, D]` arrays (`b2m.targets.dataset.clip_targets` in the jobs).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf

from b2m.core.clips import Clip
from b2m.core.errors import B2MError
from b2m.data.bids import BIDSDataset, Presentation, Run, read_events, repetition_time, subject_label
from b2m.data.confounds import ConfoundConfig
from b2m.data.fmriprep import FMRIPrepDataset
from b2m.data.nifti import open_run
from b2m.data.preprocess import PreprocessConfig, SubjectData, preprocess_subject
from b2m.data.rois import load_atlas
from b2m.data.samples import build_samples, split_by_clip

# Clips -> their embeddings `[L, D]` in one space.
TargetLookup = Callable[[list[Clip]], dict[Clip, np.ndarray]]


@dataclass
class Split:
    """One split of one subject: `x` `[N, W, V]`, `y` `[N, L, D]`, `clips[n]`; test also
    has `repeats` `[N, R, W, V]` (the single presentations that `x` averages)."""

    x: np.ndarray
    y: np.ndarray
    clips: list[Clip]
    repeats: np.ndarray | None = None

    @property
    def clip_ids(self) -> list[str]:
        return [c.clip_id for c in self.clips]


@dataclass
class SubjectSplits:
    """A subject's splits, its preprocessed data and the distinct clips of its Training runs (sorted)."""

    subject: str
    data: SubjectData
    train: Split
    val: Split
    test: Split
    training_clips: list[Clip]


def data_paths(cfg: DictConfig) -> dict[str, Path]:
    """Resolve the data root's stimulus, caption and cache locations (config keys may override)."""
    root = Path(cfg.root)
    stimuli = Path(cfg.stimuli) if cfg.get("stimuli") else root / "stimuli"
    return {
        "root": root,
        "stimuli": stimuli,
        "captions": Path(cfg.captions) if cfg.get("captions") else stimuli / "captions.csv",
        "cache": Path(cfg.cache_dir) if cfg.get("cache_dir") else root / "derivatives" / "b2m",
    }


def preprocess_config(cfg: DictConfig) -> PreprocessConfig:
    return PreprocessConfig(**OmegaConf.to_container(cfg.preprocess, resolve=True))


def confound_config(cfg: DictConfig) -> ConfoundConfig:
    """`data.confounds` (nilearn strategy names) and `data.confound_options`; none for raw BIDS."""
    strategy = tuple(str(s) for s in cfg.get("confounds") or ())
    options = OmegaConf.to_container(cfg.confound_options, resolve=True) if cfg.get("confound_options") else {}
    return ConfoundConfig(strategy, options)


LAYOUTS = ("bids", "fmriprep")


def dataset(cfg: DictConfig) -> BIDSDataset | FMRIPrepDataset:
    """The dataset of `data.layout`: raw BIDS (`bids`) or fMRIPrep derivatives beside it (`fmriprep`)."""
    layout = cfg.get("layout", "bids")
    if layout not in LAYOUTS:
        raise B2MError(f"data.layout: expected one of {', '.join(LAYOUTS)}, got {layout!r}")
    root = data_paths(cfg)["root"]
    if layout == "fmriprep":
        return FMRIPrepDataset(root, cfg.get("derivatives"), str(cfg.get("space") or "T1w"))
    if cfg.get("confounds"):
        raise B2MError("data.confounds: raw BIDS has no confounds files; use data=fmriprep or data.confounds=[]")
    return BIDSDataset(root)


@dataclass
class PreprocessedSubject:
    """One subject's selected runs per task, their events by run name, the TR (s), the cleaned data and,
    with `data.rois`, the atlas region of each kept voxel (`[V]` names)."""

    runs: dict[str, list[Run]]
    events: dict[str, list[Presentation]]
    tr: float
    data: SubjectData
    regions: np.ndarray | None = None

    def task_clips(self, task: str) -> list[Clip]:
        """The distinct clips of the selected runs of `task` ("Training" or "Test"), sorted."""
        return sorted({p.clip for run in self.runs[task] for p in self.events[run.name]})


def load_preprocessed(cfg: DictConfig, subject: str) -> PreprocessedSubject:
    """Select, check and preprocess (or read from the cache) one subject's Training and Test runs."""
    paths = data_paths(cfg)
    source = dataset(cfg)
    runs = {
        "Training": source.select_runs(subject, "Training", _run_list(training_runs(cfg, subject))),
        "Test": source.select_runs(subject, "Test", _run_list(cfg.get("test_runs"))),
    }
    all_runs = runs["Training"] + runs["Test"]
    tr = repetition_time(all_runs[0])
    for run in all_runs[1:]:
        if repetition_time(run) != tr:
            raise B2MError(f"{run.sidecar}: RepetitionTime differs from {all_runs[0].sidecar.name}'s {tr} s")
    events = {run.name: read_events(run.events) for run in all_runs}
    if isinstance(source, BIDSDataset):
        # One place of issue, so that Python's default filter says it once per process.
        warnings.warn("raw BIDS BOLD: no motion correction or confound regression was done "
                      "(for fMRIPrep derivatives use data=fmriprep)", stacklevel=1)
    atlas = None
    if (cfg.get("rois") or {}).get("atlas"):
        first = open_run(all_runs[0].bold)
        atlas = load_atlas(cfg.rois, subject, first.grid, first.affine)
    chosen = list((cfg.get("rois") or {}).get("select") or [])
    if chosen and atlas is None:
        raise B2MError("data.rois.select: needs data.rois.atlas (a label image) and data.rois.labels")
    restrict = atlas.select(chosen) if chosen else None
    data = preprocess_subject(subject, all_runs, tr, preprocess_config(cfg), paths["cache"] / "preproc",
                              confound_config(cfg), restrict)
    regions = atlas.regions(data.mask) if atlas is not None else None
    return PreprocessedSubject(runs, events, tr, data, regions)


def load_subject(cfg: DictConfig, subject: str, targets: TargetLookup, seed: int) -> SubjectSplits:
    """Preprocess one subject's runs and build its train / val / test splits with their targets."""
    pre = load_preprocessed(cfg, subject)
    runs, events, tr, data = pre.runs, pre.events, pre.tr, pre.data
    delays = list(cfg.delays_tr)
    train = build_samples("Training", runs["Training"], events, data.runs, tr, delays, average_repeats=False)
    test = build_samples("Test", runs["Test"], events, data.runs, tr, delays, average_repeats=True)

    y_of = targets(sorted(set(train.clips) | set(test.clips)))
    shape = next(iter(y_of.values())).shape
    tr_idx, val_idx = split_by_clip(train.clips, float(cfg.val_fraction), seed)

    def take(samples, idx: Sequence[int]) -> Split:
        clips = [samples.clips[i] for i in idx]
        y = np.stack([y_of[c] for c in clips]) if clips else np.zeros((0, *shape), np.float32)
        return Split(samples.x[idx], y, clips)

    test_split = Split(test.x, np.stack([y_of[c] for c in test.clips]), test.clips, test.repeats)
    return SubjectSplits(subject, data, take(train, tr_idx), take(train, val_idx), test_split,
                         pre.task_clips("Training"))


def training_runs(cfg: DictConfig, subject: str) -> Any:
    """The Training runs selected for `subject`: its entry of `subject_training_runs` (a new subject with a
    few runs beside others with all of theirs), else `training_runs` (null: all)."""
    by_subject = {subject_label(k): v for k, v in (cfg.get("subject_training_runs") or {}).items()}
    return by_subject.get(subject, cfg.get("training_runs"))


def _run_list(value: Any) -> list[int] | None:
    return None if value is None else [int(v) for v in value]
