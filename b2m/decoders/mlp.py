"""Residual MLP decoder (MindEye-style): the ridge's linear path plus a non-linear correction.

The correction reads the linear path's features of the weighted window (`features`: the window
mean `[V_s]` by default) through a per-subject linear map into a shared width; then `depth`
residual blocks (LayerNorm -> Linear -> GELU -> Dropout) and a linear head to `[L * D]` that
starts at zero, so training starts at the ridge (`TrainedDecoder`). Several subjects share
everything after their input layer.
"""

from __future__ import annotations

import torch
from torch import nn

from b2m.decoders.base import TrainedDecoder, zero_linear
from b2m.decoders.features import n_features, window_features


class ResidualBlock(nn.Module):
    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(), nn.Dropout(dropout))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.net(h)


class MLPDecoder(TrainedDecoder):
    def __init__(self, n_voxels: list[int], n_window: int, target_shape: tuple[int, int], width: int,
                 depth: int, dropout: float, **common) -> None:
        super().__init__(n_voxels, n_window, target_shape, **common)
        self.save_hyperparameters()
        n_out = self.target_shape[0] * self.target_shape[1]
        self.inputs = nn.ModuleList([nn.Linear(n_features(self.features, n_window, v), width) for v in self.n_voxels])
        self.blocks = nn.Sequential(*[ResidualBlock(width, dropout) for _ in range(depth)])
        self.head = nn.Sequential(nn.LayerNorm(width), zero_linear(width, n_out))

    def correction(self, xw: torch.Tensor, subject: int) -> torch.Tensor:
        """The weighted window `xw` `[B, W, V]` -> `[B, L * D]`."""
        h = self.inputs[subject](self.input_dropout(window_features(xw, self.features)))
        return self.head(self.blocks(h))
