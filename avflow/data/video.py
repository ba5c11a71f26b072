"""Probe media files and read video frames at a requested fps and size (PyAV).

Times are seconds from the first video frame (the video stream's first presentation timestamp), computed as
`pts * time_base`, so 23.976 fps and variable-frame-rate files map to exact times. Frames are decoded lazily,
resized a few at a time and copied into one output tensor allocated up front, so memory holds the output frames of one
call or window once (not a list of batches and then their stacked copy: 2.8x the output at the peak).

torch is imported in the functions that read frames, not here: `probe` (what `avflow info` runs) needs only PyAV.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np

from avflow.errors import MediaError, MediaWarning

if TYPE_CHECKING:
    import torch

_EPS = 1e-6  # seconds; absorbs float rounding when matching target times to frame times
_SEEK_AHEAD_S = 5.0  # seek forward instead of decoding when the next target is this far ahead
MODES = ("resize", "crop", "letterbox")
RESIZE_BATCH = 16  # frames resized per torch call, at most ...
RESIZE_BATCH_BYTES = 2**25  # ... and at most this many bytes of source frames (32 MiB: two 4K frames, 128 MiB in float)
_NOTED_CUT_SHORT: set[tuple[str, int, int]] = set()  # files `probe` said were cut short: (path, size, mtime)


@dataclass
class MediaInfo:
    """What `probe` finds in a file. Video fields are 0 / None when there is no video stream."""

    path: Path
    duration: float  # seconds; video duration if there is video, else audio duration
    fps: float  # average frame rate
    n_frames: int
    width: int
    height: int
    has_video: bool
    has_audio: bool
    audio_sample_rate: int | None
    audio_channels: int | None
    audio_tracks: int = 0  # number of audio streams
    quarter_turns: int = 0  # counterclockwise quarter turns players apply to the stored frames (width, height: shown)
    # seconds of the first audio stream itself (None without audio): `duration` is the video's where there is video,
    # and a still frame with 9 s of sound, or 65 s of video with 5 s of it, is not that long a sound
    audio_duration: float | None = None


@dataclass
class VideoFrames:
    """Frames read from a file: frame k is the source frame shown at `times[k]`."""

    frames: torch.Tensor  # (T, H, W, 3) uint8
    times: torch.Tensor  # (T,) float64 seconds from the first video frame
    fps: float


def open_media(path: str | Path) -> av.container.InputContainer:
    """Open a file with PyAV; a missing or unreadable file is a one-line MediaError."""
    path = Path(path)
    if not path.exists():
        raise MediaError(f"{path}: file not found")
    if path.is_dir():
        raise MediaError(f"{path}: is a directory, not a media file")
    try:
        return av.open(str(path), metadata_errors="ignore")
    except av.FFmpegError as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise MediaError(f"{path}: cannot read as media ({reason}); not a media file or corrupt") from None


def main_video(container: av.container.InputContainer) -> av.video.VideoStream | None:
    """The video stream that is read and copied: the first one that is not cover art (the album picture of an mp3 or
    an m4a is a one-picture video stream marked `attached_pic`); None where there is none."""
    covers = av.stream.Disposition.attached_pic
    return next((s for s in container.streams.video if not s.disposition & covers), None)


def stream_origin(stream: av.stream.Stream) -> Fraction:
    """The stream's first presentation time in seconds (exact)."""
    start = stream.start_time if stream.start_time is not None else 0
    return Fraction(start) * stream.time_base


def video_span(path: str | Path) -> tuple[Fraction, Fraction]:
    """(first frame time, end of last frame) in seconds of the file's video, from packet timestamps.

    Muxers can store a stream duration shorter than the frames it holds (variable frame rate with B-frames), so the
    end is read from the packets after the last keyframe instead of from the header; where the file cannot seek (an
    MKV cut short, without its index: a failed seek leaves its demuxer at the end) or the seek overshoots, from every
    packet, on the file opened afresh. An mp4 cut short ends with the last frame it holds whole (`_cut_video`).
    """
    with open_media(path) as container:
        stream = main_video(container)
        origin, duration, held, end = stream_origin(stream), stream.duration, held_samples(container, stream), None
        time_base = stream.time_base  # read while open: PyAV 18.1.1 refuses a closed container's stream attributes
        try:
            if held is None:
                container.seek(2**62, stream=stream, backward=True)
                end = _last_packet_end(container.demux(stream), stream)
        except av.FFmpegError:
            pass
    if held is not None:
        return _cut_video(Path(path), held)[1:]
    if end is None:
        with open_media(path) as container:
            stream = main_video(container)
            end = _last_packet_end(container.demux(stream), stream)
    if duration:
        end = max(end or origin, origin + Fraction(duration) * time_base)
    return origin, (end if end is not None else origin)


def _last_packet_end(packets: Iterable[av.Packet], stream: av.video.VideoStream) -> Fraction | None:
    """The end of the last frame shown: the packet with the latest pts, plus its duration (or one frame at the
    stream's rate where it has none), in seconds. Not the latest pts + duration over all packets: an mp4's packet
    durations are DTS differences, so with B-frames and a variable rate an earlier frame's can reach past the
    end. Timestamps are compared as integers, so a scan of every packet of a long video stays cheap."""
    last, length = None, 0  # latest pts, and that packet's duration
    for packet in packets:
        if packet.pts is None or packet.is_discard:  # a frame an edit list does not show (held, not presented)
            continue
        if last is None or packet.pts >= last:
            last, length = packet.pts, packet.duration or 0
    if last is None:
        return None
    if length:
        return Fraction(last + length) * stream.time_base
    return Fraction(last) * stream.time_base + (Fraction(1) / Fraction(stream.average_rate) if stream.average_rate
                                                else Fraction(0))  # fmt: skip


class _PacketSpan:
    """The span of one stream's packets as they pass: from the earliest pts to the latest pts + duration, compared
    as integers in the stream's time base."""

    def __init__(self) -> None:
        self.first: int | None = None
        self.end: int | None = None

    def add(self, packet: av.Packet) -> None:
        if packet.pts is None or packet.is_discard:
            return
        end = packet.pts + (packet.duration or 0)
        self.first = packet.pts if self.first is None else min(self.first, packet.pts)
        self.end = end if self.end is None else max(self.end, end)

    def seconds(self, time_base: Fraction) -> float | None:
        return None if self.first is None else float((self.end - self.first) * time_base)


def _scan(path: Path, audio: bool = False) -> tuple[int, Fraction, Fraction, float | None]:
    """(packets with data, first frame time, end of last frame) of the file's video, from every packet of the file
    opened afresh: for containers whose header does not count the frames (MKV, WebM, MPEG-TS), with no seek (an
    MKV cut short cannot); and with `audio` the seconds its first audio stream's packets span, read in the same pass
    (those containers state no stream durations either), else None."""
    count, sound = 0, _PacketSpan()

    def counted(packets: Iterable[av.Packet]) -> Iterator[av.Packet]:
        nonlocal count
        for packet in packets:
            if packet.stream.type == "audio":
                sound.add(packet)
                continue
            count += packet.size > 0
            yield packet

    with open_media(path) as container:
        stream = main_video(container)
        heard = container.streams.audio[0] if audio and container.streams.audio else None
        packets = container.demux(stream, heard) if heard is not None else container.demux(stream)
        origin, end = stream_origin(stream), _last_packet_end(counted(packets), stream)
        if stream.duration:
            end = max(end or origin, origin + Fraction(stream.duration) * stream.time_base)
        seconds = sound.seconds(heard.time_base) if heard is not None else None
        return count, origin, (end if end is not None else origin), seconds


def _packet_seconds(path: Path) -> float | None:
    """The seconds the first audio stream's packets span (pts to the last pts + duration), every packet of the file
    opened afresh read (no decoding); None where none has a timestamp."""
    span = _PacketSpan()
    with open_media(path) as container:
        stream = container.streams.audio[0]
        for packet in container.demux(stream):
            span.add(packet)
        return span.seconds(stream.time_base)


def _audio_seconds(path: Path, container: av.container.InputContainer, stream: av.audio.AudioStream,
                   alone: bool) -> float | None:  # fmt: skip
    """The first audio stream's own length in seconds: of an m4a / mp4 cut short, up to its first sample not whole
    (audio: decode order is time order; said once where the file is audio `alone`, as the video's note says it
    otherwise); else its header's duration; else for a file of audio alone the container's; else None (a file with
    video whose audio states no duration: its packets say, `_scan` / `_packet_seconds`)."""
    held = held_samples(container, stream)
    if held is not None:
        start, entries = stream.start_time or 0, stream.index_entries
        seconds = float(max(0, entries[held].timestamp - start) * stream.time_base) if held else 0.0
        if alone:
            _note_cut_short(path, seconds, _header_duration(container, stream))
        return seconds
    if stream.duration:
        return float(stream.duration * stream.time_base)
    if alone:
        return container.duration / av.time_base if container.duration else 0.0
    return None


def held_samples(container: av.container.InputContainer, stream: av.stream.Stream) -> int | None:
    """How many of the stream's samples (decode order) lie whole in the file where its mp4 / mov index, at the front
    (`-movflags +faststart`, as phones and web exports write it), lists more: the file was cut short (a copy or a
    download that stopped) and its header's duration and frame count are not what it holds. None where every sample
    is there or the container has no such index (MKV, MPEG-TS: their packets are counted)."""
    entries, size = stream.index_entries, container.size
    if "mov" not in container.format.name.split(",") or size <= 0:
        return None
    if not len(entries):  # samples counted but none placed: the index itself is cut short
        return 0 if stream.frames else None
    if entries[len(entries) - 1].pos + entries[len(entries) - 1].size <= size:
        return None
    return next(k for k in range(len(entries)) if entries[k].pos + entries[k].size > size)


def _cut_video(path: Path, held: int) -> tuple[int, Fraction, Fraction]:
    """(frames shown, first frame time, end) of the video of an mp4 cut short that holds its first `held` samples
    (decode order) whole: up to the first time no held frame shows. Every frame shown before the first missing
    sample's decode time is held (a frame is never shown before it is decoded); from there the held frames that
    follow without a gap extend it (B-frames: one decoded later but shown earlier may be missing). Their times come
    from the packets of the last two keyframes' groups held (frames shown late sit just before the last), no
    decoding."""
    with open_media(path) as container:
        stream = main_video(container)
        entries, origin = stream.index_entries, stream_origin(stream)
        if held == 0:
            return 0, origin, origin
        whole = {entries[k].pos for k in range(held)}
        keys = [k for k in range(held - 1, -1, -1) if entries[k].is_keyframe][:2]
        key = keys[-1] if keys else 0
        shown = sum(not entries[k].is_discard for k in range(held))
        end, from_timestamp = max(origin, Fraction(entries[held].timestamp) * stream.time_base), entries[key].timestamp
    spans = _whole_spans(path, from_timestamp, whole)
    if spans is None or len(spans) < held - key:  # the seek failed or overshot: every packet from the start
        spans = _whole_spans(path, None, whole) or []
    for start, stop in sorted(spans):
        if start > end:
            break
        end = max(end, stop)
    shown -= sum(start >= end for start, _ in spans)  # held frames shown after a missing one
    return max(shown, 0), origin, end


def _whole_spans(path: Path, timestamp: int | None, whole: set[int]) -> list[tuple[Fraction, Fraction]] | None:
    """(start, end) in seconds of the video packets at the positions `whole` (pts + duration, or + one frame at the
    stream's rate where a packet has none), demuxed from the keyframe at or before `timestamp` (the file's start
    where None); None where that fails."""
    spans = []
    with open_media(path) as container:
        stream = main_video(container)
        frame = Fraction(1) / Fraction(stream.average_rate) if stream.average_rate else Fraction(0)
        try:
            if timestamp is not None:
                container.seek(timestamp, stream=stream, backward=True)
            for packet in container.demux(stream):
                if packet.pts is not None and packet.pos in whole:
                    start = Fraction(packet.pts) * stream.time_base
                    spans.append((start, start + (Fraction(packet.duration) * stream.time_base or frame)))
        except av.FFmpegError:
            return None
    return spans


def _header_duration(container: av.container.InputContainer, stream: av.stream.Stream) -> float:
    """The stream's duration in seconds as its header states it (the file's where the stream states none)."""
    if stream.duration:
        return float(Fraction(stream.duration) * stream.time_base)
    return (container.duration or 0) / av.time_base


def _note_cut_short(path: Path, holds: float, states: float) -> None:
    """Say that a file holds less than its header states, once per file (and its size and time) in a process: a
    command probes its input several times, and the warnings module's own once-only memory is reset by any import
    that adds a warnings filter."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _NOTED_CUT_SHORT:
        _NOTED_CUT_SHORT.add(key)
        note = f"{path}: cut short: holds {holds:.2f} s of the {states:.2f} s its header states"
        warnings.warn(MediaWarning(note), stacklevel=3)


def _hidden_frames(stream: av.video.VideoStream) -> int:
    """Frames of the stream that are never shown: the lead-in an mp4's edit list hides (a clip trimmed without
    re-encoding keeps the frames from the keyframe before its cut), counted in the demuxer's index (empty where the
    container has none, e.g. MPEG-TS, which has no edit lists)."""
    return sum(1 for entry in stream.index_entries if entry.is_discard)


def quarter_turns(frame: av.VideoFrame) -> int:
    """Counterclockwise quarter turns (0-3) that show a decoded frame as players do: its display matrix (phones
    store portrait video as landscape frames with a 90 or 270 degree rotation), rounded to a quarter turn."""
    return round(getattr(frame, "rotation", 0) / 90) % 4


def _first_frame_turns(container: av.container.InputContainer, stream: av.video.VideoStream) -> int:
    """`quarter_turns` of the stream's first decodable frame (0 where none decodes); FFmpeg exports the display
    matrix on frames, not on streams, in PyAV."""
    try:
        for frame in container.decode(stream):
            return quarter_turns(frame)
    except av.FFmpegError:
        pass
    return 0


def probe(path: str | Path) -> MediaInfo:
    """Read a file's streams, duration, frame rate and size (as shown: a rotated video's turns applied), decoding
    one frame at most (for its rotation)."""
    path = Path(path)
    with open_media(path) as container:
        video = main_video(container)
        audio = container.streams.audio[0] if container.streams.audio else None
        if video is None and audio is None:
            raise MediaError(f"{path}: no video or audio stream")
        blind = next((s for s in (video, audio) if s is not None and s.codec_context is None), None)
        if blind is not None:
            raise MediaError(f"{path}: its {blind.type} stream has no decoder (an unknown codec, or its header cut)")
        rate = audio.codec_context.sample_rate if audio is not None else None
        channels = audio.codec_context.channels if audio is not None else None
        heard = _audio_seconds(path, container, audio, video is None) if audio is not None else None
        if video is not None:
            turns = _first_frame_turns(container, video)  # first: on the fresh container, before any seek
            width, height = (video.height, video.width) if turns % 2 else (video.width, video.height)
            tracks = len(container.streams.audio)
            held = held_samples(container, video)
            if held is not None:
                n_frames, origin, end = _cut_video(path, held)
                _note_cut_short(path, float(end - origin), _header_duration(container, video))
            elif not video.frames:  # the header does not count them: every packet (and the audio's, where needed)
                counted, origin, end, scanned = _scan(path, audio=audio is not None and heard is None)
                n_frames, heard = counted - _hidden_frames(video), heard if scanned is None else scanned
            else:
                n_frames, origin, end = video.frames - _hidden_frames(video), None, None  # the shown ones
            if audio is not None and heard is None:
                heard = _packet_seconds(path) or 0.0
            if n_frames == 0:
                return MediaInfo(path, 0.0, 0.0, 0, width, height, True, audio is not None, rate, channels, tracks,
                                 turns, heard)  # fmt: skip
            if end is None:
                origin, end = video_span(path)
            duration = float(end - origin)
            fps = float(video.average_rate or video.guessed_rate or 0.0)
            if duration > 0 and abs(fps - n_frames / duration) > 0.01 * fps:  # header rate off (variable rate)
                fps = n_frames / duration
            return MediaInfo(path, duration, fps, n_frames, width, height, True, audio is not None, rate, channels,
                             tracks, turns, heard)  # fmt: skip
        return MediaInfo(path, heard, 0.0, 0, 0, 0, False, True, rate, channels, len(container.streams.audio),
                         audio_duration=heard)  # fmt: skip


def check_video(info: MediaInfo) -> None:
    """Raise MediaError unless the file has a video stream with frames and a positive duration."""
    if not info.has_video:
        raise MediaError(f"{info.path}: no video stream")
    if info.n_frames == 0:
        raise MediaError(f"{info.path}: video stream has no frames")
    if info.duration <= 0:
        raise MediaError(f"{info.path}: zero or negative video duration ({info.duration:.6g} s)")


# --------------------------------------------------------------------------------------------------- resizing


def output_size(height: int, width: int, size: int | tuple[int, int] | None, mode: str) -> tuple[int, int]:
    """The (H, W) a frame of (height, width) has after `resize_frames` with this size and mode."""
    if size is None:
        return height, width
    if isinstance(size, int):
        if mode == "resize":  # short side to `size`, aspect kept
            scale = size / min(height, width)
            return max(1, round(height * scale)), max(1, round(width * scale))
        return size, size
    return int(size[0]), int(size[1])


def resize_frames(frames: torch.Tensor, size: int | tuple[int, int] | None, mode: str) -> torch.Tensor:
    """Resize (T, H, W, 3) uint8 frames.

    `resize` stretches to (H, W) (an int resizes the short side, keeping aspect); `crop` scales to cover (H, W) and
    cuts the centre; `letterbox` scales to fit inside (H, W) and pads with black. An int size for crop / letterbox
    means a square. Resampling is torch's bicubic with antialiasing on float, rounded back to uint8.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    t, h, w = frames.shape[:3]
    out_h, out_w = output_size(h, w, size, mode)
    if (out_h, out_w) == (h, w):
        return frames
    import torch

    if mode == "resize":
        return _interpolate(frames, out_h, out_w)
    if mode == "crop":
        scale = max(out_h / h, out_w / w)
        new_h, new_w = max(out_h, round(h * scale)), max(out_w, round(w * scale))
        top, left = (new_h - out_h) // 2, (new_w - out_w) // 2
        return _interpolate(frames, new_h, new_w)[:, top : top + out_h, left : left + out_w].contiguous()
    scale = min(out_h / h, out_w / w)
    new_h, new_w = min(out_h, max(1, round(h * scale))), min(out_w, max(1, round(w * scale)))
    canvas = torch.zeros(t, out_h, out_w, 3, dtype=torch.uint8)
    top, left = (out_h - new_h) // 2, (out_w - new_w) // 2
    canvas[:, top : top + new_h, left : left + new_w] = _interpolate(frames, new_h, new_w)
    return canvas


def _interpolate(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if frames.shape[1:3] == (height, width):
        return frames
    import torch
    import torch.nn.functional as F

    x = frames.permute(0, 3, 1, 2).float()  # (T, 3, H, W)
    x = F.interpolate(x, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()  # (T, H', W', 3)


# --------------------------------------------------------------------------------------------------- decoding


class _FrameCursor:
    """Walks a video stream forward, answering 'which frame is shown at time t'; seeks only when needed. It owns its
    container (a context manager): where the file cannot seek (an MKV cut short has no index), it opens the file
    again and decodes forward from the start."""

    def __init__(self, path: Path):
        self.path = path
        self.container, self.stream = self._open()
        self.origin = stream_origin(self.stream)
        self.current: tuple[av.VideoFrame, float] | None = None
        self.upcoming: tuple[av.VideoFrame, float] | None = None
        self.frames: Iterator[av.VideoFrame] | None = None
        self.early = False  # current is the first frame, shown for a time before its own

    def _open(self) -> tuple[av.container.InputContainer, av.video.VideoStream]:
        container = open_media(self.path)
        stream = main_video(container)
        stream.thread_type = "AUTO"
        held = held_samples(container, stream)
        self.cut_pos = stream.index_entries[held].pos if held else None  # an mp4 cut short: its first frame not whole
        return container, stream

    def __enter__(self) -> _FrameCursor:
        return self

    def __exit__(self, *exc) -> None:
        self.container.close()

    def _decode(self) -> Iterator[av.VideoFrame]:
        for packet in self.container.demux(self.stream):
            if packet.is_corrupt and packet.pos == self.cut_pos:
                continue  # the part of a frame an mp4 cut short holds: decoded, frame threads lose the ones before
            try:
                yield from packet.decode()
            except av.InvalidDataError:  # a corrupt packet: skip it, keep going
                continue

    def _next(self) -> tuple[av.VideoFrame, float] | None:
        for frame in self.frames:
            pts = frame.pts if frame.pts is not None else frame.dts
            if pts is not None:
                return frame, float(Fraction(pts) * self.stream.time_base - self.origin)
        return None

    def _restart(self, target_pts: int) -> None:
        try:
            self.container.seek(target_pts, stream=self.stream, backward=True)
        except av.FFmpegError:  # a file that cannot seek
            self._from_start()
        self.frames = self._decode()
        self.current, self.upcoming, self.early = None, self._next(), False
        if self.upcoming is None:  # nothing after a stream seek (MPEG-TS without an index): from the file's start
            self._from_start()
            self.frames = self._decode()
            self.upcoming = self._next()

    def _from_start(self) -> None:
        """Back to the file's first packet: a seek to its start, else (no seek works) the file opened again."""
        try:
            self.container.seek(0, backward=True)
        except av.FFmpegError:
            self.container.close()
            self.container, self.stream = self._open()

    def _seek(self, t: float) -> None:
        self._restart(math.floor((Fraction(max(t, 0.0)) + self.origin) / self.stream.time_base))
        if t > 0 and self.upcoming is not None and self.upcoming[1] > t + _EPS:  # landed after t: start over
            self._restart(self.stream.start_time or 0)

    def advance(self) -> tuple[av.VideoFrame, float] | None:
        """Move to the next frame; None (and no move) at the end of the stream."""
        if self.upcoming is None:
            return None
        self.current, self.upcoming, self.early = self.upcoming, self._next(), False
        return self.current

    def frame_at(self, t: float) -> tuple[av.VideoFrame, float] | None:
        """(frame shown at time t, its own time); before the first frame that is the first frame."""
        if self.frames is None or (self.current is not None and not self.early and t < self.current[1] - _EPS):
            self._seek(t)
        elif self.upcoming is not None and t > self.upcoming[1] + _SEEK_AHEAD_S:
            self._seek(t)
        while self.upcoming is not None and self.upcoming[1] <= t + _EPS:
            self.advance()
        if self.current is None and self.advance() is not None:
            self.early = True
        return self.current


def _to_tensor(frame: av.VideoFrame) -> torch.Tensor:
    """(H, W, 3) uint8 as players show the frame (its display rotation applied)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(np.rot90(frame.to_ndarray(format="rgb24"), quarter_turns(frame))))


class _Resizer:
    """Resizes decoded frames in small batches (few torch calls for small frames, and memory bounded by `batch_bytes`
    for large ones: 16 4K frames in float took 1.6 GB) and copies each batch into one output tensor, allocated for
    `expected` frames at the first batch and grown by half where more come (trimmed by a view at the end). Frames
    that need no resizing (`size` None or the frame's own) go straight into it. A repeated source frame (`add(...,
    repeat=True)`: the frame of the previous call again) is converted and resized once and copied."""

    def __init__(self, size: int | tuple[int, int] | None, mode: str, expected: int = 1):
        self.size, self.mode, self.batch, self.batch_bytes = size, mode, RESIZE_BATCH, RESIZE_BATCH_BYTES
        self.expected = max(1, expected)
        self.out: torch.Tensor | None = None  # (capacity, H, W, 3) uint8; rows [0, placed) written
        self.pending: list[torch.Tensor] = []  # source frames not yet resized (the last ones added)
        self.order: list[int] = []  # output frame -> index of its (unique) source frame
        self.unique = 0  # source frames added
        self.placed = 0

    def add(self, frame: av.VideoFrame, repeat: bool = False) -> None:
        if repeat and self.unique:
            self.order.append(self.unique - 1)
            if not self.pending:  # its source frame is in the output already: copied now
                self._place(None, self.unique)
            return
        image = _to_tensor(frame)
        if self.pending and image.shape != self.pending[0].shape:  # the stream's frame size changed
            self._flush()
        self.order.append(self.unique)
        self.unique += 1
        if output_size(*image.shape[:2], self.size, self.mode) == image.shape[:2]:  # nothing to resize
            self._flush()
            self._place(image[None], self.unique - 1)
            return
        self.pending.append(image)
        held = len(self.pending) * self.pending[0].numel()
        if len(self.pending) >= self.batch or held >= self.batch_bytes:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            import torch

            first, batch = self.unique - len(self.pending), torch.stack(self.pending)
            self.pending = []
            self._place(resize_frames(batch, self.size, self.mode), first)

    def _place(self, images: torch.Tensor | None, first: int) -> None:
        """Write the output frames not yet written: `images` are the source frames first, first + 1, ... resized
        (None: only repeats of the last frame written)."""
        import torch

        n, p = len(self.order), self.placed
        shape = images.shape[1:] if images is not None else self.out.shape[1:]
        if self.out is None:
            self.out = torch.empty((max(n, self.expected), *shape), dtype=torch.uint8)
        elif n > len(self.out):  # more frames than expected (variable frame rate): half as much room again
            room = max(n, len(self.out) + len(self.out) // 2 + 1)
            grown = torch.empty((room, *self.out.shape[1:]), dtype=torch.uint8)
            grown[:p] = self.out[:p]
            self.out = grown
        while p < n and self.order[p] < first:  # repeats of the last frame written
            self.out[p] = self.out[p - 1]
            p += 1
        if p < n:
            rows = self.order[p:n]
            if rows == list(range(first, first + len(images))):
                self.out[p:n] = images
            else:
                self.out[p:n] = images[torch.tensor(rows) - first]
        self.placed = n

    def result(self) -> torch.Tensor:
        import torch

        self._flush()
        if not self.order:
            return torch.empty(0)
        frames = self.out[: len(self.order)]
        return frames.clone() if 2 * len(frames) < len(self.out) else frames  # far fewer than expected: let it go


def _read_span(
    cursor: _FrameCursor,
    info: MediaInfo,
    fps: float | None,
    size: int | tuple[int, int] | None,
    mode: str,
    start: float,
    end: float,
) -> VideoFrames | None:
    """Frames in [start, end): on the grid start + k/fps, or every source frame there when fps is None."""
    import torch

    if fps is not None:
        count = expected = max(0, math.ceil((end - start) * fps - 1e-6))
    else:  # the source frames there, from the mean rate: a tenth more room, at most the file's frames
        rate = info.fps if math.isfinite(info.fps) and info.fps > 0 else info.n_frames / info.duration
        expected = min(info.n_frames, math.ceil((end - start) * rate * 1.1) + 2)
    resizer = _Resizer(size, mode, expected)
    times: list[float] = []
    if fps is None:
        for frame, t in _span_frames(cursor, start, end):
            resizer.add(frame)
            times.append(t)
    else:
        last_frame = None
        for k in range(count):
            t = start + k / fps
            found = cursor.frame_at(t)
            if found is None:
                break
            resizer.add(found[0], repeat=found[0] is last_frame)  # a repeated source frame is converted once
            last_frame = found[0]
            times.append(t)
    if not times:
        return None
    frames = resizer.result()
    return VideoFrames(frames, torch.tensor(times, dtype=torch.float64), info.fps if fps is None else fps)


def _span_frames(cursor: _FrameCursor, start: float, end: float) -> Iterator[tuple[av.VideoFrame, float]]:
    """The source frames shown in [start, end), each with its own time, not yet converted."""
    found = cursor.frame_at(start)
    if found is not None and start - _EPS <= found[1] < end - _EPS:
        yield found
    while cursor.upcoming is not None and cursor.upcoming[1] < end - _EPS:
        yield cursor.advance()


def _source_spans(info: MediaInfo, window_s: float, overlap_s: float) -> Iterator[tuple[float, float]]:
    """[start, end) of the windows over the source frames: `window_s` long, every `window_s - overlap_s`."""
    stride = window_s - overlap_s
    for i in range(max(1, math.ceil(info.duration / stride - 1e-9))):
        start = i * stride
        yield start, min(info.duration, start + window_s)
        if start + window_s >= info.duration - _EPS:
            return


def _span(info: MediaInfo, start: float, duration: float | None) -> tuple[float, float]:
    if duration is not None and duration <= 0:
        raise MediaError(f"{info.path}: requested duration must be > 0, got {duration:.6g} s")
    if start < 0:
        raise MediaError(f"{info.path}: start must be >= 0, got {start:.6g} s")
    if start >= info.duration - _EPS:
        raise MediaError(f"{info.path}: start {start:.3f} s is at or past the end ({info.duration:.3f} s)")
    end = info.duration if duration is None else min(info.duration, start + duration)
    return start, end


def _check_request(path: Path, fps: float | None, size: int | tuple[int, int] | None, mode: str) -> None:
    if fps is not None and not fps > 0:
        raise MediaError(f"{path}: requested fps must be > 0, got {fps}")
    if mode not in MODES:
        raise MediaError(f"{path}: mode must be one of {', '.join(MODES)}, got {mode!r}")
    sizes = [size] if isinstance(size, int) else list(size or [])
    if any(int(s) <= 0 for s in sizes) or (size is not None and not isinstance(size, int) and len(sizes) != 2):
        raise MediaError(f"{path}: size must be a positive int or (H, W), got {size!r}")


def _open_video(path: Path) -> tuple[MediaInfo, _FrameCursor]:
    info = probe(path)
    check_video(info)
    return info, _FrameCursor(path)


def read_video(
    path: str | Path,
    fps: float | None = None,
    size: int | tuple[int, int] | None = None,
    mode: str = "resize",
    start: float = 0.0,
    duration: float | None = None,
) -> VideoFrames:
    """Read frames in [start, start + duration): frame k is the source frame shown at start + k/fps.

    With fps None every source frame in the span is returned with its own time. `size` is (H, W) or an int
    (short side for resize, square side for crop / letterbox); see `resize_frames` for the modes.
    """
    path = Path(path)
    _check_request(path, fps, size, mode)
    info, cursor = _open_video(path)
    with cursor:
        start, end = _span(info, float(start), duration)
        frames = _read_span(cursor, info, fps, size, mode, start, end)
    if frames is None:
        raise MediaError(f"{path}: no frames could be decoded in [{start:.3f}, {end:.3f}) s (empty or corrupt video)")
    return frames


def scaled_height(info: MediaInfo, width: int) -> int:
    """The even frame height that keeps `info`'s shown aspect at `width` columns (at least 2)."""
    return max(2, round(info.height * width / info.width / 2) * 2)


def video_frames(path: str | Path, width: int = 64) -> tuple[np.ndarray, float, float]:
    """(frames (T, h, w, 3) uint8 scaled to `width` columns (even height, aspect kept), fps, duration s)."""
    info = probe(path)
    if not info.has_video:
        raise MediaError(f"{path}: has no video stream")
    clip = read_video(path, size=(scaled_height(info, width), width))
    return clip.frames.numpy(), clip.fps, info.duration


def iter_video_windows(
    path: str | Path,
    window_s: float,
    overlap_s: float = 0.0,
    fps: float | None = None,
    size: int | tuple[int, int] | None = None,
    mode: str = "resize",
) -> Iterator[VideoFrames]:
    """Yield consecutive windows of `window_s` seconds starting every `window_s - overlap_s` seconds.

    With fps set, windows sit on one global grid k/fps (window and stride rounded to whole frames), so with no overlap
    the windows together hold exactly the frames `read_video(path, fps)` returns. The last window may be shorter.
    """
    path = Path(path)
    _check_request(path, fps, size, mode)
    if not window_s > 0 or not 0 <= overlap_s < window_s:
        raise MediaError(f"{path}: need window_s > 0 and 0 <= overlap_s < window_s, got {window_s}, {overlap_s}")
    info, cursor = _open_video(path)
    with cursor:
        if fps is None:  # windows [i * stride, i * stride + window_s) over the source frames
            for start, end in _source_spans(info, window_s, overlap_s):
                frames = _read_span(cursor, info, None, size, mode, start, end)
                if frames is not None:
                    yield frames
            return
        total = max(1, math.ceil(info.duration * fps - 1e-6))  # grid points k/fps inside the file
        window = max(1, round(window_s * fps))
        stride = max(1, window - round(overlap_s * fps))
        for first in range(0, total, stride):
            last = min(total, first + window)
            frames = _read_span(cursor, info, fps, size, mode, first / fps, last / fps)
            if frames is None:
                raise MediaError(f"{path}: no frames decoded in [{first / fps:.3f}, {last / fps:.3f}) s")
            import torch

            frames.times = torch.arange(first, first + len(frames.times), dtype=torch.float64) / fps
            yield frames
            if last >= total:
                break


@dataclass(frozen=True)
class SourceFrame:
    """A decoded source frame and its time (seconds from the first frame), not yet converted: converting to RGB
    costs about as much as decoding, so a reader that uses a few of the frames converts only those."""

    frame: av.VideoFrame
    time: float

    def image(self) -> torch.Tensor:
        """(H, W, 3) uint8 RGB as players show it (display rotation applied): the pixels `read_video` gives."""
        return _to_tensor(self.frame)


def iter_source_frames(path: str | Path, window_s: float = 0.5) -> Iterator[SourceFrame]:
    """Every source frame with its time, in order, unconverted: the very frames (and times) that
    `iter_video_windows(path, window_s)` (fps and size None) returns, read the same way a window at a time."""
    path = Path(path)
    if not window_s > 0:
        raise MediaError(f"{path}: need window_s > 0, got {window_s}")
    info, cursor = _open_video(path)
    with cursor:
        for start, end in _source_spans(info, window_s, 0.0):
            for frame, t in _span_frames(cursor, start, end):
                yield SourceFrame(frame, t)
