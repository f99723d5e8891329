"""Linear contrastive decoder: a per-subject linear map trained with InfoNCE (+ MSE).

The field's newest best (subject-specific linear maps trained with a contrastive objective): the
ridge's linear path alone (`TrainedDecoder` with no correction), started at the ridge solution and
trained by `loss.contrastive` to tell each clip's embedding from the batch's others.
"""

from __future__ import annotations

from b2m.decoders.base import TrainedDecoder


class ContrastiveDecoder(TrainedDecoder):
    def __init__(self, n_voxels: list[int], n_window: int, target_shape: tuple[int, int], **common) -> None:
        super().__init__(n_voxels, n_window, target_shape, **common)
        self.save_hyperparameters()
