"""Region-aware modulation (UniAVGen's face-aware modulation): a head predicting a soft spatial mask over video tokens
that gates how much the audio-video interaction touches each token, supervised by region masks (`mask_loss`).

A region mask is `(B, T', H', W')` on the video token grid or `(B, L)`, or per-object masks `(B, T, K, H, W)` at any
resolution (the world's object masks), which `token_mask` pools onto the token grid (`region_target`). The joint task
(`avflow.train.joint_task`, `mask_loss_weight`) supervises the head's predictions with `cond["region_mask"]`; the
modulation itself uses the prediction in training (see `windowed_aligners`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avflow.errors import ConfigError


class RegionModulation(nn.Module):
    """Video tokens `(B, L, D)` -> soft mask `(B, L)` in (0, 1); starts at 0.5 everywhere (zero last layer)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.hidden = nn.Linear(dim, dim)
        self.logit = nn.Linear(dim, 1)
        nn.init.zeros_(self.logit.weight)
        nn.init.zeros_(self.logit.bias)

    def forward(self, video: Tensor) -> Tensor:
        return torch.sigmoid(self.logit(F.gelu(self.hidden(self.norm(video))))).squeeze(-1)  # (B, L)


def flat_mask(mask: Tensor, batch: int, tokens: int) -> Tensor:
    """A mask `(B, T, H, W)` on the token grid or `(B, L)` -> float `(B, L)`, with a clear error on a wrong shape."""
    flat = mask.reshape(mask.shape[0], -1).float() if mask.ndim > 2 else mask.float()
    if flat.shape != (batch, tokens):
        raise ConfigError(f"region mask {tuple(mask.shape)} does not cover {tokens} video tokens for batch {batch}")
    return flat


def region_target(masks: Tensor, grid: tuple[int, int, int]) -> Tensor:
    """Object masks `(B, T, K, H, W)` (world clips, pixel resolution) -> soft union on the token grid `(B, T', H', W')`.

    Each token's target is the fraction of its pixels covered by any object.
    """
    union = masks.float().amax(dim=2)[:, None]  # (B, 1, T, H, W)
    return F.adaptive_avg_pool3d(union, grid)[:, 0]


def token_mask(mask: Tensor, grid: tuple[int, ...]) -> Tensor:
    """A region mask on the token grid `grid` = (T', H', W'): object masks `(B, T, K, H, W)` pooled by `region_target`,
    any other mask as given (`flat_mask` checks it)."""
    return region_target(mask, tuple(grid)) if mask.ndim == 5 else mask


def mask_loss(pred_mask: Tensor | list[Tensor], target_mask: Tensor) -> Tensor:
    """Binary cross-entropy between predicted masks `(B, L)` (or a list of them, averaged) and a target `(B, ...)`.

    Computed in float32 by hand (`F.binary_cross_entropy` refuses autocast), with the predictions clamped to
    [1e-6, 1 - 1e-6]."""
    preds = pred_mask if isinstance(pred_mask, list | tuple) else [pred_mask]
    if not preds:
        raise ConfigError("mask_loss got no predicted masks (is region modulation on?)")
    target = flat_mask(target_mask, *preds[0].shape)
    losses = []
    for p in preds:
        p = p.float().clamp(1e-6, 1 - 1e-6)
        losses.append(-(target * p.log() + (1 - target) * (1 - p).log()).mean())
    return torch.stack(losses).mean()
