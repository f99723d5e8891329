"""Temporal transformer decoder: one token per TR of the window.

Per subject a linear projection of each TR's voxels `[V_s]` into a shared latent of
`width`; learned TR-position embeddings; `depth` pre-norm transformer layers; mean
pooling over the W tokens and a linear head to `[L * D]`. One model trains on
several subjects at once: only the input projections are per subject.
"""

from __future__ import annotations

import torch
from torch import nn

from b2m.decoders.base import TrainedDecoder


class TransformerDecoder(TrainedDecoder):
    def __init__(self, n_voxels: list[int], n_window: int, target_shape: tuple[int, int], width: int,
                 depth: int, heads: int, dropout: float, input_dropout: float, lr: float, weight_decay: float,
                 warmup_epochs: int, max_epochs: int, loss: dict) -> None:
        super().__init__(n_voxels, n_window, target_shape, lr, weight_decay, warmup_epochs, max_epochs, loss,
                         input_dropout)
        self.save_hyperparameters()
        n_out = self.target_shape[0] * self.target_shape[1]
        self.inputs = nn.ModuleList([nn.Linear(v, width) for v in self.n_voxels])
        self.position = nn.Parameter(torch.zeros(n_window, width))
        nn.init.normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=4 * width, dropout=dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, n_out))

    def encode(self, x: torch.Tensor, subject: int) -> torch.Tensor:
        """`x` `[B, W, V]` -> standardised embedding `[B, L * D]`."""
        tokens = self.inputs[subject](self.input_dropout(x)) + self.position  # [B, W, width]
        return self.head(self.layers(tokens).mean(dim=1))
