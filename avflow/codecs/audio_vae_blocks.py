"""Magnitude-preserving 1-D layers (EDM2) used by MMAudio's audio VAE."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def normalize(x: torch.Tensor, dim: int | list[int] | None = None, eps: float = 1e-4) -> torch.Tensor:
    """Scale x to unit RMS over `dim` (default: every dim but the first)."""
    dim = list(range(1, x.ndim)) if dim is None else dim
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True, dtype=torch.float32)
    norm = eps + norm * math.sqrt(norm.numel() / x.numel())
    return x / norm.to(x.dtype)


def mp_silu(x: torch.Tensor) -> torch.Tensor:
    return F.silu(x) / 0.596


def mp_sum(a: torch.Tensor, b: torch.Tensor, t: float = 0.5) -> torch.Tensor:
    return a.lerp(b, t) / math.sqrt((1 - t) ** 2 + t**2)


class MPConv1D(nn.Module):
    """Convolution with forced weight normalization: effective weight = normalize(w) / sqrt(fan_in) * gain.

    Official checkpoints store the raw `weight`; `fold()` bakes the normalization in (MMAudio's
    remove_weight_norm), after which the stored weight is used as is.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size))
        self.folded = False

    def effective_weight(self) -> torch.Tensor:
        if self.folded:
            return self.weight
        w = normalize(self.weight.float())
        return (w / math.sqrt(w[0].numel())).to(self.weight.dtype)

    @torch.no_grad()
    def fold(self) -> MPConv1D:
        if not self.folded:
            self.weight.copy_(self.effective_weight())
            self.folded = True
        return self

    def forward(self, x: torch.Tensor, gain: float | torch.Tensor = 1.0) -> torch.Tensor:  # (B, C_in, T)
        w = self.effective_weight() * gain
        return F.conv1d(x, w, padding=w.shape[-1] // 2)  # (B, C_out, T)


class ResnetBlock1D(nn.Module):
    """Pixel norm -> (mp_silu, conv) x 2, magnitude-preserving residual sum (t = 0.3)."""

    def __init__(self, in_dim: int, out_dim: int | None = None, kernel_size: int = 3):
        super().__init__()
        out_dim = in_dim if out_dim is None else out_dim
        self.conv1 = MPConv1D(in_dim, out_dim, kernel_size)
        self.conv2 = MPConv1D(out_dim, out_dim, kernel_size)
        self.nin_shortcut = MPConv1D(in_dim, out_dim, 1) if in_dim != out_dim else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, T) -> (B, C_out, T)
        x = normalize(x, dim=1)
        h = self.conv2(mp_silu(self.conv1(mp_silu(x))))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return mp_sum(x, h, t=0.3)


class AttnBlock1D(nn.Module):
    """Self-attention over time with pixel-normed q, k, v (interleaved per channel in the qkv projection)."""

    def __init__(self, channels: int, num_heads: int = 1):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = MPConv1D(channels, channels * 3, 1)
        self.proj_out = MPConv1D(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T)
        b, _, length = x.shape
        y = self.qkv(x).reshape(b, self.num_heads, -1, 3, length)  # (B, H, C / H, 3, T)
        q, k, v = (t.transpose(-1, -2) for t in normalize(y, dim=2).unbind(3))  # (B, H, T, C / H)
        h = F.scaled_dot_product_attention(q, k, v)
        h = h.transpose(-1, -2).reshape(b, -1, length)  # (B, C, T)
        return mp_sum(x, self.proj_out(h), t=0.3)


class Downsample1D(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = MPConv1D(channels, channels, 1)
        self.conv2 = MPConv1D(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T) -> (B, C, T // 2)
        return self.conv2(F.avg_pool1d(self.conv1(x), kernel_size=2, stride=2))


class Upsample1D(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = MPConv1D(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T) -> (B, C, 2 T)
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest-exact"))
