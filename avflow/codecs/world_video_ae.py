"""Small video autoencoder for the procedural world: `(B, 3, T, H, W)` in [-1, 1] <-> `(B, 16, T/4, H/8, W/8)`.

Temporal layout: plain T / 4 (T must be a multiple of 4), not Wan's causal `1 + (T - 1) // 4`. Latent frame j covers
pixel frames [4j, 4j + 4), so every latent frame spans the same 4 / fps seconds and audio-video alignment is a
constant ratio (see `avflow.models.joint.video_frame_seconds`). The Wan-layout tower is agnostic to the choice.

Deterministic autoencoder with a small latent L2 penalty; `latent_scale` (set by `fit_latent_scale`) makes latents
roughly unit-variance for the flow model. Trainable with `loss`; `reconstruction_metrics` reports MSE and PSNR.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avflow.errors import ConfigError

TEMPORAL_DOWN = 4
SPATIAL_DOWN = 8
LATENT_CHANNELS = 16


@dataclass(frozen=True, kw_only=True)
class WorldVideoAEConfig:
    channels: int = 32
    latent_channels: int = LATENT_CHANNELS
    latent_l2: float = 1e-4


class ResBlock3d(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv3d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv3d(ch, ch, 3, padding=1)
        self.norm = nn.GroupNorm(min(8, ch), ch)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(self.norm(x)))))


def down(ch_in: int, ch_out: int, temporal: bool) -> nn.Module:
    """Stride-2 conv in H, W (and T when `temporal`)."""
    stride = (2 if temporal else 1, 2, 2)
    return nn.Conv3d(ch_in, ch_out, kernel_size=(3, 4, 4), stride=stride, padding=1)


class Upsample(nn.Module):
    """Nearest x2 in H, W (and T when `temporal`) then a 3x3x3 conv."""

    def __init__(self, ch_in: int, ch_out: int, temporal: bool):
        super().__init__()
        self.scale = (2 if temporal else 1, 2, 2)
        self.conv = nn.Conv3d(ch_in, ch_out, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=self.scale, mode="nearest"))


class WorldVideoAE(nn.Module):
    """Three stride-2 stages in space, two in time: 8x spatial, 4x temporal, 16 latent channels."""

    def __init__(self, config: WorldVideoAEConfig | None = None):
        super().__init__()
        self.config = c = config or WorldVideoAEConfig()
        ch = c.channels
        self.encoder = nn.Sequential(
            nn.Conv3d(3, ch, 3, padding=1),
            down(ch, ch, temporal=True),
            ResBlock3d(ch),
            down(ch, 2 * ch, temporal=True),
            ResBlock3d(2 * ch),
            down(2 * ch, 2 * ch, temporal=False),
            ResBlock3d(2 * ch),
            nn.GroupNorm(8, 2 * ch),
            nn.SiLU(),
            nn.Conv3d(2 * ch, c.latent_channels, 1),
        )
        self.decoder = nn.Sequential(
            nn.Conv3d(c.latent_channels, 2 * ch, 3, padding=1),
            ResBlock3d(2 * ch),
            Upsample(2 * ch, 2 * ch, temporal=False),
            ResBlock3d(2 * ch),
            Upsample(2 * ch, ch, temporal=True),
            ResBlock3d(ch),
            Upsample(ch, ch, temporal=True),
            nn.GroupNorm(8, ch),
            nn.SiLU(),
            nn.Conv3d(ch, 3, 3, padding=1),
        )
        self.register_buffer("latent_scale", torch.ones(()))

    @staticmethod
    def latent_shape(frames: int, height: int, width: int) -> tuple[int, int, int]:
        return frames // TEMPORAL_DOWN, height // SPATIAL_DOWN, width // SPATIAL_DOWN

    def check(self, video: Tensor) -> None:
        _, c, t, h, w = video.shape
        if c != 3 or t % TEMPORAL_DOWN or h % SPATIAL_DOWN or w % SPATIAL_DOWN:
            raise ConfigError(f"video {tuple(video.shape)} needs 3 channels, T % 4 == 0 and H, W % 8 == 0")

    def encode(self, video: Tensor) -> Tensor:
        """`(B, 3, T, H, W)` in [-1, 1] -> `(B, 16, T/4, H/8, W/8)` scaled latents."""
        self.check(video)
        return self.encoder(video) / self.latent_scale

    def decode(self, latents: Tensor) -> Tensor:
        return self.decoder(latents * self.latent_scale)

    def loss(self, video: Tensor) -> tuple[Tensor, dict[str, float]]:
        """L1 + MSE reconstruction plus a small latent L2 penalty."""
        self.check(video)
        z = self.encoder(video)
        rec = self.decoder(z)
        l1, mse = (rec - video).abs().mean(), (rec - video).square().mean()
        total = l1 + mse + self.config.latent_l2 * z.square().mean()
        return total, {"l1": l1.item(), "mse": mse.item()}

    @torch.no_grad()
    def fit_latent_scale(self, videos: Tensor) -> float:
        """Set `latent_scale` to the std of the unscaled latents of `videos`."""
        self.latent_scale.fill_(float(self.encoder(videos).std()) or 1.0)
        return float(self.latent_scale)


def frames_to_video(frames: Tensor) -> Tensor:
    """uint8 `(T, H, W, 3)` (world clip frames) -> float `(1, 3, T, H, W)` in [-1, 1]."""
    return (frames.permute(3, 0, 1, 2).float() / 127.5 - 1.0)[None]


def reconstruction_metrics(reference: Tensor, reconstruction: Tensor) -> dict[str, float]:
    """MSE and PSNR (dB) for videos in [-1, 1] (peak-to-peak 2)."""
    mse = float((reconstruction.detach().clamp(-1, 1) - reference).square().mean())
    psnr = 10.0 * torch.log10(torch.tensor(4.0 / max(mse, 1e-12))).item()
    return {"mse": mse, "psnr": psnr}
