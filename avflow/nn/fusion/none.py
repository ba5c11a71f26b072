"""No fusion: the two towers run side by side (text-to-video-only and text-to-audio-only baselines)."""

from __future__ import annotations

from dataclasses import dataclass

from avflow.nn.fusion.base import Fusion, FusionOptions


@dataclass(frozen=True, kw_only=True)
class NoFusionOptions(FusionOptions):
    """No options."""


class NoFusion(Fusion):
    """No parameters; `exchange` does nothing."""

    def __init__(
        self,
        video_dim: int,
        audio_dim: int,
        video_blocks: int,
        audio_blocks: int,
        options: NoFusionOptions = NoFusionOptions(),
    ):
        super().__init__(video_dim, audio_dim, video_blocks, audio_blocks)
