"""Temporal positions for attention that mixes audio and video tokens, chosen by name from `ALIGNMENTS`.

- `none`: each stream's own indices (video latent frame j -> j, audio latent n -> n); the rates do not line up.
- `avsync` (AVSyncRoPE): positions in units of one video latent frame. Video frame j -> j; audio latent n ->
  n / τ + offset with τ = Δt_video / Δt_audio (audio latents per video latent frame) and the offset that puts
  tokens at the same wall-clock time on the same position.
- `seconds` (LTX-2 style): both streams on one axis of wall-clock seconds (times `per_second`). RoPE reads only
  position differences, so this is `avsync` with its positions scaled by Δt_video · per_second: the same tokens line
  up, at another rotary frequency per second (the alignment experiment's two arms differ in that scale only).

The cross-modal layers rotate with Wan's 3-D RoPE: the temporal part takes these positions, and audio tokens sit at
the centre of the video grid in the spatial parts (`av_rotary`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from avflow.errors import ConfigError
from avflow.nn.wan_blocks import WanRotary

ALIGNMENTS: dict[str, str] = {
    "none": "each stream's own index positions",
    "avsync": "AVSyncRoPE: audio positions scaled by 1/τ, τ = Δt_video / Δt_audio, in video-frame units",
    "seconds": "LTX-2 style: both streams at their wall-clock seconds",
}


def frame_period(seconds: Tensor, fallback: float | None) -> float:
    """Spacing (s) of a uniformly sampled time axis `(T,)`; `fallback` when there is a single position."""
    if seconds.numel() > 1:
        return float(seconds[1] - seconds[0])
    if fallback is None:
        raise ConfigError("temporal alignment of a single video latent frame needs the video period (video_period)")
    return fallback


@dataclass(frozen=True)
class TemporalAlignment:
    """Maps the streams' seconds `(T,)`, `(N,)` to RoPE temporal positions. `video_period`: s per latent frame."""

    name: str = "none"
    video_period: float | None = None
    per_second: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in ALIGNMENTS:
            raise ConfigError(f"unknown temporal alignment {self.name!r} (choose from {', '.join(ALIGNMENTS)})")

    def positions(self, video_seconds: Tensor, audio_seconds: Tensor) -> tuple[Tensor, Tensor]:
        """-> video positions `(T,)`, audio positions `(N,)` in float64."""
        tv, ta = video_seconds.double(), audio_seconds.double()
        if self.name == "none":
            return torch.arange(len(tv), dtype=torch.float64, device=tv.device), torch.arange(
                len(ta), dtype=torch.float64, device=ta.device
            )
        if self.name == "avsync":
            dt_video = frame_period(tv, self.video_period)
            video = torch.arange(len(tv), dtype=torch.float64, device=tv.device)
            return video, (ta - tv[0]) / dt_video  # = n / τ + (ta[0] - tv[0]) / Δt_video
        return tv * self.per_second, ta * self.per_second


def as_alignment(alignment: TemporalAlignment | str) -> TemporalAlignment:
    return alignment if isinstance(alignment, TemporalAlignment) else TemporalAlignment(alignment)


def av_rotary(
    rope: WanRotary, video_grid: tuple[int, int, int], video_positions: Tensor, audio_positions: Tensor
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Wan 3-D RoPE tables for video tokens `(1, T*H*W, 1, d)` and audio tokens `(1, N, 1, d)`.

    Video tokens get (temporal position, row, column); audio tokens get (temporal position, grid centre).
    """
    frames, height, width = video_grid
    device = video_positions.device
    video = rope(frames, height, width, device, t_positions=video_positions)
    ct, st = rope.axis(audio_positions, rope.t_dim)  # (N, t_dim)
    ch, sh = rope.axis(torch.tensor([(height - 1) / 2], device=device), rope.h_dim)  # (1, h_dim)
    cw, sw = rope.axis(torch.tensor([(width - 1) / 2], device=device), rope.w_dim)
    n = len(audio_positions)

    def rows(at: Tensor, ah: Tensor, aw: Tensor) -> Tensor:
        return torch.cat([at, ah.expand(n, -1), aw.expand(n, -1)], dim=-1)[None, :, None]

    return video, (rows(ct, ch, cw), rows(st, sh, sw))
