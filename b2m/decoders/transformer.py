"""Temporal transformer decoder: the ridge's linear path plus a correction with one token per TR.

The correction projects each TR's weighted voxels `[V_s]` (per subject) into a shared latent
of `width`; learned TR-position embeddings; `depth` pre-norm transformer layers; mean pooling
over the W tokens and a linear head to `[L * D]` that starts at zero, so training starts at the
ridge (`TrainedDecoder`). One model trains on several subjects at once: only the input
projections and the linear paths are per subject.
"""

from __future__ import annotations

import torch
from torch import nn

from b2m.decoders.base import TrainedDecoder, zero_linear


class TransformerDecoder(TrainedDecoder):
    def __init__(self, n_voxels: list[int], n_window: int, target_shape: tuple[int, int], width: int,
                 depth: int, heads: int, dropout: float, **common) -> None:
        super().__init__(n_voxels, n_window, target_shape, **common)
        self.save_hyperparameters()
        n_out = self.target_shape[0] * self.target_shape[1]
        self.inputs = nn.ModuleList([nn.Linear(v, width) for v in self.n_voxels])
        self.position = nn.Parameter(torch.zeros(n_window, width))
        nn.init.normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=4 * width, dropout=dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(width), zero_linear(width, n_out))

    def correction(self, xw: torch.Tensor, subject: int) -> torch.Tensor:
        """The weighted window `xw` `[B, W, V]` -> `[B, L * D]`."""
        tokens = self.inputs[subject](self.input_dropout(xw)) + self.position  # [B, W, width]
        return self.head(self.layers(tokens).mean(dim=1))
