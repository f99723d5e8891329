"""The decoder contract: windows `[B, W, V]` of one subject -> embeddings `[B, L, D]`.

`Decoder` is the interface; `TrainedDecoder` adds what every gradient-trained decoder
shares (the ridge's voxel weighting and linear path as its start, target standardisation,
losses, metrics per stage, optimiser and schedule), so a new architecture only defines its
layers and `correction`.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pytorch_lightning as pl
import torch

from b2m.core.errors import B2MError
from b2m.core.metrics import DecodingMetric
from b2m.core.ridge import RidgeCV
from b2m.decoders.features import FEATURES, VOXELS, encoding_weights, n_features, window_features
from b2m.decoders.losses import combined_loss

METRIC_NAMES = ("id_acc", "top1")
# Where a trained decoder's linear path starts: the ridge solution on the training split, or zero.
STARTS = ("ridge", "zeros")


def zero_linear(n_in: int, n_out: int) -> torch.nn.Linear:
    """A linear layer that starts at zero: the last layer of a correction, so that training starts at
    the linear path."""
    layer = torch.nn.Linear(n_in, n_out)
    torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    return layer


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

    def fit_closed_form(self, subject: int, x: np.ndarray, y: np.ndarray) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def fit_subjects(self, xs: Sequence[np.ndarray], ys: Sequence[np.ndarray],
                     clip_ids: Sequence[Sequence[str]]) -> None:
        """A closed form's fit of every subject: windows `xs[s]` `[N_s, W, V_s]`, targets `ys[s]` `[N_s, L, D]`
        and clip ids (N_s each); one subject at a time unless a decoder pools them."""
        for s, (x, y) in enumerate(zip(xs, ys)):
            self.fit_closed_form(s, x, y)

    @torch.no_grad()
    def predict_windows(self, x: np.ndarray, subject: int, batch_size: int = 64) -> np.ndarray:
        """Outputs for windows `x` `[N, W, V]` of one subject: float32 `[N, L, D]`, in eval mode."""
        self.eval()
        out = [self(torch.from_numpy(np.asarray(x[lo:lo + batch_size])), subject)
               for lo in range(0, len(x), batch_size)]
        return torch.cat(out).float().numpy()


class TrainedDecoder(Decoder):
    """A decoder trained by gradient descent on standardised targets, starting where the ridge is.

    Per subject s, with the voxel weights `voxel_weight[s]` `[V_s]` and `xw = x * voxel_weight[s]`:

        encode(x) = linear[s](window_features(xw)) + correction(xw, s)        [B, L * D]

    in standardised units; `forward` maps back with the training targets' mean and std. The
    linear path is the ridge's model (`b2m/decoders/linear.py`: the same `features` and
    `voxels=encoding` weighting); with `start=ridge`, `start_from` sets it to the ridge solution
    fitted in closed form on the training split (alphas by K-fold CV; validation clips stay out),
    so training starts at the ridge and the losses (`loss.contrastive`: InfoNCE, which trains
    identification directly) move it from there. Subclasses define `correction`, a non-linear
    term whose last layer starts at zero (`None` for a purely linear decoder); it sees the
    weighted window through `input_dropout`. The linear path trains with `linear_lr` and no weight
    decay (early stopping on `val/id_acc` is its regulariser), the correction with `lr` and
    `weight_decay`.
    """

    def __init__(self, n_voxels: list[int], n_window: int, target_shape: tuple[int, int], lr: float,
                 weight_decay: float, warmup_epochs: int, max_epochs: int, loss: dict, input_dropout: float,
                 features: str, voxels: str, start: str, linear_lr: float, alphas: Sequence[float],
                 encoding_alphas: Sequence[float], n_folds: int) -> None:
        super().__init__(n_voxels, n_window, target_shape)
        for key, value, known in (("features", features, FEATURES), ("voxels", voxels, VOXELS),
                                  ("start", start, STARTS)):
            if value not in known:
                raise B2MError(f"config: decoder.{key}: {value!r} is not one of {', '.join(known)}")
        self.lr, self.weight_decay, self.linear_lr = lr, weight_decay, linear_lr
        self.warmup_epochs, self.max_epochs = warmup_epochs, max_epochs
        self.loss_weights = dict(loss)
        self.features, self.voxels, self.start = features, voxels, start
        self.alphas, self.encoding_alphas, self.n_folds = list(alphas), list(encoding_alphas), int(n_folds)
        self.input_dropout = torch.nn.Dropout(input_dropout)
        n_out = self.target_shape[0] * self.target_shape[1]
        self.register_buffer("target_mean", torch.zeros(n_out))
        self.register_buffer("target_std", torch.ones(n_out))
        for s, v in enumerate(self.n_voxels):
            self.register_buffer(f"voxel_weight_{s}", torch.ones(v))
        self.linear = torch.nn.ModuleList([torch.nn.Linear(n_features(features, n_window, v), n_out)
                                           for v in self.n_voxels])
        # Identification compares clips of one subject with each other: one metric set per
        # subject, averaged over subjects at the end of the validation epoch. (Test metrics are
        # computed by the train job on whole splits, not in a Lightning test loop.)
        self.val_metrics = torch.nn.ModuleList([
            torch.nn.ModuleDict({name: DecodingMetric(name) for name in METRIC_NAMES}) for _ in self.n_voxels
        ])

    def start_from(self, subject: int, x: np.ndarray, y: np.ndarray) -> None:
        """Voxel weights and (with `start=ridge`) the linear path's ridge solution of subject `subject`, from
        its training windows `x` `[N, W, V]` and targets `y` `[N, L, D]` (call `set_target_stats` first)."""
        weight = getattr(self, f"voxel_weight_{subject}")
        if self.voxels == "encoding":
            weight.copy_(torch.from_numpy(encoding_weights(x, y, self.encoding_alphas, self.n_folds, "float32", "cpu")))
        linear = self.linear[subject]
        with torch.no_grad():
            if self.start == "zeros":
                linear.weight.zero_()
                linear.bias.zero_()
                return
            features = window_features(torch.as_tensor(np.asarray(x, np.float32)) * weight.cpu(), self.features)
            z = (torch.as_tensor(np.asarray(y, np.float32)).reshape(len(y), -1) - self.target_mean.cpu()) \
                / self.target_std.cpu()
            # The ridge decoder's defaults: one alpha for all dimensions, by the mean CV R^2.
            ridge = RidgeCV(alphas=self.alphas, n_folds=self.n_folds, scoring="r2", alpha_per_target=False)
            ridge.fit(features, z)
            linear.weight.copy_(torch.as_tensor(ridge.coef_, dtype=torch.float32).T)
            linear.bias.copy_(torch.as_tensor(ridge.intercept_, dtype=torch.float32))

    def correction(self, xw: torch.Tensor, subject: int) -> torch.Tensor | None:
        """The non-linear term `[B, L * D]` on the weighted window `xw` `[B, W, V]`; None: a linear decoder."""
        return None

    def encode(self, x: torch.Tensor, subject: int) -> torch.Tensor:
        """`x` `[B, W, V]` -> standardised embedding `[B, L * D]`."""
        xw = x * getattr(self, f"voxel_weight_{subject}")
        z = self.linear[subject](window_features(xw, self.features))
        extra = self.correction(xw, subject)
        return z if extra is None else z + extra

    def set_target_stats(self, y: torch.Tensor) -> None:
        """Standardise targets with the training split's mean and std, `y` `[N, L, D]`."""
        flat = torch.as_tensor(y, dtype=torch.float32).reshape(len(y), -1)
        self.target_mean.copy_(flat.mean(0))
        self.target_std.copy_(flat.std(0).clamp_min(1e-6))

    def forward(self, x: torch.Tensor, subject: int) -> torch.Tensor:
        z = self.encode(x, subject)
        return (z * self.target_std + self.target_mean).reshape(len(x), *self.target_shape)

    def _step(self, batch: dict, stage: str) -> torch.Tensor:
        subject = int(batch["subject"][0])
        z = self.encode(batch["x"], subject)
        target = (batch["y"].reshape(len(z), -1) - self.target_mean) / self.target_std
        terms = combined_loss(z, target, **self.loss_weights)
        batch_size = len(z)
        self.log_dict({f"{stage}/{k}": v for k, v in terms.items()}, batch_size=batch_size,
                      on_step=False, on_epoch=True, prog_bar=True)
        if stage == "val":
            for metric in self.val_metrics[subject].values():
                metric.update(z.detach(), target)
        return terms["loss"]

    def on_validation_epoch_end(self) -> None:
        for name in METRIC_NAMES:
            values = []
            for per_subject in self.val_metrics:
                metric = per_subject[name]
                if metric.preds:  # a subject with fewer than 2 clips in this stage has no score
                    values.append(metric.compute() if len(torch.cat(metric.preds)) > 1 else None)
                metric.reset()
            values = [v for v in values if v is not None]
            if values:
                self.log(f"val/{name}", torch.stack(values).mean(), prog_bar=name == "id_acc")

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self):
        linear = list(self.linear.parameters())
        rest = [p for name, p in self.named_parameters() if not name.startswith("linear.")]
        groups = [{"params": linear, "lr": self.linear_lr, "weight_decay": 0.0}]
        if rest:
            groups.append({"params": rest, "lr": self.lr, "weight_decay": self.weight_decay})
        optimizer = torch.optim.AdamW(groups)

        def schedule(epoch: int) -> float:
            # Linear warm-up, then cosine decay to 0 at max_epochs.
            if epoch < self.warmup_epochs:
                return (epoch + 1) / (self.warmup_epochs + 1)
            progress = (epoch - self.warmup_epochs) / max(1, self.max_epochs - self.warmup_epochs)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
