"""Ridge decoder: one closed-form linear map per subject from the flattened window to the
embedding, alphas per embedding dimension by K-fold cross-validation (the Brain2Music decoder)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from b2m.decoders.base import Decoder
from b2m.core.ridge import RidgeCV


class RidgeDecoder(Decoder):
    """Per subject s: `y = flatten(x) @ coef[s] + intercept[s]`, `coef[s]` `[W * V_s, L * D]`.

    The weights are buffers, so a checkpoint holds the fitted decoder.
    """

    closed_form = True

    def __init__(self, n_voxels: list[int], n_window: int, target_shape: tuple[int, int],
                 alphas: Sequence[float], n_folds: int, dtype: str, device: str) -> None:
        super().__init__(n_voxels, n_window, target_shape)
        self.save_hyperparameters()
        n_out = self.target_shape[0] * self.target_shape[1]
        for s, v in enumerate(self.n_voxels):
            self.register_buffer(f"coef_{s}", torch.zeros(n_window * v, n_out))
            self.register_buffer(f"intercept_{s}", torch.zeros(n_out))
            self.register_buffer(f"alphas_{s}", torch.zeros(n_out))

    def fit_closed_form(self, subject: int, x: np.ndarray, y: np.ndarray) -> None:
        """Fit subject `subject` on windows `x` `[N, W, V]` and targets `y` `[N, L, D]`."""
        hp = self.hparams
        ridge = RidgeCV(alphas=list(hp.alphas), n_folds=hp.n_folds, dtype=hp.dtype, device=hp.device)
        ridge.fit(np.asarray(x).reshape(len(x), -1), np.asarray(y).reshape(len(y), -1))
        getattr(self, f"coef_{subject}").copy_(torch.from_numpy(ridge.coef_))
        getattr(self, f"intercept_{subject}").copy_(torch.from_numpy(ridge.intercept_))
        getattr(self, f"alphas_{subject}").copy_(torch.from_numpy(ridge.best_alphas_))

    def forward(self, x: torch.Tensor, subject: int) -> torch.Tensor:
        coef = getattr(self, f"coef_{subject}")
        out = x.reshape(len(x), -1).to(coef.dtype) @ coef + getattr(self, f"intercept_{subject}")
        return out.reshape(len(x), *self.target_shape)
