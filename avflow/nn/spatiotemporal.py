"""Spatio-temporal video conditioning for binaural generation, aligned to the audio tokens by time.

`video_features` turns frames into two per-token arrays (no learned model):
- timing (N, 5): global motion energy, its rise, the foreground's vertical centroid and its velocity and acceleration
  (bounces are sign changes of the vertical velocity), all invariant to a horizontal mirror;
- spatial (N, 8, bins): foreground occupancy and motion energy on a 4-row x `bins`-column grid; the last axis is
  horizontal (left -> right in the frame), so a mirrored video gives exactly the flipped array.
Frame k is centred at (k + 0.5) / fps, token j at (j + 0.5) / token_rate; features are linearly interpolated.

`SpatioTemporalConditioner` projects them for one ear: the right ear sees the spatial array flipped, so both ears see
columns ordered from their own side to the far side. Shared weights + this flip make the binaural model
mirror-equivariant by construction (mirrored video => swapped ears).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

ROWS = 4
TIMING_DIM = 5
SPATIAL_CHANNELS = 2 * ROWS


def _pool(x: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """(T, H, W) -> (T, rows, cols) mean over a regular grid (H, W need not divide evenly)."""
    t, h, w = x.shape
    ri = np.minimum((np.arange(h) * rows) // h, rows - 1)
    ci = np.minimum((np.arange(w) * cols) // w, cols - 1)
    out = np.zeros((t, rows, cols))
    np.add.at(out, (slice(None), ri[:, None], ci[None, :]), x)
    counts = np.zeros((rows, cols))
    np.add.at(counts, (ri[:, None], ci[None, :]), 1.0)
    return out / counts


def frame_features(frames: np.ndarray, bins: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(T, H, W, 3) uint8 -> timing (T, 5), spatial (T, 8, bins) per frame."""
    grey = np.asarray(frames, dtype=np.float64).mean(-1) / 255.0  # (T, H, W)
    background = np.median(grey, axis=0, keepdims=True)
    fg = np.clip(np.abs(grey - background) * 8.0, 0.0, 1.0)  # soft foreground (T, H, W)
    motion = np.zeros_like(grey)
    motion[1:] = np.abs(np.diff(grey, axis=0))
    t, h, _ = grey.shape
    ys = (np.arange(h) + 0.5) / h
    mass = fg.sum(axis=(1, 2)) + 1e-6
    cy = (fg.sum(axis=2) * ys).sum(axis=1) / mass  # (T,) vertical centroid, 0 top .. 1 bottom
    vy = np.gradient(cy) if t > 1 else np.zeros(t)
    ay = np.gradient(vy) if t > 1 else np.zeros(t)
    energy = motion.mean(axis=(1, 2))
    rise = np.maximum(np.diff(energy, prepend=energy[:1]), 0.0)
    timing = np.stack([energy * 20, rise * 20, cy, vy * 10, ay * 10], axis=1)  # (T, 5), roughly unit scale
    spatial = np.concatenate([_pool(fg, ROWS, bins) * 4, _pool(motion, ROWS, bins) * 20], axis=1)  # (T, 8, bins)
    return timing, spatial


def resample_to_tokens(x: np.ndarray, fps: float, n_tokens: int, token_rate: float) -> np.ndarray:
    """(T, ...) per frame -> (n_tokens, ...) by linear interpolation in time."""
    src = (np.arange(x.shape[0]) + 0.5) / fps
    dst = (np.arange(n_tokens) + 0.5) / token_rate
    flat = x.reshape(x.shape[0], -1)
    out = np.stack([np.interp(dst, src, flat[:, i]) for i in range(flat.shape[1])], axis=1)
    return out.reshape(n_tokens, *x.shape[1:])


def video_features(frames: np.ndarray, fps: float, n_tokens: int, token_rate: float = 31.25, bins: int = 16):
    """Frames (T, H, W, 3) uint8 -> {"timing": (N, 5), "spatial": (N, 8, bins)} float32 tensors at the token rate."""
    timing, spatial = frame_features(frames, bins)
    return {
        "timing": torch.from_numpy(resample_to_tokens(timing, fps, n_tokens, token_rate)).float(),
        "spatial": torch.from_numpy(resample_to_tokens(spatial, fps, n_tokens, token_rate)).float(),
    }


class SpatioTemporalConditioner(nn.Module):
    """cond timing (B, N, 5), spatial (B, N, 8, bins) -> per-token conditioning (B, N, dim) for one ear."""

    def __init__(self, dim: int, bins: int = 16):
        super().__init__()
        self.spatial = nn.Sequential(nn.Linear(SPATIAL_CHANNELS * bins, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.timing = nn.Sequential(nn.Linear(TIMING_DIM, dim), nn.SiLU(), nn.Linear(dim, dim))
        # a short temporal convolution so each token sees its neighbours' motion (onsets are differences in time)
        self.mix = nn.Conv1d(dim, dim, kernel_size=5, padding=2)

    def forward(self, timing: Tensor, spatial: Tensor, side: str) -> Tensor:
        if side == "right":
            spatial = spatial.flip(-1)  # columns ordered from the right ear's side
        h = self.spatial(spatial.flatten(2)) + self.timing(timing)  # (B, N, dim)
        return h + self.mix(h.transpose(1, 2)).transpose(1, 2)
