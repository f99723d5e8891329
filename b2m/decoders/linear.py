"""Ridge decoder: one closed-form linear map per subject from features of the window to the
embedding (the Brain2Music decoder), its regularisation chosen by K-fold cross-validation.

Its features (`features=mean|fir|mean_fir`) and voxel weights (`voxels=encoding|all`) are
`b2m/decoders/features.py`'s, shared with the trained decoders, which start from this solution.

`pool=aligned` (`decoder=ridge_aligned`, with several subjects) fits each subject's ridge on its own
training windows and every other subject's, mapped onto its features through the training clips
they share (`b2m/decoders/alignment.py`); the fitted map still reads the subject's own voxels only.

`alpha_per_target=false` picks one alpha for all embedding dimensions, by the mean CV score
(`scoring`); with a few hundred training clips a per-dimension choice mostly fits noise.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from b2m.core.errors import B2MError
from b2m.core.ridge import RidgeCV
from b2m.decoders.alignment import pooled_onto
from b2m.decoders.base import Decoder
from b2m.decoders.features import FEATURES, VOXELS, encoding_weights, n_features, window_features


# What a subject's ridge is fitted on: its own windows, or also every other subject's, aligned onto it.
POOLS = ("none", "aligned")


class RidgeDecoder(Decoder):
    """Per subject s, with `f = window_features(x * voxel_weight[s])` `[B, F_s]` and
    `voxel_weight[s]` `[V_s]`, in one of the ridge's two forms (T = L * D):

    - primal: `y = f @ coef[s] + intercept[s]`, `coef[s]` `[F_s, T]`, `train_features[s]` `[0, F_s]`;
    - kernel: `y = (f @ train_features[s]^T) @ coef[s] + intercept[s]`, `coef[s]` `[N, T]` the dual
      weights and `train_features[s]` `[N, F_s]` the centred training features (`RidgeCV`'s kernel
      form), kept when `N (F_s + T) < F_s T`: at the real size (60k voxels x delays, a few hundred
      clips) that is several times fewer numbers to store and to multiply than `coef` `[F_s, T]`.

    The form is told by the shapes: kernel when `coef[s]` and `train_features[s]` have as many rows
    (an unfitted decoder is the kernel form with N = 0, which predicts the zero intercept). The
    weights are buffers, so a checkpoint holds the fitted decoder in whichever form it was fitted.
    """

    closed_form = True

    def __init__(self, n_voxels: list[int], n_window: int, target_shape: tuple[int, int],
                 alphas: Sequence[float], n_folds: int, dtype: str, device: str, features: str,
                 alpha_per_target: bool, scoring: str, voxels: str, encoding_alphas: Sequence[float],
                 pool: str) -> None:
        super().__init__(n_voxels, n_window, target_shape)
        for key, value, known in (("features", features, FEATURES), ("voxels", voxels, VOXELS), ("pool", pool, POOLS)):
            if value not in known:
                raise B2MError(f"config: decoder.{key}: {value!r} is not one of {', '.join(known)}")
        self.save_hyperparameters()
        n_out = self.target_shape[0] * self.target_shape[1]
        for s, v in enumerate(self.n_voxels):
            self.register_buffer(f"voxel_weight_{s}", torch.ones(v))
            self.register_buffer(f"coef_{s}", torch.zeros(0, n_out))
            self.register_buffer(f"train_features_{s}", torch.zeros(0, n_features(features, n_window, v)))
            self.register_buffer(f"intercept_{s}", torch.zeros(n_out))
            self.register_buffer(f"alphas_{s}", torch.zeros(n_out))

    def fit_closed_form(self, subject: int, x: np.ndarray, y: np.ndarray) -> None:
        """Fit subject `subject` on windows `x` `[N, W, V]` and targets `y` `[N, L, D]`."""
        self._fit(subject, self._features(subject, x, y), np.asarray(y).reshape(len(y), -1))

    def fit_subjects(self, xs: Sequence[np.ndarray], ys: Sequence[np.ndarray],
                     clip_ids: Sequence[Sequence[str]]) -> None:
        """Fit every subject; with `pool=aligned` each on its own windows and every other subject's, aligned
        onto its features through the clips they share (`b2m.decoders.alignment`)."""
        if self.hparams.pool == "none" or len(xs) == 1:
            super().fit_subjects(xs, ys, clip_ids)
            return
        hp = self.hparams
        features = [self._features(s, x, y).numpy() for s, (x, y) in enumerate(zip(xs, ys))]
        targets = [np.asarray(y, np.float32).reshape(len(y), -1) for y in ys]
        for s in range(len(xs)):
            x, y = pooled_onto(s, features, targets, clip_ids, hp.alphas, hp.n_folds, hp.dtype, hp.device)
            self._fit(s, torch.from_numpy(x), y)

    def _features(self, subject: int, x: np.ndarray, y: np.ndarray) -> torch.Tensor:
        """Set subject `subject`'s voxel weights from its windows `x` and targets `y`; its features `[N, F]`."""
        hp = self.hparams
        weight = getattr(self, f"voxel_weight_{subject}")
        if hp.voxels == "encoding":
            weight.copy_(torch.from_numpy(encoding_weights(x, y, hp.encoding_alphas, hp.n_folds, hp.dtype, hp.device)))
        return window_features(torch.as_tensor(np.asarray(x, np.float32)) * weight, hp.features)

    def _fit(self, subject: int, features: torch.Tensor, y: np.ndarray) -> None:
        """The ridge from `features` `[N, F]` to `y` `[N, T]`, kept in its cheaper form."""
        hp = self.hparams
        ridge = RidgeCV(alphas=list(hp.alphas), n_folds=hp.n_folds, dtype=hp.dtype, device=hp.device,
                        alpha_per_target=hp.alpha_per_target, scoring=hp.scoring)
        ridge.fit(features, y)
        (n, f), t = features.shape, ridge.intercept_.shape[0]
        if ridge.dual_coef_ is not None and n * (f + t) < f * t:
            coef, train_features = ridge.dual_coef_, ridge.X_fit_
        else:
            coef, train_features = ridge.coef_, np.zeros((0, f))
        self._set_weights(subject, torch.as_tensor(coef, dtype=torch.float32),
                          torch.as_tensor(train_features, dtype=torch.float32))
        getattr(self, f"intercept_{subject}").copy_(torch.from_numpy(ridge.intercept_))
        getattr(self, f"alphas_{subject}").copy_(torch.from_numpy(ridge.best_alphas_))

    def _set_weights(self, subject: int, coef: torch.Tensor, train_features: torch.Tensor) -> None:
        """Replace subject `subject`'s `coef` and `train_features` buffers (their shapes change with the form)."""
        device = self._buffers[f"intercept_{subject}"].device
        self._buffers[f"coef_{subject}"] = coef.to(device)
        self._buffers[f"train_features_{subject}"] = train_features.to(device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # A checkpoint may hold either form: take its shapes when they are one of the two forms
        # of this decoder; anything else is left to torch's size-mismatch error.
        for s in range(len(self.n_voxels)):
            coef, feats = state_dict.get(f"{prefix}coef_{s}"), state_dict.get(f"{prefix}train_features_{s}")
            if coef is None or feats is None or coef.ndim != 2 or feats.ndim != 2:
                continue
            own = self._buffers[f"coef_{s}"]
            n_out, n_in = own.shape[1], self._buffers[f"train_features_{s}"].shape[1]
            kernel = coef.shape[0] == feats.shape[0]
            primal = feats.shape[0] == 0 and coef.shape[0] == n_in
            if coef.shape[1] == n_out and feats.shape[1] == n_in and (kernel or primal):
                self._set_weights(s, own.new_empty(coef.shape), own.new_empty(feats.shape))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor, subject: int) -> torch.Tensor:
        coef, train_features = getattr(self, f"coef_{subject}"), getattr(self, f"train_features_{subject}")
        x = x.to(coef.dtype) * getattr(self, f"voxel_weight_{subject}")
        features = window_features(x, self.hparams.features)
        if coef.shape[0] == train_features.shape[0]:  # kernel form: through the training samples
            features = features @ train_features.T
        out = features @ coef + getattr(self, f"intercept_{subject}")
        return out.reshape(len(x), *self.target_shape)
