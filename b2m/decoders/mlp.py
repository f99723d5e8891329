"""Residual MLP decoder (MindEye-style) on the flattened window of TRs.

Per subject a linear map from the window `[W * V_s]` into a shared width; then `depth`
residual blocks (LayerNorm -> Linear -> GELU -> Dropout) and a linear head to `[L * D]`.
Several subjects share everything after their input layer.
"""

from __future__ import annotations

import torch
from torch import nn

from b2m.decoders.base import TrainedDecoder


class ResidualBlock(nn.Module):
    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(), nn.Dropout(dropout))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.net(h)


class MLPDecoder(TrainedDecoder):
    def __init__(self, n_voxels: list[int], n_window: int, target_shape: tuple[int, int], width: int,
                 depth: int, dropout: float, input_dropout: float, lr: float, weight_decay: float,
                 warmup_epochs: int, max_epochs: int, loss: dict) -> None:
        super().__init__(n_voxels, n_window, target_shape, lr, weight_decay, warmup_epochs, max_epochs, loss,
                         input_dropout)
        self.save_hyperparameters()
        n_out = self.target_shape[0] * self.target_shape[1]
        self.inputs = nn.ModuleList([nn.Linear(n_window * v, width) for v in self.n_voxels])
        self.blocks = nn.Sequential(*[ResidualBlock(width, dropout) for _ in range(depth)])
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, n_out))

    def encode(self, x: torch.Tensor, subject: int) -> torch.Tensor:
        """`x` `[B, W, V]` -> standardised embedding `[B, L * D]`."""
        h = self.inputs[subject](self.input_dropout(x.flatten(1)))
        return self.head(self.blocks(h))
