"""The LightningDataModule: `[B, W, V]` windows with their clip ids and target embeddings.

One or several subjects; subjects have different voxel counts V, so every batch
holds windows of one subject only (its index is in the batch). Ridge-style
decoders take whole splits as arrays through `split()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset, Sampler

from b2m.data.bids import BIDSDataset, Presentation, Run, read_events, repetition_time, subject_label
from b2m.data.clips import Clip
from b2m.data.preprocess import PreprocessConfig, SubjectData, preprocess_subject
from b2m.data.samples import build_samples, split_by_clip
from b2m.data.stimuli import StimulusSet
from b2m.errors import B2MError
from b2m.targets import EmbeddingSpace, embed_clips


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
    subject: str
    data: SubjectData
    train: Split
    val: Split
    test: Split


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


@dataclass
class PreprocessedSubject:
    """One subject's selected runs per task, their events by run name, the TR (s) and the cleaned data."""

    runs: dict[str, list[Run]]
    events: dict[str, list[Presentation]]
    tr: float
    data: SubjectData


def load_preprocessed(cfg: DictConfig, subject: str) -> PreprocessedSubject:
    """Select, check and preprocess (or read from the cache) one subject's Training and Test runs."""
    paths = data_paths(cfg)
    dataset = BIDSDataset(paths["root"])
    runs = {
        "Training": dataset.select_runs(subject, "Training", _run_list(cfg.get("training_runs"))),
        "Test": dataset.select_runs(subject, "Test", _run_list(cfg.get("test_runs"))),
    }
    all_runs = runs["Training"] + runs["Test"]
    tr = repetition_time(all_runs[0])
    for run in all_runs[1:]:
        if repetition_time(run) != tr:
            raise B2MError(f"{run.sidecar}: RepetitionTime differs from {all_runs[0].sidecar.name}'s {tr} s")
    events = {run.name: read_events(run.events) for run in all_runs}
    data = preprocess_subject(subject, all_runs, tr, preprocess_config(cfg), paths["cache"] / "preproc")
    return PreprocessedSubject(runs, events, tr, data)


def load_subject(cfg: DictConfig, subject: str, space: EmbeddingSpace, seed: int) -> SubjectSplits:
    """Preprocess one subject's runs and build its train / val / test splits with targets."""
    pre = load_preprocessed(cfg, subject)
    runs, events, tr, data = pre.runs, pre.events, pre.tr, pre.data
    delays = list(cfg.delays_tr)
    train = build_samples("Training", runs["Training"], events, data.runs, tr, delays, average_repeats=False)
    test = build_samples("Test", runs["Test"], events, data.runs, tr, delays, average_repeats=True)

    targets = clip_targets(cfg, space, sorted(set(train.clips) | set(test.clips)))
    tr_idx, val_idx = split_by_clip(train.clips, float(cfg.val_fraction), seed)

    def take(samples, idx) -> Split:
        clips = [samples.clips[i] for i in idx]
        y = np.stack([targets[c] for c in clips]) if clips else np.zeros((0, *space.shape), np.float32)
        return Split(samples.x[idx], y, clips)

    test_split = Split(test.x, np.stack([targets[c] for c in test.clips]), test.clips, test.repeats)
    return SubjectSplits(subject, data, take(train, tr_idx), take(train, val_idx), test_split)


def clip_targets(cfg: DictConfig, space: EmbeddingSpace, clips: list[Clip]) -> dict[Clip, np.ndarray]:
    """Each clip's embedding `[L, D]` in `space`, cached under the data root's derivatives."""
    paths = data_paths(cfg)
    if space.modality == "text":
        from b2m.data.captions import read_captions

        captions = read_captions(paths["captions"])

        def load_item(clip: Clip) -> Any:
            key = (clip.genre, clip.track)
            if key not in captions:
                raise B2MError(f"{paths['captions']}: no caption for {clip.track_name}")
            return captions[key]
    else:
        stimuli = StimulusSet(paths["stimuli"])

        def load_item(clip: Clip) -> Any:
            return stimuli.load_clip(clip, space.sample_rate)

    emb = embed_clips(space, clips, load_item, paths["cache"] / "targets")
    return dict(zip(clips, emb))


def _run_list(value: Any) -> list[int] | None:
    return None if value is None else [int(v) for v in value]


class _WindowDataset(Dataset):
    """All subjects' windows of one split, indexed flat; items are dicts of tensors."""

    def __init__(self, splits: list[Split]) -> None:
        self.splits = splits
        self.index = [(s, i) for s, split in enumerate(splits) for i in range(len(split.clips))]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k: int) -> dict[str, Any]:
        s, i = self.index[k]
        split = self.splits[s]
        return {"x": torch.from_numpy(np.asarray(split.x[i])), "y": torch.from_numpy(split.y[i]),
                "subject": s, "index": i}


class _EpochSetter:
    """Receives the epoch: Lightning calls `set_epoch` on `batch_sampler.sampler` before each
    epoch (as for a DistributedSampler), including the first epoch after a resume."""

    def __init__(self) -> None:
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)


class _SubjectBatchSampler(Sampler[list[int]]):
    """Batches that each hold one subject's items; shuffled or in order.

    The shuffle depends on (seed, epoch) only, so a run resumed from a checkpoint sees
    the same batches as one that was never interrupted.
    """

    def __init__(self, dataset: _WindowDataset, batch_size: int, shuffle: bool, seed: int) -> None:
        self.dataset, self.batch_size, self.shuffle, self.seed = dataset, batch_size, shuffle, seed
        self.sampler = _EpochSetter()

    def _batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.sampler.epoch])
        batches = []
        for s in range(len(self.dataset.splits)):
            members = [k for k, (subj, _) in enumerate(self.dataset.index) if subj == s]
            if self.shuffle:
                members = list(rng.permutation(members))
            batches += [members[lo:lo + self.batch_size] for lo in range(0, len(members), self.batch_size)]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        # A generator: the order is drawn at the first batch, after Lightning's set_epoch,
        # not when the DataLoader creates its iterator.
        for batch in self._batches():
            yield [int(k) for k in batch]

    def __len__(self) -> int:
        return len(self._batches())


class BrainDataModule(pl.LightningDataModule):
    """Windows `[B, W, V]`, targets `[B, L, D]`, subject index and clip index per item."""

    def __init__(self, cfg: DictConfig, space: EmbeddingSpace, seed: int = 0) -> None:
        super().__init__()
        self.cfg, self.space, self.seed = cfg, space, seed
        self.subjects: list[SubjectSplits] = []

    def setup(self, stage: str | None = None) -> None:
        if self.subjects:
            return
        labels = [subject_label(s) for s in self.cfg.subjects]
        if not labels:
            raise B2MError("data.subjects: empty list")
        self.subjects = [load_subject(self.cfg, s, self.space, self.seed) for s in labels]

    def split(self, name: str) -> list[Split]:
        """The `name` split ("train", "val", "test") of every subject, in subject order."""
        return [getattr(s, name) for s in self.subjects]

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        dataset = _WindowDataset(self.split(name))
        sampler = _SubjectBatchSampler(dataset, int(self.cfg.batch_size), shuffle, self.seed)
        # Its own generator: creating a loader iterator draws a seed, which must not come from
        # (and shift) the global RNG that dropout uses.
        return DataLoader(dataset, batch_sampler=sampler, num_workers=int(self.cfg.num_workers),
                          generator=torch.Generator().manual_seed(self.seed))

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
