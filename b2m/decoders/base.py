"""The decoder contract: windows `[B, W, V]` of one subject -> embeddings `[B, L, D]`."""

from __future__ import annotations

import pytorch_lightning as pl
import torch


class Decoder(pl.LightningModule):
    """Base of every decoder. `forward(x, subject)` maps `x` `[B, W, V_subject]` to `[B, L, D]`.

    `subject` is the index of the subject in `data.subjects` (one batch, one subject).
    A closed-form decoder sets `closed_form = True` and implements `fit_closed_form`
    instead of training steps.
    """

    closed_form: bool = False

    def __init__(self, n_voxels: list[int], n_window: int, target_shape: tuple[int, int]) -> None:
        super().__init__()
        self.n_voxels = list(n_voxels)
        self.n_window = int(n_window)
        self.target_shape = tuple(int(s) for s in target_shape)

    def forward(self, x: torch.Tensor, subject: int) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError
