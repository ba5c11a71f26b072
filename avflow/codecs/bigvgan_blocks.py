"""BigVGAN building blocks: snake activations, kaiser-sinc resampling, anti-aliased AMP residual blocks."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def kaiser_sinc_filter(cutoff: float, half_width: float, kernel_size: int) -> torch.Tensor:
    """Kaiser-windowed sinc low-pass filter (1, 1, kernel_size), summing to 1; cutoff in cycles per sample."""
    half = kernel_size // 2
    attenuation = 2.285 * (half - 1) * math.pi * (4 * half_width) + 7.95  # dB, Kaiser's design formula
    if attenuation > 50.0:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation >= 21.0:
        beta = 0.5842 * (attenuation - 21.0) ** 0.4 + 0.07886 * (attenuation - 21.0)
    else:
        beta = 0.0
    window = torch.kaiser_window(kernel_size, periodic=False, beta=beta)
    if kernel_size % 2 == 0:
        time = torch.arange(-half, half) + 0.5
    else:
        time = torch.arange(kernel_size) - half
    taps = 2 * cutoff * window * torch.sinc(2 * cutoff * time)
    return (taps / taps.sum()).view(1, 1, kernel_size)


class LowPassFilter(nn.Module):
    """Depthwise low-pass with replicate padding, optionally strided (decimation)."""

    def __init__(self, cutoff: float, half_width: float, stride: int = 1, kernel_size: int = 12):
        super().__init__()
        self.stride = stride
        self.pad_left = kernel_size // 2 - int(kernel_size % 2 == 0)
        self.pad_right = kernel_size // 2
        self.register_buffer("filter", kaiser_sinc_filter(cutoff, half_width, kernel_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T)
        x = F.pad(x, (self.pad_left, self.pad_right), mode="replicate")
        return F.conv1d(x, self.filter.expand(x.shape[1], -1, -1), stride=self.stride, groups=x.shape[1])


class DownSample(nn.Module):
    def __init__(self, ratio: int = 2, kernel_size: int = 12):
        super().__init__()
        self.lowpass = LowPassFilter(0.5 / ratio, 0.6 / ratio, stride=ratio, kernel_size=kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T) -> (B, C, T // ratio)
        return self.lowpass(x)


class UpSample(nn.Module):
    """Zero-stuffing transposed convolution with the kaiser-sinc filter; (B, C, T) -> (B, C, T * ratio)."""

    def __init__(self, ratio: int = 2, kernel_size: int = 12):
        super().__init__()
        self.ratio = ratio
        self.pad = kernel_size // ratio - 1
        self.crop_left = self.pad * ratio + (kernel_size - ratio) // 2
        self.crop_right = self.pad * ratio + (kernel_size - ratio + 1) // 2
        self.register_buffer("filter", kaiser_sinc_filter(0.5 / ratio, 0.6 / ratio, kernel_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        x = F.pad(x, (self.pad, self.pad), mode="replicate")
        x = F.conv_transpose1d(x, self.filter.expand(channels, -1, -1), stride=self.ratio, groups=channels)
        return self.ratio * x[..., self.crop_left : x.shape[-1] - self.crop_right]


class Snake(nn.Module):
    """x + 1/b * sin^2(a x) per channel; b = a for plain snake, a separate parameter for snake-beta."""

    def __init__(self, channels: int, with_beta: bool = True, logscale: bool = True):
        super().__init__()
        self.logscale = logscale
        init = torch.zeros(channels) if logscale else torch.ones(channels)
        self.alpha = nn.Parameter(init.clone())
        self.beta = nn.Parameter(init.clone()) if with_beta else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T)
        alpha = self.alpha[None, :, None]
        beta = alpha if self.beta is None else self.beta[None, :, None]
        if self.logscale:
            alpha, beta = alpha.exp(), beta.exp()
        return x + (1.0 / (beta + 1e-9)) * torch.sin(x * alpha).pow(2)


class AntiAliasedActivation(nn.Module):
    """Upsample x2, snake, low-pass and decimate x2 (keeps the snake's harmonics from aliasing)."""

    def __init__(self, channels: int, with_beta: bool = True, logscale: bool = True):
        super().__init__()
        self.act = Snake(channels, with_beta, logscale)
        self.upsample = UpSample(2, 12)
        self.downsample = DownSample(2, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(self.act(self.upsample(x)))


def same_padding(kernel_size: int, dilation: int = 1) -> int:
    return (kernel_size * dilation - dilation) // 2


class AMPBlock1(nn.Module):
    """Anti-aliased multi-periodicity block: per dilation, act -> dilated conv -> act -> conv, residual."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...], with_beta: bool, logscale: bool):
        super().__init__()
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=same_padding(kernel_size, d))
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, padding=same_padding(kernel_size)) for _ in dilations
        )
        self.activations = nn.ModuleList(
            AntiAliasedActivation(channels, with_beta, logscale) for _ in range(2 * len(dilations))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T)
        for i, (conv1, conv2) in enumerate(zip(self.convs1, self.convs2)):
            h = conv1(self.activations[2 * i](x))
            h = conv2(self.activations[2 * i + 1](h))
            x = x + h
        return x


class AMPBlock2(nn.Module):
    """Lighter AMP block: per dilation, act -> dilated conv, residual."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...], with_beta: bool, logscale: bool):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=same_padding(kernel_size, d))
            for d in dilations
        )
        self.activations = nn.ModuleList(AntiAliasedActivation(channels, with_beta, logscale) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, act in zip(self.convs, self.activations):
            x = x + conv(act(x))
        return x
