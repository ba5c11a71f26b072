"""Write mp4s: encode frames (h264 + AAC), or remux a video's packets unchanged with a new AAC track."""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from avflow.data.audio import as_channels_first, resample
from avflow.data.video import check_video, open_media, probe, video_span
from avflow.errors import MediaError

AAC_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
_NTSC = (Fraction(24000, 1001), Fraction(30000, 1001), Fraction(60000, 1001))


def frame_rate(fps: float | Fraction) -> Fraction:
    """fps as an exact fraction; floats within 1e-3 of the NTSC rates (23.976, 29.97, 59.94) snap to them."""
    if isinstance(fps, Fraction):
        return fps
    for rate in _NTSC:
        if abs(float(rate) - fps) < 1e-3:
            return rate
    return Fraction(fps).limit_denominator(1001)


def _fit_length(audio: np.ndarray, n_samples: int) -> np.ndarray:
    """Trim, or pad with silence at the end, to exactly n_samples."""
    if audio.shape[1] >= n_samples:
        return audio[:, :n_samples]
    return np.concatenate([audio, np.zeros((audio.shape[0], n_samples - audio.shape[1]), np.float32)], axis=1)


def _encode_aac(
    output: av.container.OutputContainer, audio: np.ndarray, sample_rate: int, duration: Fraction, start: Fraction
) -> list[av.Packet]:
    """Add an AAC stream to `output` holding `audio` fitted to `duration` seconds from `start`; return its packets."""
    if sample_rate not in AAC_RATES:  # AAC only has these rates: go up to the next one
        target = next((r for r in AAC_RATES if r >= sample_rate), 96000)
        audio, sample_rate = resample(audio, sample_rate, target), target
    audio = np.ascontiguousarray(_fit_length(audio, round(duration * sample_rate)), dtype=np.float32)
    layout = "mono" if audio.shape[0] == 1 else "stereo"
    stream = output.add_stream("aac", rate=sample_rate, layout=layout)
    frame = av.AudioFrame.from_ndarray(audio, format="fltp", layout=layout)
    frame.sample_rate, frame.time_base, frame.pts = sample_rate, Fraction(1, sample_rate), round(start * sample_rate)
    return list(stream.encode(frame)) + list(stream.encode(None))


def _packet_time(packet: av.Packet) -> Fraction:
    return Fraction(packet.dts if packet.dts is not None else packet.pts or 0) * packet.time_base


def _mux_interleaved(
    output: av.container.OutputContainer, video_packets: Iterable[av.Packet], audio_packets: list[av.Packet]
) -> None:
    """Mux video packets in order, slipping each audio packet in before the first later video packet."""
    pending = iter(audio_packets)
    audio_next = next(pending, None)
    for packet in video_packets:
        while audio_next is not None and _packet_time(audio_next) <= _packet_time(packet):
            output.mux(audio_next)
            audio_next = next(pending, None)
        output.mux(packet)
    while audio_next is not None:
        output.mux(audio_next)
        audio_next = next(pending, None)


def mux_audio(video_path: str | Path, audio: torch.Tensor | np.ndarray, sample_rate: int, out_path: str | Path) -> Path:
    """Write out_path with video_path's video packets unchanged (no re-encode) and `audio` (C, N) as a new AAC track
    padded with silence or trimmed to exactly the video's duration. The source's own audio tracks are dropped."""
    video_path, out_path = Path(video_path), Path(out_path)
    data = as_channels_first(audio, str(out_path))
    if out_path.resolve() == video_path.resolve():
        raise MediaError(f"{out_path}: output must differ from the input video")
    check_video(probe(video_path))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open_media(video_path) as source:
        in_video = source.streams.video[0]
        start, end = video_span(source, in_video)
        source.seek(0, stream=in_video, backward=True)
        with av.open(str(out_path), "w") as output:
            out_video = output.add_stream_from_template(in_video)
            audio_packets = _encode_aac(output, data, int(sample_rate), end - start, start)

            def video_packets() -> Iterable[av.Packet]:
                for packet in source.demux(in_video):
                    if packet.dts is None and packet.pts is None:  # demuxer's end-of-stream marker
                        continue
                    packet.stream = out_video
                    yield packet

            _mux_interleaved(output, video_packets(), audio_packets)
    return out_path


def write_video(
    path: str | Path,
    frames: torch.Tensor | np.ndarray,
    fps: float | Fraction,
    audio: torch.Tensor | np.ndarray | None = None,
    sample_rate: int | None = None,
    *,
    crf: int = 18,
    preset: str = "medium",
) -> Path:
    """Encode (T, H, W, 3) uint8 frames as h264 (yuv420p) at fps; `audio` (C, N) becomes an AAC track fitted to the
    video's duration T / fps. Frame k has pts k / fps. H and W must be even (a yuv420p requirement)."""
    path = Path(path)
    frames = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise MediaError(f"{path}: frames must be uint8 (T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
    n, height, width = frames.shape[:3]
    if n == 0:
        raise MediaError(f"{path}: no frames to write")
    if height % 2 or width % 2:
        raise MediaError(f"{path}: h264 (yuv420p) needs an even width and height, got {width}x{height}")
    if not fps > 0:
        raise MediaError(f"{path}: fps must be > 0, got {fps}")
    if audio is not None and not sample_rate:
        raise MediaError(f"{path}: audio given without a sample_rate")
    rate = frame_rate(fps)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as output:
        stream = output.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf), "preset": preset}
        audio_packets = []
        if audio is not None:
            data = as_channels_first(audio, str(path))
            audio_packets = _encode_aac(output, data, int(sample_rate), n / rate, Fraction(0))

        def video_packets() -> Iterable[av.Packet]:
            for k in range(n):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[k]), format="rgb24")
                frame.pts, frame.time_base = k, 1 / rate
                yield from stream.encode(frame)
            yield from stream.encode(None)

        _mux_interleaved(output, video_packets(), audio_packets)
    return path
