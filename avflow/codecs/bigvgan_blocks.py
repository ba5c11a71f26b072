"""BigVGAN building blocks: snake activations, kaiser-sinc resampling (polyphase), anti-aliased AMP residual blocks."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from avflow.nn import fft_conv


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


# Besides (B, C, T), the blocks take "frames": (B, C, 1, T) tensors in channels-last memory, i.e. (B, T, C) in
# memory, where CPU convolutions of few channels over long T run 1.2-2.5x faster, and depthwise filters ~5x faster.


def to_frames(x: torch.Tensor) -> torch.Tensor:
    """(B, C, T) -> (B, C, 1, T) channels-last."""
    return x.unsqueeze(2).contiguous(memory_format=torch.channels_last)


def from_frames(x: torch.Tensor) -> torch.Tensor:
    """(B, C, 1, T) -> (B, C, T) contiguous."""
    return x[:, :, 0].contiguous()


def conv_frames(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """A Conv1d applied to x (B, C_in, T) or frames (B, C_in, 1, T); same layout out. Float32 CPU inference runs
    the long kernels by FFT where `fft_conv.pays_off` (not under `torch.use_deterministic_algorithms(True)`)."""
    if by_fft(conv, x):
        tokens = x.transpose(1, 2) if x.ndim == 3 else x[:, :, 0].transpose(1, 2)  # (B, T, C_in)
        y = fft_conv.conv1d_tokens(tokens, conv.weight, conv.bias, conv.dilation[0], fft_conv.N_FFT)
        return y.transpose(1, 2).contiguous() if x.ndim == 3 else y.transpose(1, 2).unsqueeze(2)
    if x.ndim == 3:
        return conv(x)
    return F.conv2d(
        x, conv.weight.unsqueeze(2), conv.bias, (1, conv.stride[0]), (0, conv.padding[0]), (1, conv.dilation[0])
    )


def by_fft(conv: nn.Conv1d, x: torch.Tensor) -> bool:
    """Whether `conv_frames` takes the FFT path for this C -> C 'same' convolution on x."""
    c_out, c_in, k = conv.weight.shape
    return (
        c_out == c_in
        and conv.stride == (1,)
        and conv.groups == 1
        and conv.padding == (conv.dilation[0] * (k - 1) // 2,)
        and not torch.is_grad_enabled()
        and x.device.type in ("cpu", "meta")  # meta: FLOP counts see the path the CPU takes
        and x.dtype == conv.weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and not torch.are_deterministic_algorithms_enabled()
        and fft_conv.pays_off(c_in, x.shape[-1], k)
    )


def conv_transpose_frames(conv: nn.ConvTranspose1d, x: torch.Tensor) -> torch.Tensor:
    """A ConvTranspose1d applied to frames (B, C_in, 1, T) -> (B, C_out, 1, T * stride)."""
    return F.conv_transpose2d(x, conv.weight.unsqueeze(2), conv.bias, (1, conv.stride[0]), (0, conv.padding[0]))


def replicate_pad(x: torch.Tensor, left: torch.Tensor, right: torch.Tensor, width: int) -> torch.Tensor:
    """Frames x (B, C, 1, T) with `width` copies of `left` / `right` (B, C, 1, 1) before / after, channels-last.

    Concatenated in the memory order (B, 1, T, C), where each piece is one contiguous block."""
    rows = [v.permute(0, 2, 3, 1) for v in (left, x, right)]  # (B, 1, T, C) views
    shape = (*rows[1].shape[:2], width, rows[1].shape[-1])
    out = torch.cat([rows[0].expand(shape), rows[1], rows[2].expand(shape)], dim=2)
    return out.permute(0, 3, 1, 2)  # (B, C, 1, T + 2 width), channels-last


def padded_frames(x: torch.Tensor, width: int) -> torch.Tensor:
    """An uninitialised channels-last buffer shaped like frames x (B, C, 1, T) with `width` more columns each side."""
    b, c, _, t = x.shape
    return torch.empty((b, c, 1, t + 2 * width), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)


def depthwise(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """The same filter `taps` (K,) correlated (valid) with every channel of frames x (B, C, 1, T)."""
    channels = x.shape[1]
    weight = taps.view(1, 1, 1, -1).expand(channels, 1, 1, -1).contiguous()
    return F.conv2d(x, weight, groups=channels)


class LowPassFilter(nn.Module):
    """Holds the kaiser-sinc low-pass filter (the official key `lowpass.filter`)."""

    def __init__(self, cutoff: float, half_width: float, kernel_size: int = 12):
        super().__init__()
        self.register_buffer("filter", kaiser_sinc_filter(cutoff, half_width, kernel_size))


class DownSample(nn.Module):
    """Low-pass filter and decimation by 2, replicate-padded (5 left, 6 right) in the reference; taken polyphase.

    With the upsampled signal s split into phases s0[m] = s[2m] and s1[m] = s[2m + 1], each padded by 3 (with s[0]
    on the left and s[2T - 1] on the right, the reference's padding),
    y[m] = sum_j f[2j] s1[m + j] + f[2j + 1] s0[m + j + 1].
    """

    def __init__(self, ratio: int = 2, kernel_size: int = 12):
        super().__init__()
        if (ratio, kernel_size) != (2, 12):
            raise ValueError(f"only ratio 2 and 12 taps are implemented, got {ratio} and {kernel_size}")
        self.lowpass = LowPassFilter(0.5 / ratio, 0.6 / ratio, kernel_size)

    def phase_taps(self) -> tuple[torch.Tensor, torch.Tensor]:
        """7-tap filters for the padded phases s0 and s1."""
        f = self.lowpass.filter.view(-1)
        zero = f.new_zeros(1)
        return torch.cat([zero, f[1::2]]), torch.cat([f[0::2], zero])

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        """Phases (B, C, 1, T) each -> (B, C, 1, T)."""
        first, last = s0[..., :1], s1[..., -1:]
        return self.filter_padded(replicate_pad(s0, first, last, 3), replicate_pad(s1, first, last, 3))

    def filter_padded(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        """Phases already padded by 3 (B, C, 1, T + 6) each -> (B, C, 1, T)."""
        taps0, taps1 = self.phase_taps()
        return depthwise(s0, taps0) + depthwise(s1, taps1)


class UpSample(nn.Module):
    """Zero stuffing by 2 and the kaiser-sinc filter (x2 gain), replicate-padded as in the reference; taken polyphase.

    Output phase r (samples 2m + r) is a 7-tap correlation of the input replicate-padded by 3 with `phase_taps()[r]`.
    """

    def __init__(self, ratio: int = 2, kernel_size: int = 12):
        super().__init__()
        if (ratio, kernel_size) != (2, 12):
            raise ValueError(f"only ratio 2 and 12 taps are implemented, got {ratio} and {kernel_size}")
        self.ratio = ratio
        self.register_buffer("filter", kaiser_sinc_filter(0.5 / ratio, 0.6 / ratio, kernel_size))

    def phase_taps(self) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.ratio * self.filter.view(-1).flip(0)  # g[i] = 2 f[11 - i]
        zero = g.new_zeros(1)
        return torch.cat([g[0::2], zero]), torch.cat([zero, g[1::2]])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames (B, C, 1, T) -> the two phases, (B, C, 1, T) each."""
        taps0, taps1 = self.phase_taps()
        padded = replicate_pad(x, x[..., :1], x[..., -1:], 3)
        return depthwise(padded, taps0), depthwise(padded, taps1)


class Snake(nn.Module):
    """x + 1/b * sin^2(a x) per channel (dim 1); b = a for plain snake, a separate parameter for snake-beta."""

    def __init__(self, channels: int, with_beta: bool = True, logscale: bool = True):
        super().__init__()
        self.logscale = logscale
        init = torch.zeros(channels) if logscale else torch.ones(channels)
        self.alpha = nn.Parameter(init.clone())
        self.beta = nn.Parameter(init.clone()) if with_beta else None

    def coefficients(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, 1 / b), each (C,)."""
        beta = self.alpha if self.beta is None else self.beta
        alpha, beta = (self.alpha.exp(), beta.exp()) if self.logscale else (self.alpha, beta)
        return alpha, 1.0 / (beta + 1e-9)

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, ...); `out`: where to write the result at inference (e.g. the inside of a padded buffer)."""
        shape = (1, -1) + (1,) * (x.ndim - 2)
        alpha, inverse = (v.view(shape) for v in self.coefficients())
        if torch.is_grad_enabled():
            return torch.addcmul(x, torch.sin(x * alpha).pow(2), inverse)
        # Inference in x's dtype: under bf16 autocast the float32 coefficients would promote every snake to float32
        # and back (2.0-2.3x slower vocoders on an AMX CPU, docs/foley.md); a no-op in float32.
        alpha, inverse = alpha.to(x.dtype), inverse.to(x.dtype)
        return torch.addcmul(x, (x * alpha).sin_().square_(), inverse, out=out)


class AntiAliasedActivation(nn.Module):
    """Upsample x2, snake, low-pass and decimate x2 (keeps the snake's harmonics from aliasing), on frames.

    Polyphase: the snake runs on the two phases of the upsampled signal, never interleaved; four depthwise 7-tap
    filters replace the reference's transposed convolution and strided low-pass. With `fused` set (a compiled
    `avflow.codecs.fused_activation.anti_aliased_snake`, `BigVGAN.compile_activations`), float32 inference runs
    that one kernel instead.
    """

    def __init__(self, channels: int, with_beta: bool = True, logscale: bool = True):
        super().__init__()
        self.act = Snake(channels, with_beta, logscale)
        self.upsample = UpSample(2, 12)
        self.downsample = DownSample(2, 12)
        self.fused: Callable[..., torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Frames (B, C, 1, T) -> frames; (B, C, T) -> (B, C, T) (computed on frames)."""
        if x.ndim == 3:
            return from_frames(self(to_frames(x)))
        if self.fused is not None and self.runs_fused(x):
            alpha, inverse = self.act.coefficients()
            return self.fused(x, alpha, inverse, self.upsample.phase_taps(), self.downsample.phase_taps())
        u0, u1 = self.upsample(x)
        if torch.is_grad_enabled():
            return self.downsample(self.act(u0), self.act(u1))
        # Inference: the snake writes straight into the padded phases the low-pass reads.
        t = x.shape[-1]
        s0, s1 = (padded_frames(u, 3) for u in (u0, u1))
        self.act(u0, out=s0[..., 3 : 3 + t])
        self.act(u1, out=s1[..., 3 : 3 + t])
        first, last = s0[..., 3:4], s1[..., 2 + t : 3 + t]
        for s in (s0, s1):
            s[..., :3] = first
            s[..., 3 + t :] = last
        return self.downsample.filter_padded(s0, s1)

    @staticmethod
    def runs_fused(x: torch.Tensor) -> bool:
        """Whether a fused kernel takes frames x: float32 inference outside autocast (where it was checked)."""
        return not torch.is_grad_enabled() and x.dtype == torch.float32 and not torch.is_autocast_enabled(x.device.type)


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T) or frames (B, C, 1, T)
        for i, (conv1, conv2) in enumerate(zip(self.convs1, self.convs2)):
            h = conv_frames(conv1, self.activations[2 * i](x))
            h = conv_frames(conv2, self.activations[2 * i + 1](h))
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T) or frames (B, C, 1, T)
        for conv, act in zip(self.convs, self.activations):
            x = x + conv_frames(conv, act(x))
        return x
