"""The LightningDataModule: `[B, W, V]` windows with their target embeddings, for training.

One or several subjects (loaded by `b2m.data.subjects`); subjects have different voxel
counts V, so every batch holds windows of one subject only (its index is in the batch).
Ridge-style decoders take whole splits as arrays through `split()`.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from b2m.core.errors import B2MError
from b2m.data.subjects import Split, SubjectSplits


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
    """Batches that each hold one subject's items; shuffled or in order; under DDP, this rank's share
    (the Trainer runs with `use_distributed_sampler=False`: Lightning cannot shard a batch sampler).

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
        # Under DDP each rank takes every world-th batch; the list is first padded with its own first
        # batches (as torch's DistributedSampler pads) so that every rank runs as many steps.
        rank, world = _rank_and_world()
        if world > 1 and batches:
            pad = -len(batches) % world
            batches = (batches + batches * world)[:len(batches) + pad][rank::world]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        # A generator: the order is drawn at the first batch, after Lightning's set_epoch,
        # not when the DataLoader creates its iterator.
        for batch in self._batches():
            yield [int(k) for k in batch]

    def __len__(self) -> int:
        return len(self._batches())


def _rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes of the DDP group (0, 1 outside DDP)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class BrainDataModule(pl.LightningDataModule):
    """Windows `[B, W, V]`, targets `[B, L, D]`, subject index and clip index per item."""

    def __init__(self, subjects: list[SubjectSplits], batch_size: int, num_workers: int, seed: int) -> None:
        super().__init__()
        if not subjects:
            raise B2MError("data.subjects: empty list")
        self.subjects = subjects
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed

    def split(self, name: str) -> list[Split]:
        """The `name` split ("train", "val", "test") of every subject, in subject order."""
        return [getattr(s, name) for s in self.subjects]

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        dataset = _WindowDataset(self.split(name))
        sampler = _SubjectBatchSampler(dataset, self.batch_size, shuffle, self.seed)
        # Its own generator: creating a loader iterator draws a seed, which must not come from
        # (and shift) the global RNG that dropout uses.
        return DataLoader(dataset, batch_sampler=sampler, num_workers=self.num_workers,
                          generator=torch.Generator().manual_seed(self.seed))

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)
