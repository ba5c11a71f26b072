"""Streaming a video once into the CLIP (8 fps) and Synchformer (25 fps) frames of each generation window."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from avflow.data.media import MediaInfo
from avflow.data.video import SourceFrame, iter_source_frames
from avflow.encoders.preprocess import clip_frames_transform, frame_counts, sync_frames_transform
from avflow.pipelines.foley_windows import EPS, Window


@dataclass(frozen=True, kw_only=True)
class WindowFrames:
    window: Window
    clip: Tensor  # (n_clip, 3, 384, 384) uint8
    sync: Tensor  # (n_sync, 3, 224, 224) uint8


class _Frame:
    """A source frame, converted to (3, H, W) uint8 only when a target takes it (RGB conversion costs about what
    decoding does; at 60 fps CLIP and Synchformer take under half the frames), and each transform applied once."""

    def __init__(self, source: SourceFrame):
        self.source, self.time = source, source.time
        self.image: Tensor | None = None
        self.resized: dict[Callable, Tensor] = {}

    def transformed(self, transform: Callable[[Tensor], Tensor]) -> Tensor:
        if transform not in self.resized:
            if self.image is None:
                self.image = self.source.image().permute(2, 0, 1)  # (3, H, W)
            self.resized[transform] = transform(self.image[None])[0]
        return self.resized[transform]


class _Targets:
    """Frame targets start + k / fps, k < count; each takes the first source frame at or after it."""

    def __init__(self, start: float, fps: float, count: int, transform: Callable[[Tensor], Tensor]):
        self.start, self.fps, self.count, self.transform = start, fps, count, transform
        self.frames: list[Tensor] = []

    def take(self, t: float, frame: _Frame) -> None:
        while len(self.frames) < self.count and self.start + len(self.frames) / self.fps <= t + EPS:
            self.frames.append(frame.transformed(self.transform))

    def finish(self, last: _Frame | None) -> Tensor:
        """Targets past the last source frame repeat it."""
        while len(self.frames) < self.count and last is not None:
            self.take(math.inf, last)
        return torch.stack(self.frames)

    @property
    def done(self) -> bool:
        return len(self.frames) >= self.count


CHUNK_BYTES = 96 << 20  # decoded source frames held at once (RGB); half a second of 4K at 60 fps is 750 MB


def chunk_seconds(info: MediaInfo, read_s: float) -> float:
    """`read_s`, shortened so that one chunk of the video's RGB frames (`info`: its `probe`) stays within
    CHUNK_BYTES (at least one frame). Which frames the encoders get does not depend on it: targets are matched by
    timestamp."""
    fps = info.fps if info.fps and math.isfinite(info.fps) else 30.0
    frame_bytes = max(1, info.width * info.height * 3)
    return min(read_s, max(1.0 / fps, CHUNK_BYTES / (frame_bytes * fps)))


def iter_window_frames(path: str | Path, windows: list[Window], read_s: float = 0.5) -> Iterator[WindowFrames]:
    """Stream the video once; yield each window's CLIP (8 fps) and Synchformer (25 fps) frames when complete.

    Only windows overlapping the current read position hold frames, so memory is bounded by about two windows of
    encoder-sized frames plus one source frame: frames are decoded `read_s` seconds at a time and converted to RGB
    only where a target takes them (which frames the targets take does not depend on `read_s`).
    """
    pending = list(windows)
    active: list[tuple[Window, _Targets, _Targets]] = []

    def open_until(t: float) -> None:
        while pending and pending[0].start_s <= t + EPS:
            w = pending.pop(0)
            n_clip, n_sync = frame_counts(w.duration)
            active.append(
                (
                    w,
                    _Targets(w.start_s, 8.0, n_clip, clip_frames_transform),
                    _Targets(w.start_s, 25.0, n_sync, sync_frames_transform),
                )
            )

    last = None
    for source in iter_source_frames(path, window_s=read_s):
        frame = _Frame(source)
        open_until(frame.time)
        for _, clip_t, sync_t in active:
            clip_t.take(frame.time, frame)
            sync_t.take(frame.time, frame)
        last = frame
        while active and active[0][1].done and active[0][2].done:
            w, clip_t, sync_t = active.pop(0)
            yield WindowFrames(window=w, clip=torch.stack(clip_t.frames), sync=torch.stack(sync_t.frames))
        if not active and not pending:
            return
    open_until(math.inf)
    for w, clip_t, sync_t in active:
        yield WindowFrames(window=w, clip=clip_t.finish(last), sync=sync_t.finish(last))
