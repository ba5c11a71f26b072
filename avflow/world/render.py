"""Frames and per-object visibility masks from a simulated scene (flat colours, hard edges)."""

from __future__ import annotations

import numpy as np

from avflow.world.scene import Scene


def frame_times(scene: Scene) -> np.ndarray:
    """(T,) start time of every frame in seconds; frame k shows the world at k / fps."""
    config = scene.config
    return np.arange(config.n_frames) / config.fps


def render_frames(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """Returns frames (T, H, W, 3) uint8 and visible masks (T, K, H, W) bool; later objects are drawn on top."""
    config = scene.config
    H, W = config.height, config.width
    times = frame_times(scene)
    pos = scene.trajectories.at(times)  # (K, T, 2)
    yy = np.arange(H, dtype=np.float32)[None, :, None] + 0.5  # pixel centres, (1, H, 1)
    xx = np.arange(W, dtype=np.float32)[None, None, :] + 0.5  # (1, 1, W)
    top = np.full((len(times), H, W), -1, dtype=np.int8)  # index of the object drawn at each pixel, -1 = none
    for k, obj in enumerate(scene.objects):
        dx = xx - pos[k, :, 0, None, None].astype(np.float32)  # (T, 1, W)
        dy = yy - pos[k, :, 1, None, None].astype(np.float32)  # (T, H, 1)
        if obj.shape == "circle":
            inside = dx * dx + dy * dy <= np.float32(obj.size**2)
        else:
            inside = (np.abs(dx) <= obj.size) & (np.abs(dy) <= obj.size)
        top[inside] = k
    masks = top[:, None] == np.arange(len(scene.objects), dtype=np.int8)[None, :, None, None]  # (T, K, H, W)
    palette = np.array([obj.rgb for obj in scene.objects] + [(0, 0, 0)], dtype=np.uint8)  # row -1 unused
    frames = np.where((top >= 0)[..., None], palette[top], background(scene, times))  # (T, H, W, 3)
    return frames, masks


def background(scene: Scene, times: np.ndarray) -> np.ndarray:
    """(T, H, 1, 3) uint8 (constant along W): a sky gradient over a ground band, colours drifting slowly over time."""
    config = scene.config
    H = config.height
    bg = scene.background
    rows = np.arange(H)[:, None] / max(H - 1, 1)  # (H, 1)
    sky = np.asarray(bg["sky"], dtype=np.float64) * (0.6 + 0.4 * rows)  # (H, 3)
    ground = np.broadcast_to(np.asarray(bg["ground"], dtype=np.float64), (H, 3))
    column = np.where(rows < bg["horizon"], sky, ground)  # (H, 3)
    drift = np.asarray(bg["drift"], dtype=np.float64)[None, None, :] * times[:, None, None]  # (T, 1, 3)
    column = np.clip(column[None] + drift, 0, 255)  # (T, H, 3)
    return column.round().astype(np.uint8)[:, :, None, :]  # (T, H, 1, 3), broadcasts over W
