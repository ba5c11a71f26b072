"""Video autoencoder for world clips: `(B, 3, T, H, W)` in [-1, 1] <-> `(B, 16, T/4, H/8, W/8)` latents.

Why this shape: world objects are 4-7 px discs and squares with hard edges, so the costly part is keeping edges
exact at full resolution. Frames are therefore coded one by one with 2-D stages first (space-to-depth 2x, then two
stride-2 stages: 8x in space), and only then are the 4 frames of a latent frame folded into channels and mixed
(4x in time). The decoder mirrors it; a temporal 3-tap convolution on the latent grid gives it the neighbouring
latent frames, so the frames on either side of a latent boundary see the same context (no seams). An optional
full-resolution stage (`refine_channels`) then corrects the decoded frames with 3x3 convolutions at H x W: the
last decoder stage works at H/2 and emits 2x2 sub-pixels, so an object's edge is never seen at full resolution
before it. It is decoder-only (`decoder_fields`): adding or training it keeps the latent space and its checksum.

Temporal layout (as the conventions): plain T / 4, latent frame j covers pixel frames [4j, 4j + 4). Latents are
deterministic; `latent_scale` (set by `fit_latent_scale`) makes them unit-variance for the flow models.

Inputs (video and latents) are floating: cast to the weights' dtype; integer ones are an error, and so is a video
outside [-1, 1] by more than `RANGE_LIMIT` (0..255 frames, not yet scaled).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avflow.errors import ConfigError

TEMPORAL_DOWN = 4
SPATIAL_DOWN = 8
RANGE_LIMIT = 1.5  # |video| above this is not [-1, 1] video (the decoder's output is clamped to [-1, 1])
SCALE_HINT = "divide by 127.5 and subtract 1"


@dataclass(frozen=True, kw_only=True)
class WorldVideoCodecConfig:
    """Widths of the 2-D stages at H/2, H/4, H/8 and of the latent."""

    channels: tuple[int, int, int] = (32, 64, 128)
    blocks: tuple[int, int, int] = (1, 1, 1)  # residual blocks per frame-wise 2-D stage
    latent_blocks: int = 2  # blocks on the latent grid (after the 4-frame fold, before the unfold)
    latent_channels: int = 16
    latent_l2: float = 1e-4  # keeps latents bounded for the flow model
    refine_channels: int = 0  # width of the full-resolution stage after the decoder (0: none)
    refine_blocks: int = 2  # its residual blocks

    def __post_init__(self) -> None:
        if len(self.channels) != 3 or len(self.blocks) != 3 or min(self.channels) < 8:
            raise ConfigError(f"video codec: need 3 stage widths >= 8 and 3 block counts, got {self}")
        if self.refine_channels and (self.refine_channels < 8 or self.refine_blocks < 0):
            raise ConfigError(f"video codec: refine_channels must be 0 or >= 8 and refine_blocks >= 0, got {self}")


class ResBlock2d(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.norm = nn.GroupNorm(min(8, ch), ch)
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(self.norm(x)))))


class LatentTemporalMix(nn.Module):
    """3-tap temporal then 3x3 spatial convolution on the latent grid `(B, C, T', h, w)` (residual).

    Replicate padding in time, so a clip's first and last latent frames see themselves as neighbours.
    """

    def __init__(self, ch: int):
        super().__init__()
        self.norm = nn.GroupNorm(min(8, ch), ch)
        self.temporal = nn.Conv3d(ch, ch, (3, 1, 1))
        self.spatial = nn.Conv3d(ch, ch, (1, 3, 3), padding=(0, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        h = F.pad(F.silu(self.norm(x)), (0, 0, 0, 0, 1, 1), mode="replicate")
        return x + self.spatial(F.silu(self.temporal(h)))


def stage(ch: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(*[ResBlock2d(ch) for _ in range(blocks)])


class FullResRefine(nn.Module):
    """Residual correction of decoded frames `(N, 3, H, W)` at full resolution; the output convolution starts at
    zero, so a decoder given this stage starts as it was."""

    def __init__(self, ch: int, blocks: int):
        super().__init__()
        self.inp = nn.Conv2d(3, ch, 3, padding=1)
        self.blocks = stage(ch, blocks)
        self.out = nn.Sequential(nn.GroupNorm(min(8, ch), ch), nn.SiLU(), nn.Conv2d(ch, 3, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, frames: Tensor) -> Tensor:
        return frames + self.out(self.blocks(self.inp(frames)))


class WorldVideoCodec(nn.Module):
    """Frame-wise 2-D encoder -> 4-frame fold -> latent; latent -> temporal mix -> 4-frame unfold -> 2-D decoder."""

    temporal_down = TEMPORAL_DOWN
    spatial_down = SPATIAL_DOWN
    encoder_keys = ("enc_frames.", "enc_fold.", "latent_scale")  # what defines the latent space
    decoder_fields = ("refine_channels", "refine_blocks")  # config fields the latents do not depend on

    def __init__(self, config: WorldVideoCodecConfig | None = None):
        super().__init__()
        self.config = c = config or WorldVideoCodecConfig()
        c0, c1, c2 = c.channels
        n0, n1, n2 = c.blocks
        k = TEMPORAL_DOWN
        self.enc_frames = nn.Sequential(
            nn.Conv2d(12, c0, 3, padding=1), stage(c0, n0),
            nn.Conv2d(c0, c1, 4, stride=2, padding=1), stage(c1, n1),
            nn.Conv2d(c1, c2, 4, stride=2, padding=1), stage(c2, n2),
        )  # fmt: skip
        self.enc_fold = nn.Sequential(
            nn.Conv2d(k * c2, c2, 1), stage(c2, c.latent_blocks),
            nn.GroupNorm(8, c2), nn.SiLU(), nn.Conv2d(c2, c.latent_channels, 1),
        )  # fmt: skip
        self.dec_in = nn.Conv3d(c.latent_channels, c2, (1, 3, 3), padding=(0, 1, 1))
        self.dec_mix = nn.Sequential(*[LatentTemporalMix(c2) for _ in range(c.latent_blocks)])
        self.dec_unfold = nn.Conv2d(c2, k * c2, 1)
        self.dec_frames = nn.Sequential(
            stage(c2, n2), nn.Conv2d(c2, 4 * c1, 1), nn.PixelShuffle(2),
            stage(c1, n1), nn.Conv2d(c1, 4 * c0, 1), nn.PixelShuffle(2),
            stage(c0, n0), nn.GroupNorm(8, c0), nn.SiLU(), nn.Conv2d(c0, 12, 3, padding=1),
        )  # fmt: skip
        self.refine = FullResRefine(c.refine_channels, c.refine_blocks) if c.refine_channels else None
        self.register_buffer("latent_scale", torch.ones(()))

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    @staticmethod
    def latent_shape(frames: int, height: int, width: int) -> tuple[int, int, int]:
        return frames // TEMPORAL_DOWN, height // SPATIAL_DOWN, width // SPATIAL_DOWN

    @classmethod
    def check(cls, video: Tensor) -> None:
        """One-line ConfigError unless `video` is a float `(B, 3, T, H, W)` tensor in [-1, 1] (within `RANGE_LIMIT`)
        with B >= 1 and T, H, W positive multiples of the codec's strides (`temporal_down`, `spatial_down`): a
        shorter or ragged video has no whole latent."""
        if not isinstance(video, Tensor) or video.ndim != 5:
            raise ConfigError(f"video must be a (B, 3, T, H, W) tensor, got {_shape(video)}")
        b, c, t, h, w = video.shape
        kt, ks = cls.temporal_down, cls.spatial_down
        if b < 1 or c != 3 or min(t // kt, h // ks, w // ks) < 1 or t % kt or h % ks or w % ks:
            raise ConfigError(f"video {tuple(video.shape)} needs B >= 1, 3 channels, T a positive multiple of {kt} and "
                              f"H, W positive multiples of {ks}")  # fmt: skip
        if not video.is_floating_point():
            raise ConfigError(f"video must be float in [-1, 1], got {video.dtype}: {SCALE_HINT}")
        lo, hi = torch.aminmax(video.detach())
        peak = float(torch.maximum(-lo, hi))
        if not math.isfinite(peak):
            raise ConfigError("video holds NaN or infinite values")
        if peak > RANGE_LIMIT:
            raise ConfigError(f"video expects [-1, 1]; got values up to {peak:.4g}: {SCALE_HINT}")

    def _weights_dtype(self, x: Tensor) -> Tensor:
        """Checked floating input in the weights' dtype (float64 or bf16 codes as the fp32 weights would)."""
        return x.to(self.dec_in.weight.dtype)

    def _check_latents(self, z: Tensor) -> Tensor:
        """`z` `(B, latent_channels, T', h, w)` with every size >= 1, floating, in the weights' dtype (a one-line
        ConfigError otherwise)."""
        c = self.latent_channels
        if not isinstance(z, Tensor) or z.ndim != 5 or z.shape[1] != c or min(z.shape) < 1:
            raise ConfigError(f"latents must be a (B, {c}, T', h, w) tensor with B, T', h, w >= 1, got {_shape(z)}")
        if not z.is_floating_point():
            raise ConfigError(f"latents must be float (unit-scale latents), got {z.dtype}")
        return self._weights_dtype(z)

    def encode_unscaled(self, video: Tensor) -> Tensor:
        """`(B, 3, T, H, W)` -> `(B, C, T/4, H/8, W/8)` before `latent_scale`."""
        self.check(video)
        video = self._weights_dtype(video)
        b, _, t, h, w = video.shape
        k = TEMPORAL_DOWN
        frames = video.transpose(1, 2).reshape(b * t, 3, h, w)  # (B T, 3, H, W)
        feats = self.enc_frames(F.pixel_unshuffle(frames, 2))  # (B T, c2, H/8, W/8)
        c2, hh, ww = feats.shape[1:]
        folded = feats.reshape(b * t // k, k * c2, hh, ww)  # (B T/4, 4 c2, h, w): frames 4j..4j+3 side by side
        z = self.enc_fold(folded)  # (B T/4, C, h, w)
        return z.reshape(b, t // k, -1, hh, ww).transpose(1, 2)  # (B, C, T/4, h, w)

    def decode_unscaled(self, z: Tensor) -> Tensor:
        """`(B, C, T', h, w)` -> `(B, 3, 4 T', 8 h, 8 w)`."""
        z = self._check_latents(z)
        b, _, tl, hh, ww = z.shape
        k = TEMPORAL_DOWN
        x = self.dec_mix(self.dec_in(z))  # (B, c2, T', h, w)
        c2 = x.shape[1]
        x = self.dec_unfold(x.transpose(1, 2).reshape(b * tl, c2, hh, ww))  # (B T', 4 c2, h, w)
        x = self.dec_frames(x.reshape(b * tl * k, c2, hh, ww))  # (B T, 12, 4 h, 4 w)
        frames = F.pixel_shuffle(x, 2)  # (B T, 3, H, W)
        if self.refine is not None:
            frames = self.refine(frames)
        return frames.reshape(b, tl * k, 3, 8 * hh, 8 * ww).transpose(1, 2)  # (B, 3, T, H, W)

    def encode(self, video: Tensor) -> Tensor:
        """`(B, 3, T, H, W)` in [-1, 1] -> `(B, 16, T/4, H/8, W/8)` unit-scale latents."""
        return self.encode_unscaled(video) / self.latent_scale

    def decode(self, latents: Tensor) -> Tensor:
        """Latents -> video in [-1, 1] (clamped)."""
        return self.decode_unscaled(self._check_latents(latents) * self.latent_scale).clamp(-1.0, 1.0)

    def loss(self, video: Tensor) -> tuple[Tensor, dict[str, float]]:
        """L1 + MSE reconstruction plus a small latent L2 penalty."""
        z = self.encode_unscaled(video)
        rec = self.decode_unscaled(z)
        l1, mse = (rec - video).abs().mean(), (rec - video).square().mean()
        total = l1 + mse + self.config.latent_l2 * z.square().mean()
        return total, {"l1": l1.item(), "mse": mse.item()}

    @torch.no_grad()
    def fit_latent_scale(self, videos: Tensor) -> float:
        """Set `latent_scale` to the std of the unscaled latents of `videos`."""
        self.latent_scale.fill_(float(self.encode_unscaled(videos).std()) or 1.0)
        return float(self.latent_scale)


def _shape(x) -> str:
    return str(tuple(x.shape)) if isinstance(x, Tensor) else type(x).__name__
