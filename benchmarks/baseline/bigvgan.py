"""BigVGAN (v1 16 kHz, v2 44.1 kHz) the reference's way, as a plain function of a state dict.

Anti-aliased activation: replicate pad, depthwise transposed convolution with the kaiser-sinc filter (x2), snake,
replicate pad, strided depthwise low-pass; convolutions on (B, C, T).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Params = dict[str, torch.Tensor]


def snake(p: Params, name: str, x: torch.Tensor, logscale: bool) -> torch.Tensor:
    alpha = p[f"{name}.alpha"][None, :, None]
    beta = p.get(f"{name}.beta", p[f"{name}.alpha"])[None, :, None]
    if logscale:
        alpha, beta = alpha.exp(), beta.exp()
    return x + (1.0 / (beta + 1e-9)) * torch.sin(x * alpha).pow(2)


def anti_aliased(p: Params, name: str, x: torch.Tensor, logscale: bool) -> torch.Tensor:
    channels = x.shape[1]
    up = p[f"{name}.upsample.filter"]  # (1, 1, 12)
    y = F.pad(x, (5, 5), mode="replicate")
    y = 2 * F.conv_transpose1d(y, up.expand(channels, -1, -1), stride=2, groups=channels)
    y = y[..., 15:-15]
    y = snake(p, f"{name}.act", y, logscale)
    down = p[f"{name}.downsample.lowpass.filter"]
    y = F.pad(y, (5, 6), mode="replicate")
    return F.conv1d(y, down.expand(channels, -1, -1), stride=2, groups=channels)


def conv(p: Params, name: str, x: torch.Tensor, dilation: int = 1) -> torch.Tensor:
    w = p[f"{name}.weight"]
    k = w.shape[-1]
    return F.conv1d(x, w, p.get(f"{name}.bias"), padding=(k * dilation - dilation) // 2, dilation=dilation)


def vocode(p: Params, config, mel: torch.Tensor) -> torch.Tensor:
    """Log mel (B, num_mels, frames) -> waveform (B, 1, frames * hop) for a `BigVGANConfig`."""
    logscale, kernels = config.snake_logscale, len(config.resblock_kernel_sizes)
    x = conv(p, "conv_pre", mel)
    for i, (rate, kernel) in enumerate(zip(config.upsample_rates, config.upsample_kernel_sizes)):
        up = f"ups.{i}.0"
        x = F.conv_transpose1d(x, p[f"{up}.weight"], p[f"{up}.bias"], stride=rate, padding=(kernel - rate) // 2)
        total = None
        for j, dilations in enumerate(config.resblock_dilation_sizes):
            name, h = f"resblocks.{i * kernels + j}", x
            for d, dilation in enumerate(dilations):
                if config.resblock == "1":
                    t = anti_aliased(p, f"{name}.activations.{2 * d}", h, logscale)
                    t = conv(p, f"{name}.convs1.{d}", t, dilation)
                    t = anti_aliased(p, f"{name}.activations.{2 * d + 1}", t, logscale)
                    h = h + conv(p, f"{name}.convs2.{d}", t)
                else:
                    t = anti_aliased(p, f"{name}.activations.{d}", h, logscale)
                    h = h + conv(p, f"{name}.convs.{d}", t, dilation)
            total = h if total is None else total + h
        x = total / kernels
    x = conv(p, "conv_post", anti_aliased(p, "activation_post", x, logscale))
    return torch.tanh(x) if config.use_tanh_at_final else x.clamp(-1.0, 1.0)
