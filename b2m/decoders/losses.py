"""Training losses on standardised embeddings `[B, L, D]`, weighted by the decoder config."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(pred, target)


def cosine_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity of each flattened prediction with its target, batch mean."""
    return 1.0 - F.cosine_similarity(pred.flatten(1), target.flatten(1), dim=1).mean()


def contrastive_loss(pred: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE over the batch: each prediction must pick its own target among the
    batch's targets (and each target its prediction), which trains identification directly."""
    p = F.normalize(pred.flatten(1), dim=1)
    t = F.normalize(target.flatten(1), dim=1)
    logits = p @ t.T / temperature
    labels = torch.arange(len(p), device=p.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def combined_loss(pred: torch.Tensor, target: torch.Tensor, mse: float, cosine: float,
                  contrastive: float, temperature: float) -> dict[str, torch.Tensor]:
    """The weighted sum (`loss`) and its non-zero terms, for logging."""
    terms = {}
    if mse:
        terms["mse"] = mse_loss(pred, target)
    if cosine:
        terms["cosine"] = cosine_loss(pred, target)
    if contrastive and len(pred) > 1:
        terms["contrastive"] = contrastive_loss(pred, target, temperature)
    weights = {"mse": mse, "cosine": cosine, "contrastive": contrastive}
    terms["loss"] = sum(weights[k] * v for k, v in terms.items())
    return terms
