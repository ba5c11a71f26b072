"""Audio-video fusion modules, chosen by name from `FUSIONS` (one file per variant)."""

from __future__ import annotations

from avflow.errors import ConfigError
from avflow.nn.fusion.base import Fusion, TowerState, block_schedule
from avflow.nn.fusion.bidirectional import BidirectionalFusion
from avflow.nn.fusion.full_attention import FullAttentionFusion
from avflow.nn.fusion.none import NoFusion
from avflow.nn.fusion.windowed_aligners import WindowedAlignerFusion

FUSIONS: dict[str, type[Fusion]] = {
    "none": NoFusion,
    "bidirectional": BidirectionalFusion,
    "full_attention": FullAttentionFusion,
    "windowed_aligners": WindowedAlignerFusion,
}


def build_fusion(name: str, video_dim: int, audio_dim: int, video_blocks: int, audio_blocks: int, **options) -> Fusion:
    """`FUSIONS[name](video_dim, audio_dim, video_blocks, audio_blocks, **options)` with a clear error on bad names."""
    if name not in FUSIONS:
        raise ConfigError(f"unknown fusion {name!r} (choose from {', '.join(FUSIONS)})")
    try:
        return FUSIONS[name](video_dim, audio_dim, video_blocks, audio_blocks, **options)
    except TypeError as exc:
        raise ConfigError(f"bad options for fusion {name!r}: {exc}") from None


__all__ = ["FUSIONS", "Fusion", "TowerState", "block_schedule", "build_fusion"]
