"""Joint audio-video flow model: a Wan-layout video tower and an MMAudio-layout audio tower joined by a fusion module.

Implements the generator protocol (`velocity`, `empty_conditions`). Streams: `video` `(B, 16, T, H, W)` latents and
`audio` `(B, N, 20)` latents; either may be given alone (text-to-video-only / text-to-audio-only). Times per stream
are `(B,)` or per latent frame `(B, T)` / `(B, N)`; t = 1 marks clean condition frames (tasks in `tasks.py`).
`cond` is `{"text": (B, S, text_dim), "text_mask": (B, S) bool}`; masked text tokens are zeroed (Wan's padding).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from avflow.errors import ConfigError
from avflow.models.audio_tower import AudioTower, AudioTowerConfig
from avflow.models.wan import WanConfig, WanVideoTower
from avflow.nn.fusion import FusionOptions, build_fusion, check_fusion, fusion_options
from avflow.nn.temporal_alignment import ALIGNMENTS, TemporalAlignment


@dataclass(frozen=True, kw_only=True)
class JointConfig:
    """Default: a small model for the procedural world (MiniLM text, world codecs' latent shapes)."""

    video: WanConfig = field(default_factory=WanConfig)
    audio: AudioTowerConfig = field(default_factory=AudioTowerConfig)
    fusion: str = "bidirectional"  # a variant of avflow.nn.fusion.FUSIONS
    fusion_options: dict = field(default_factory=dict)  # its options dataclass as a mapping; {}: the variant's defaults
    alignment: str = "none"  # temporal RoPE of cross-modal attention: none | avsync | seconds (temporal_alignment)
    text_dim: int = 384
    text_len: int = 32
    video_fps: float = 16.0  # frames per second of the pixel video
    video_temporal_stride: int = 4  # pixel frames per video latent frame (plain T / 4, see world_video_ae.py)
    audio_latent_rate: float = 31.25  # audio latents per second

    def __post_init__(self) -> None:
        if self.video.text_dim != self.text_dim or self.audio.text_dim != self.text_dim:
            raise ConfigError(
                f"text_dim {self.text_dim} must equal video.text_dim {self.video.text_dim} "
                f"and audio.text_dim {self.audio.text_dim}"
            )
        if self.alignment not in ALIGNMENTS:
            raise ConfigError(
                f"alignment: unknown temporal alignment {self.alignment!r} (choose from {', '.join(ALIGNMENTS)})"
            )
        n_layers = max(self.video.num_layers, self.audio.depth)
        check_fusion(self.fusion, self.fusion_options, self.alignment, video_dim=self.video.dim,
                     audio_dim=self.audio.hidden_dim, n_layers=n_layers)  # fmt: skip

    @property
    def fusion_config(self) -> FusionOptions:
        """The fusion variant's typed options."""
        return fusion_options(self.fusion, self.fusion_options)


def video_frame_seconds(n_latent: int, fps: float, stride: int, device=None) -> Tensor:
    """Centre time (s) of each video latent frame: latent j covers pixel frames [stride j, stride (j + 1))."""
    return (torch.arange(n_latent, device=device, dtype=torch.float64) * stride + (stride - 1) / 2) / fps


def audio_token_seconds(n: int, rate: float, device=None) -> Tensor:
    """Centre time (s) of each audio latent."""
    return (torch.arange(n, device=device, dtype=torch.float64) + 0.5) / rate


class JointModel(nn.Module):
    """Video tower + audio tower + fusion; velocity in the t = 1 data convention."""

    def __init__(self, config: JointConfig | None = None):
        super().__init__()
        self.config = c = config or JointConfig()
        self.video = WanVideoTower(c.video)
        self.audio = AudioTower(c.audio)
        alignment = TemporalAlignment(c.alignment, video_period=c.video_temporal_stride / c.video_fps)
        dims, blocks = (self.video.dim, self.audio.dim), (self.video.n_blocks, self.audio.n_blocks)
        self.fusion = build_fusion(c.fusion, *dims, *blocks, c.fusion_config, alignment)

    def empty_conditions(self, batch: int) -> dict[str, Tensor]:
        device = next(self.parameters()).device
        c = self.config
        return {
            "text": torch.zeros(batch, c.text_len, c.text_dim, device=device),
            "text_mask": torch.zeros(batch, c.text_len, dtype=torch.bool, device=device),
        }

    def _text(self, cond: dict[str, Tensor]) -> Tensor:
        text = cond["text"]
        mask = cond.get("text_mask")
        return text if mask is None else text * mask[..., None].to(text.dtype)

    def velocity(
        self, streams: dict[str, Tensor], t: dict[str, Tensor], cond: dict[str, Tensor], *, cross_modal: bool = True
    ) -> dict[str, Tensor]:
        unknown = set(streams) - {"video", "audio"}
        if unknown or not streams:
            raise ConfigError(f"joint model streams are 'video' and/or 'audio', got {sorted(streams)}")
        text = self._text(cond)
        c = self.config
        out = {}
        if "video" in streams and "audio" in streams:
            xv, xa = streams["video"], streams["audio"]
            v = self.video.embed(xv, 1000.0 * (1.0 - t["video"]), text)
            a = self.audio.embed(xa, t["audio"], text)
            v.seconds = video_frame_seconds(v.grid[0], c.video_fps, c.video_temporal_stride, xv.device)
            a.seconds = audio_token_seconds(a.grid[0], c.audio_latent_rate, xa.device)
            if cond.get("region_mask") is not None:  # teacher-forced region mask for region-aware fusion
                v.extras["region_mask"] = cond["region_mask"]
            self.fusion.run(self.video, self.audio, v, a, cross_modal)
            return {"video": -self.video.head(v), "audio": self.audio.head(a)}
        if "video" in streams:
            out["video"] = self.video.velocity(streams["video"], t["video"], text)
        if "audio" in streams:
            out["audio"] = self.audio(streams["audio"], t["audio"], text)
        return out

    def forward(self, streams: dict[str, Tensor], t: dict[str, Tensor], cond: dict[str, Tensor]) -> dict[str, Tensor]:
        return self.velocity(streams, t, cond)
