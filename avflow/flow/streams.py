"""Named streams and per-stream, per-frame timesteps."""

from __future__ import annotations

import torch

# Which dimension of each stream's latent tensor is its time (latent-frame) axis.
TIME_DIM: dict[str, int] = {"video": 2, "audio": 1, "left": 1, "right": 1}


def time_dim(stream: str) -> int:
    """The time axis of a stream: video (B, C, T, H, W) -> 2; audio-like (B, N, C) -> 1."""
    return TIME_DIM.get(stream, 1)


def broadcast_time(t: torch.Tensor, x: torch.Tensor, stream: str) -> torch.Tensor:
    """Reshape a timestep of shape (B,) or (B, T) so that it broadcasts against `x`."""
    if t.ndim == 1:
        return t.reshape(t.shape[0], *([1] * (x.ndim - 1)))
    if t.ndim != 2:
        raise ValueError(f"stream {stream!r}: timesteps must be (B,) or (B, T), got shape {tuple(t.shape)}")
    dim = time_dim(stream)
    if x.shape[dim] != t.shape[1]:
        raise ValueError(
            f"stream {stream!r}: {t.shape[1]} per-frame timesteps for {x.shape[dim]} latent frames (dim {dim})"
        )
    shape = [t.shape[0]] + [1] * (x.ndim - 1)
    shape[dim] = t.shape[1]
    return t.reshape(shape)


def clean_mask(t_start: torch.Tensor, x: torch.Tensor, stream: str) -> torch.Tensor:
    """Boolean mask broadcastable to `x`, True where a token is a clean condition (t = 1)."""
    return broadcast_time(t_start >= 1.0, x, stream)
