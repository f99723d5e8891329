"""The engine's precisions: fp32, bf16, fp16 (weights cast once) and int8 (weight-only).

int8 stores every matrix weight of the step as int8 with one scale per output row
(symmetric, per channel: W[n, :] ~ q[n, :] * scale[n], |q| <= 127), the scheme of torchao's
`Int8WeightOnlyConfig`; activations run in bf16. On CPU the product is torch's
`_weight_int8pack_mm` kernel, which reads the int8 weights directly: the step streams a
quarter of fp32's weight bytes. Elsewhere the weight is dequantised per product (correct, but
no bandwidth saving). int8 changes the model, not only the arithmetic, so `auto` never picks it.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from b2m.reconstruction.musicgen.lm import MusicGenLM

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISIONS = (*DTYPES, "int8")


class Int8Linear(nn.Module):
    """A bias-free Linear with int8 weights `weight` [N, K] and scales `scale` [N] (bf16)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        if linear.bias is not None:
            raise ValueError("Int8Linear: only bias-free linear layers are quantised")
        w = linear.weight.detach().float()
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127
        self.register_buffer("weight", torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale.to(torch.bfloat16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., K] bf16 -> [..., N] bf16."""
        if x.device.type == "cpu":
            flat = x.reshape(-1, x.shape[-1]).to(torch.bfloat16).contiguous()
            out = torch.ops.aten._weight_int8pack_mm(flat, self.weight, self.scale)
            return out.view(*x.shape[:-1], -1)
        return F.linear(x, self.weight.to(x.dtype) * self.scale[:, None].to(x.dtype))


def supported(device: torch.device) -> list[str]:
    """Precisions the device can run, fastest-first candidates for `auto` (int8 excluded)."""
    if device.type == "cuda":
        return ["bf16", "fp16", "fp32"] if torch.cuda.is_bf16_supported() else ["fp16", "fp32"]
    if device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return ["bf16", "fp32"]
    return ["fp32"]


def apply_precision(lm: MusicGenLM, precision: str) -> MusicGenLM:
    """Cast (fp32/bf16/fp16) or quantise (int8) `lm` in place, from its current weights."""
    if precision == "int8":
        for parent in list(lm.modules()):  # the step's products (all bias-free), not cond_proj
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear) and child.bias is None:
                    setattr(parent, name, Int8Linear(child))
        return lm.set_precision(torch.bfloat16)  # embeddings and the conditioning projection
    return lm.set_precision(DTYPES[precision])
