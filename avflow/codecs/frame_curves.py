"""Per-frame values as a per-sample curve: the one interpolation the codec's decoder heads share."""

from __future__ import annotations

import torch
from torch import Tensor


def frame_curve(values: Tensor, hop: int, length: int) -> Tensor:
    """`values` `(..., K)` given at the centres of K frames of `hop` samples -> `(..., length)`, linear between
    centres and held constant before the first and after the last."""
    k = values.shape[-1]
    if k == 1:
        return values.expand(*values.shape[:-1], length)
    centres = (torch.arange(k, dtype=values.dtype, device=values.device) + 0.5) * hop  # (K,)
    pos = torch.arange(length, dtype=values.dtype, device=values.device)  # (length,)
    right = torch.searchsorted(centres, pos).clamp(1, k - 1)  # (length,) index of the next centre
    w = ((pos - centres[right - 1]) / hop).clamp(0.0, 1.0)
    return values[..., right - 1] * (1 - w) + values[..., right] * w
