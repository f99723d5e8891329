"""The decoder contract: windows `[B, W, V]` of one subject -> embeddings `[B, L, D]`.

`Decoder` is the interface; `TrainedDecoder` adds what every gradient-trained decoder
shares (target standardisation, losses, metrics per stage, optimiser and schedule), so a
new architecture only defines its layers and `encode`.
"""

from __future__ import annotations

import math

import numpy as np
import pytorch_lightning as pl
import torch

from b2m.decoders.losses import combined_loss
from b2m.core.metrics import DecodingMetric

METRIC_NAMES = ("id_acc", "top1")


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

    @torch.no_grad()
    def predict_windows(self, x: np.ndarray, subject: int, batch_size: int = 64) -> np.ndarray:
        """Outputs for windows `x` `[N, W, V]` of one subject: float32 `[N, L, D]`, in eval mode."""
        self.eval()
        out = [self(torch.from_numpy(np.asarray(x[lo:lo + batch_size])), subject)
               for lo in range(0, len(x), batch_size)]
        return torch.cat(out).float().numpy()


class TrainedDecoder(Decoder):
    """A decoder trained by gradient descent on standardised targets.

    Subclasses define `encode(x [B, W, V], subject) -> [B, L * D]` (standardised units);
    `forward` maps back to the embedding space with the training targets' mean and std.
    """

    def __init__(self, n_voxels: list[int], n_window: int, target_shape: tuple[int, int], lr: float,
                 weight_decay: float, warmup_epochs: int, max_epochs: int, loss: dict,
                 input_dropout: float) -> None:
        super().__init__(n_voxels, n_window, target_shape)
        self.lr, self.weight_decay = lr, weight_decay
        self.warmup_epochs, self.max_epochs = warmup_epochs, max_epochs
        self.loss_weights = dict(loss)
        self.input_dropout = torch.nn.Dropout(input_dropout)
        n_out = self.target_shape[0] * self.target_shape[1]
        self.register_buffer("target_mean", torch.zeros(n_out))
        self.register_buffer("target_std", torch.ones(n_out))
        # Identification compares clips of one subject with each other: one metric set per
        # subject, averaged over subjects at the end of the validation epoch. (Test metrics are
        # computed by the train job on whole splits, not in a Lightning test loop.)
        self.val_metrics = torch.nn.ModuleList([
            torch.nn.ModuleDict({name: DecodingMetric(name) for name in METRIC_NAMES}) for _ in self.n_voxels
        ])

    def set_target_stats(self, y: torch.Tensor) -> None:
        """Standardise targets with the training split's mean and std, `y` `[N, L, D]`."""
        flat = torch.as_tensor(y, dtype=torch.float32).reshape(len(y), -1)
        self.target_mean.copy_(flat.mean(0))
        self.target_std.copy_(flat.std(0).clamp_min(1e-6))

    def encode(self, x: torch.Tensor, subject: int) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

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
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)

        def schedule(epoch: int) -> float:
            # Linear warm-up, then cosine decay to 0 at max_epochs.
            if epoch < self.warmup_epochs:
                return (epoch + 1) / (self.warmup_epochs + 1)
            progress = (epoch - self.warmup_epochs) / max(1, self.max_epochs - self.warmup_epochs)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
