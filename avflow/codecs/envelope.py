"""Fine-time level for the binaural audio codec: a per-ear gain curve that puts each ear's energy where it belongs.

The decoder's 31 ms synthesis window smears a sound's start ahead of it (pre-echo: onsets read about 5 ms early)
and its attacks come out about 3 dB quiet (docs/codecs.md). A small head reads both ears' latents and predicts, for
each ear, a log-gain every `hop` samples (shipped: 125 at 16 kHz, 7.8 ms), which multiplies the decoded ear:

    g_L = h([z_L, z_R]),  g_R = h([z_R, z_L])      (one network for both ears: swapping the ears swaps the gains)
    out_e(t) = exp(g_e(t)) · dec_e(t)               (g_e linear between frame centres, within [−max_db, +max_db])

It is trained, everything else frozen, so that each ear's short-time level (RMS per `hop`) matches the reference's
in the log domain, both floored `floor_db` below the clip's loudest frame (quiet stretches cost nothing).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from avflow.codecs.frame_curves import frame_curve


class EnvelopeHead(nn.Module):
    """`left`, `right` latents `(B, N, C)` -> natural-log gains `(B, 2, N * per_latent)` [left, right]."""

    def __init__(self, channels: int, width: int, per_latent: int, max_db: float, kernel: int = 5):
        super().__init__()
        self.per_latent, self.limit = per_latent, max_db * math.log(10) / 20
        self.net = nn.Sequential(
            nn.Conv1d(2 * channels, width, kernel, padding=kernel // 2), nn.GELU(),
            nn.Conv1d(width, width, kernel, padding=kernel // 2), nn.GELU(),
            nn.Conv1d(width, per_latent, 1),
        )  # fmt: skip
        nn.init.zeros_(self.net[-1].weight)  # starts as unity gain: the decoder as it was
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, left: Tensor, right: Tensor) -> Tensor:
        ears = torch.stack([torch.cat([left, right], -1), torch.cat([right, left], -1)], dim=1)  # (B, 2, N, 2C)
        b, _, n, c = ears.shape
        g = self.net(ears.reshape(2 * b, n, c).transpose(1, 2))  # (2B, per_latent, N)
        g = g.transpose(1, 2).reshape(b, 2, n * self.per_latent)  # frames in time order
        return self.limit * torch.tanh(g / self.limit)


def apply_gains(wav: Tensor, log_gains: Tensor, hop: int) -> Tensor:
    """`wav` `(B, 2, T)` times `exp` of the per-frame `log_gains` `(B, 2, K)`, linear between frame centres."""
    return wav * frame_curve(log_gains, hop, wav.shape[-1]).exp()


def log_envelope(wav: Tensor, hop: int, floor: Tensor) -> Tensor:
    """Natural log of the RMS of `wav` `(B, 2, T)` per frame of `hop` samples, at least `floor` `(B, 1, 1)`."""
    frames = wav[..., : wav.shape[-1] // hop * hop].unflatten(-1, (-1, hop))  # (B, 2, K, hop)
    rms = frames.square().mean(-1).add(1e-20).sqrt()
    return torch.maximum(rms, floor).log()


def envelope_floor(wav: Tensor, hop: int, floor_db: float) -> Tensor:
    """`(B, 1, 1)`: `floor_db` below the loudest frame RMS (either ear) of each clip."""
    frames = wav[..., : wav.shape[-1] // hop * hop].unflatten(-1, (-1, hop))
    peak = frames.square().mean(-1).amax(dim=(1, 2)).add(1e-20).sqrt()  # (B,)
    return (peak * 10 ** (-floor_db / 20))[:, None, None]


def interaural_level_error(levels: Tensor, reference: Tensor, floor: Tensor) -> Tensor:
    """Mean |(left − right) of `levels` − (left − right) of `reference`| (both `(B, 2, K)` natural-log levels from
    `log_envelope`) over the frames where either reference ear is above `floor` `(B, 1, 1)` (zero when none is)."""
    loud = (reference > floor.log() + 1e-6).any(dim=1)  # (B, K)
    diff = ((levels[:, 0] - levels[:, 1]) - (reference[:, 0] - reference[:, 1])).abs()
    return (diff * loud).sum() / loud.sum().clamp_min(1)
