"""Window planning for long inputs: windows of the model's length on the latent grid, overlapping by `overlap_s`."""

from __future__ import annotations

import math
from dataclasses import dataclass

from avflow.errors import ConfigError

MIN_MODEL_S = 0.64  # shortest clip the network takes (one 16-frame Synchformer segment); shorter clips are padded
EPS = 1e-6


@dataclass(frozen=True, kw_only=True)
class Window:
    """One generation window: starts at latent frame `start` (global grid), lasts `duration` seconds."""

    index: int
    start: int  # latent frames from the video start
    start_s: float
    duration: float  # seconds the window's video features and audio cover (>= MIN_MODEL_S)


def check_windows(window_s: float, overlap_s: float) -> None:
    """A one-line ConfigError unless window >= MIN_MODEL_S and 0 <= overlap < window / 2."""
    if not window_s >= MIN_MODEL_S or not 0 <= overlap_s < window_s / 2:
        raise ConfigError(f"need window >= {MIN_MODEL_S} s and 0 <= overlap < window / 2, got {window_s}, {overlap_s}")


def plan_windows(total_s: float, window_s: float, overlap_s: float, latent_rate: float) -> list[Window]:
    """Windows of `window_s` (the last one may be shorter) covering [0, total_s), starts on the latent grid."""
    check_windows(window_s, overlap_s)
    if total_s <= window_s + EPS:
        return [Window(index=0, start=0, start_s=0.0, duration=max(total_s, MIN_MODEL_S))]
    stride = max(1, round((window_s - overlap_s) * latent_rate))
    starts = []
    m = 0
    while m / latent_rate + window_s < total_s - EPS:
        starts.append(m)
        m += stride
    starts.append(max(starts[-1] + 1, math.ceil((total_s - window_s) * latent_rate - EPS)))
    windows = []
    for i, m in enumerate(starts):
        s = m / latent_rate
        windows.append(Window(index=i, start=m, start_s=s, duration=max(min(window_s, total_s - s), MIN_MODEL_S)))
    return windows
