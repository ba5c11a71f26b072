"""Frames for MMAudio's encoders from a video file: CLIP at 8 fps, 384x384; Synchformer at 25 fps, 224x224.

As in MMAudio (`eval_utils.load_video`): output frame k of a stream at F fps is the first source frame whose time is
>= k / F (and <= the requested duration); CLIP frames are squashed to 384x384, Synchformer frames get their short side
resized to 224 and are centre-cropped; both streams are then cut to the duration d they both cover: int(8 d) and
int(25 d) frames. Resizing is torch's antialiased bicubic on uint8, the kernel torchvision v2 runs on the CPU; it is
within 2 grey levels of Pillow's bicubic (mean <= 0.01), 6 levels at hard edges when one axis is upsampled and the
other downsampled (tests/test_encoders.py measures it).

Two deliberate differences from MMAudio's reader: frame times count from the first frame (MMAudio uses raw stream
timestamps), and the targets k / F are exact (MMAudio adds 1/F repeatedly in floating point, which for a 25 fps
source skips one frame near t = 0.24 s and shifts the rest of its 25 fps stream by one source frame).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from avflow.data.media import iter_video_windows, probe
from avflow.encoders.clip import OPENAI_MEAN, OPENAI_STD
from avflow.errors import MediaError

CLIP_FPS, CLIP_SIZE = 8.0, 384
SYNC_FPS, SYNC_SIZE = 25.0, 224
SYNC_MEAN, SYNC_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
_EPS = 1e-6  # seconds


def resize_bicubic(frames: Tensor, size: tuple[int, int]) -> Tensor:
    """(T, 3, H, W) uint8 -> (T, 3, h, w) uint8, antialiased bicubic (Pillow-like); unchanged if already that size."""
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    if frames.device.type == "cpu":  # native uint8 kernel, as torchvision v2 uses on the CPU
        return F.interpolate(frames, size=size, mode="bicubic", antialias=True, align_corners=False)
    out = F.interpolate(frames.float(), size=size, mode="bicubic", antialias=True, align_corners=False)
    return out.clamp_(0, 255).round_().to(torch.uint8)


def resize_short_side(frames: Tensor, short: int) -> Tensor:
    """Resize so the short side is `short`, long side int(short * long / short_side) (torchvision's rule)."""
    h, w = frames.shape[-2:]
    if h <= w:
        return resize_bicubic(frames, (short, int(short * w / h)))
    return resize_bicubic(frames, (int(short * h / w), short))


def center_crop(frames: Tensor, size: int) -> Tensor:
    """Centre square crop; offsets rounded like torchvision's CenterCrop."""
    h, w = frames.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"cannot crop {size}x{size} from {h}x{w}")
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return frames[..., top : top + size, left : left + size]


def clip_frames_transform(frames: Tensor) -> Tensor:
    """(T, 3, H, W) uint8 -> (T, 3, 384, 384) uint8 (squash)."""
    return resize_bicubic(frames, (CLIP_SIZE, CLIP_SIZE))


def sync_frames_transform(frames: Tensor) -> Tensor:
    """(T, 3, H, W) uint8 -> (T, 3, 224, 224) uint8 (short side, centre crop)."""
    return center_crop(resize_short_side(frames, SYNC_SIZE), SYNC_SIZE)


def _normalize(frames: Tensor, mean: tuple, std: tuple, dtype: torch.dtype) -> Tensor:
    """(x / 255 - mean) / std per channel, in place on one float32 copy: the same three roundings as the formula
    (bit-identical) without a fresh tensor per step (half the time on the CPU)."""
    m = torch.tensor(mean, device=frames.device, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, device=frames.device, dtype=torch.float32).view(3, 1, 1)
    return frames.to(torch.float32, copy=True).div_(255.0).sub_(m).div_(s).to(dtype)


def clip_normalize(frames: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """uint8 (..., 3, H, W) -> (x / 255 - OPENAI_MEAN) / OPENAI_STD."""
    return _normalize(frames, OPENAI_MEAN, OPENAI_STD, dtype)


def sync_normalize(frames: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """uint8 (..., 3, H, W) -> (x / 255 - 0.5) / 0.5 in [-1, 1]."""
    return _normalize(frames, SYNC_MEAN, SYNC_STD, dtype)


def frame_counts(duration: float) -> tuple[int, int]:
    """(CLIP frames, Synchformer frames) for a duration in seconds: int(8 d), int(25 d)."""
    return int(math.floor(CLIP_FPS * duration + 1e-9)), int(math.floor(SYNC_FPS * duration + 1e-9))


def common_duration(duration: float, n_clip: int, n_sync: int) -> float:
    """MMAudio's truncation: the duration both streams cover."""
    return min(duration, n_clip / CLIP_FPS, n_sync / SYNC_FPS)


@dataclass
class FrameChunk:
    """Consecutive encoder frames of one stretch of video (either may be empty)."""

    clip: Tensor  # (t1, 3, 384, 384) uint8
    sync: Tensor  # (t2, 3, 224, 224) uint8


class _Sampler:
    """Fills target times k / fps <= end, each with the first source frame at or after it (itself at or before end)."""

    def __init__(self, fps: float, end: float):
        self.fps, self.end, self.k = fps, end, 0

    def copies(self, t: float) -> int:
        """How many output frames the source frame at time t fills."""
        if t > self.end + _EPS:
            return 0
        n = 0
        while self.k / self.fps <= t + _EPS:
            self.k += 1
            n += 1
        return n

    def done(self) -> bool:
        return self.k / self.fps > self.end + _EPS


def video_duration(path: str | Path, duration: float | None = None) -> float:
    """The duration to encode: `duration` if given (must be > 0), else the whole video's."""
    info = probe(path)
    if not info.has_video or info.n_frames == 0:
        raise MediaError(f"{path}: no video frames")
    if duration is None:
        return info.duration
    if not duration > 0:
        raise MediaError(f"{path}: duration must be > 0, got {duration}")
    return float(duration)


def iter_encoder_frames(path: str | Path, duration: float, window_s: float = 0.5) -> Iterator[FrameChunk]:
    """Stream CLIP and Synchformer frames for the targets k / F <= `duration`, `window_s` seconds of source at a time.

    Like MMAudio's reader with end_sec = duration; cut the streams with `common_duration` and `frame_counts` after.
    Memory holds one window of source frames.
    """
    clip_s, sync_s = _Sampler(CLIP_FPS, duration), _Sampler(SYNC_FPS, duration)
    for window in iter_video_windows(path, window_s=window_s, overlap_s=0.0, fps=None, size=None):
        clip_idx: list[int] = []
        sync_idx: list[int] = []
        for i, t in enumerate(window.times.tolist()):
            clip_idx += [i] * clip_s.copies(t)
            sync_idx += [i] * sync_s.copies(t)
        frames = window.frames.permute(0, 3, 1, 2)  # (T, 3, H, W)
        yield FrameChunk(
            _select(frames, clip_idx, clip_frames_transform, CLIP_SIZE),
            _select(frames, sync_idx, sync_frames_transform, SYNC_SIZE),
        )
        if clip_s.done() and sync_s.done():
            break


def _select(frames: Tensor, idx: list[int], transform, size: int) -> Tensor:
    """Transform each distinct selected frame once, then repeat it as selected."""
    if not idx:
        return torch.empty(0, 3, size, size, dtype=torch.uint8)
    unique, inverse = torch.unique(torch.tensor(idx), return_inverse=True)
    return transform(frames[unique].contiguous())[inverse]


def load_encoder_frames(path: str | Path, duration: float | None = None) -> tuple[Tensor, Tensor, float]:
    """All frames at once, as MMAudio's `load_video`: (clip (T1, 3, 384, 384) uint8, sync (T2, 3, 224, 224) uint8,
    duration), both cut to the duration they both cover."""
    d = video_duration(path, duration)
    chunks = list(iter_encoder_frames(path, d))
    clip = torch.cat([c.clip for c in chunks])
    sync = torch.cat([c.sync for c in chunks])
    d = common_duration(d, len(clip), len(sync))
    n_clip, n_sync = frame_counts(d)
    return clip[:n_clip], sync[:n_sync], d
