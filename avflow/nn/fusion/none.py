"""No fusion: the two towers run side by side (text-to-video-only and text-to-audio-only baselines)."""

from __future__ import annotations

from avflow.nn.fusion.base import Fusion


class NoFusion(Fusion):
    """No parameters; `exchange` does nothing."""
