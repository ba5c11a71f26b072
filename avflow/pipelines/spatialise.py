"""Spatialise a mono track from its video: find where the sound's object is over time, render it binaurally.

Position: objects are tracked (`avflow.eval.physics.track_objects`); each object's impact score is the size of its
acceleration (second difference of its centre; bounces and collisions), held with a 0.15 s exponential decay (the
ring of an impact); the source is the score-weighted mean of the objects' x. Where no object has a score (or nothing
is tracked), the horizontal centroid of the frame-difference energy (what moves makes the sound) is used, then the
foreground's centroid, then the nearest known position. Rendering: the world's spherical head
(`avflow.world.binaural.render_sphere`: Woodworth ITD + Brown-Duda head shadow) with the azimuth updated per
128-sample block. Also the amplitude panner used as a baseline (level only, no time difference).
"""

from __future__ import annotations

import numpy as np

from avflow.world.binaural import FIELD_OF_VIEW, azimuth_deg, block_times, render_sphere


def impact_positions(frames: np.ndarray, fps: float, decay_s: float = 0.15) -> np.ndarray:
    """(T,) x of the object(s) that last hit something, NaN where no tracked object has an impact score."""
    from avflow.eval.physics import track_objects

    tracks = track_objects(frames)
    c = tracks.centers  # (T, K, 2), NaN where not visible
    t = c.shape[0]
    if c.shape[1] == 0 or t < 3:
        return np.full(t, np.nan)
    acc = np.zeros(c.shape[:2])
    acc[1:-1] = np.linalg.norm(c[2:] - 2 * c[1:-1] + c[:-2], axis=-1)
    acc = np.nan_to_num(acc)
    score = np.zeros_like(acc)
    decay = np.exp(-1.0 / (fps * decay_s))
    for k in range(t):
        score[k] = np.maximum(acc[k], score[k - 1] * decay if k else 0.0)
    x = np.nan_to_num(c[..., 0])
    score = np.where(np.isnan(c[..., 0]), 0.0, score)
    mass = score.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mass > 0.05, (score * x).sum(1) / mass, np.nan)


def source_positions(frames: np.ndarray, fps: float | None = None, smooth: int = 1) -> np.ndarray:
    """(T, H, W, 3) uint8 frames -> (T,) horizontal source position in pixels (frame k shown at k / fps); with fps,
    the impact-weighted object position is preferred."""
    grey = np.asarray(frames, dtype=np.float64).mean(-1) / 255.0  # (T, H, W)
    t, _, w = grey.shape
    xs = np.arange(w) + 0.5
    motion = np.zeros_like(grey)
    motion[1:] = np.abs(np.diff(grey, axis=0))
    motion[0] = motion[1] if t > 1 else 0.0
    fg = np.abs(grey - np.median(grey, axis=0, keepdims=True))
    x = np.full(t, np.nan)
    for weights, floor in ((fg, 1e-3), (motion, 1e-3)):  # motion overrides the foreground where there is motion
        col = np.where(weights > 0.02, weights, 0.0).sum(axis=1)  # (T, W)
        mass = col.sum(axis=1)
        ok = mass > floor * grey.shape[1] * w
        x[ok] = (col[ok] * xs).sum(axis=1) / mass[ok]
    if fps is not None:
        impact = impact_positions(frames, fps)
        x = np.where(np.isnan(impact), x, impact)
    known = np.flatnonzero(~np.isnan(x))
    if known.size == 0:
        return np.full(t, w / 2.0)
    x = np.interp(np.arange(t), known, x[known])
    if smooth > 0 and t > 2 * smooth:
        kernel = np.ones(2 * smooth + 1) / (2 * smooth + 1)
        x = np.convolve(np.pad(x, smooth, mode="edge"), kernel, mode="valid")
    return x


def block_azimuth(x: np.ndarray, width: int, fps: float, n_samples: int, sample_rate: int) -> np.ndarray:
    """Per-frame positions (T,) -> azimuth (deg, negative = left) at the renderer's block centres."""
    return azimuth_deg(np.interp(block_times(n_samples, sample_rate), np.arange(len(x)) / fps, x), width)


def spatialise(mono: np.ndarray, sample_rate: int, frames: np.ndarray, fps: float) -> np.ndarray:
    """Mono (N,) + its video frames (T, H, W, 3) -> binaural (2, N) float32 [left, right]."""
    mono = np.asarray(mono, dtype=np.float64).reshape(-1)
    az = block_azimuth(source_positions(frames, fps), frames.shape[2], fps, mono.size, sample_rate)
    return render_sphere(mono, az, sample_rate).astype(np.float32)


def amplitude_pan(mono: np.ndarray, sample_rate: int, frames: np.ndarray, fps: float) -> np.ndarray:
    """Constant-power panning following the detected position: L = sqrt2 cos(phi), R = sqrt2 sin(phi),
    phi = (azimuth / FOV + 1/2) pi / 2; no interaural time difference."""
    from avflow.world.binaural import block_to_samples

    mono = np.asarray(mono, dtype=np.float64).reshape(-1)
    az = block_azimuth(source_positions(frames, fps), frames.shape[2], fps, mono.size, sample_rate)
    phi = block_to_samples((az / FIELD_OF_VIEW + 0.5) * np.pi / 2, mono.size)
    return (np.sqrt(2.0) * np.stack([np.cos(phi), np.sin(phi)]) * mono).astype(np.float32)


def spatialise_video(mono: np.ndarray, sample_rate: int, video: str, width: int = 64) -> np.ndarray:
    """Mono (N,) generated for `video` -> binaural (2, N), positions detected in its frames (scaled to `width`)."""
    from avflow.data.media import video_frames

    frames, fps, _ = video_frames(video, width)
    return spatialise(mono, sample_rate, frames, fps)
