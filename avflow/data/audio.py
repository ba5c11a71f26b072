"""Read audio from audio or video files (soundfile, else PyAV), resample, convert channels; write wav / flac."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile as sf
import torch

from avflow.data.video import main_video, open_media, stream_origin
from avflow.errors import MediaError
from avflow.weights import atomic_write

WRITE_SUBTYPES = {".wav": "FLOAT", ".flac": "PCM_24"}  # wav keeps float32 exactly; flac has no float samples


def resample(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """(C, N) float32 at sr_in -> (C, round(N * sr_out / sr_in)) at sr_out (polyphase, scipy)."""
    if sr_in == sr_out:
        return audio
    from scipy.signal import resample_poly  # here, not at the top: scipy takes a while to import

    g = math.gcd(sr_in, sr_out)
    out = resample_poly(audio, sr_out // g, sr_in // g, axis=1)
    return np.ascontiguousarray(out[:, : round(audio.shape[1] * sr_out / sr_in)], dtype=np.float32)


DOWNMIX_LAYOUTS = {1: "mono", 2: "stereo"}  # a file of more channels is decoded to these by FFmpeg's downmix


def convert_channels(audio: np.ndarray, channels: int | None) -> np.ndarray:
    """(C, N) -> (channels, N): mono is the mean of all channels, stereo from mono duplicates it,
    stereo from more channels keeps the first two (front left, front right; `read_audio` downmixes a file of more
    channels with its layout instead)."""
    if channels is None or audio.shape[0] == channels:
        return audio
    if channels == 1:
        return audio.mean(axis=0, keepdims=True)
    if audio.shape[0] == 1:
        return np.repeat(audio, 2, axis=0)
    return np.ascontiguousarray(audio[:2])


def resample_reach(sr_in: int, sr_out: int) -> int:
    """Input samples past the last one an output sample of `resample` is centred on that still weigh in it (the
    polyphase filter's half length, scipy's 10 zero crossings of the slower rate): reading this many more than a
    prefix needs makes the prefix's resampled samples exactly those of the whole file."""
    if sr_in == sr_out:
        return 0
    g = math.gcd(sr_in, sr_out)
    up, down = sr_out // g, sr_in // g
    return math.ceil(10 * max(up, down) / up) + 2


def _read_soundfile(path: Path, max_frames: int | None = None) -> tuple[np.ndarray, int] | None:
    try:
        with sf.SoundFile(str(path)) as f:
            data = f.read(-1 if max_frames is None else max_frames, dtype="float32", always_2d=True)  # (N, C)
            sr = f.samplerate
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return None
    return np.ascontiguousarray(data.T), int(sr)


def _read_pyav(path: Path, downmix: int | None = None, seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Decode the first audio stream to (C, N) float32; a stream of more than `downmix` (1 or 2) channels is mixed
    down to that many by FFmpeg from its channel layout (a 5.1 track's centre and surrounds go into both sides). In
    a file with video, sample 0 sits at the first video frame's time (the origin `read_video` uses): an audio track
    starting later is padded with silence in front. `seconds`: decoding stops once that much (from sample 0) and a
    second more are read."""
    with open_media(path) as container:
        if not container.streams.audio:
            raise MediaError(f"{path}: no audio stream")
        stream = container.streams.audio[0]
        sr = stream.codec_context.sample_rate
        more = downmix is not None and stream.codec_context.channels > downmix
        converter = av.AudioResampler(format="fltp", layout=DOWNMIX_LAYOUTS[downmix] if more else None)
        video = main_video(container)
        origin = stream_origin(video) if video is not None else None
        # samples to decode from the stream's first one: 1 s over `seconds` covers a late start and the resampler
        wanted = math.inf if seconds is None else math.ceil((seconds + 1) * sr)
        chunks, first_time, decoded = [], None, 0
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.InvalidDataError:  # a corrupt packet: skip it
                continue
            for frame in frames:
                if first_time is None and frame.pts is not None:
                    first_time = Fraction(frame.pts) * frame.time_base
                    if origin is not None and seconds is not None:  # a track starting before the video: skip more
                        wanted += max(0, math.ceil((origin - first_time) * sr))
                chunks += [f.to_ndarray() for f in converter.resample(frame)]
                decoded += frame.samples
            if decoded >= wanted:
                break
        chunks += [f.to_ndarray() for f in converter.resample(None)]
        if not chunks:
            raise MediaError(f"{path}: audio stream has no decodable samples")
        audio = np.concatenate(chunks, axis=1).astype(np.float32, copy=False)  # (C, N)
        if stream.duration and stream.duration > 0:  # drop the codec's trailing padding
            audio = audio[:, : max(1, round(stream.duration * stream.time_base * sr))]
        if origin is not None and first_time is not None:
            offset = round((first_time - origin) * sr)
            if offset > 0:
                audio = np.concatenate([np.zeros((audio.shape[0], offset), np.float32), audio], axis=1)
            elif offset < 0:
                audio = audio[:, -offset:]
    return audio, sr


def read_audio(
    path: str | Path, sample_rate: int | None = None, channels: int | None = None, *, seconds: float | None = None
) -> tuple[torch.Tensor, int]:
    """Read a file's (first) audio track as ((C, N) float32, sample_rate), resampled and converted if asked.
    `seconds`: only its first seconds (all of them where the file is shorter), the same samples as the whole file's
    read and cut, without decoding the rest (an hour-long file for a few seconds)."""
    path = Path(path)
    if channels not in (None, 1, 2):
        raise MediaError(f"{path}: channels must be 1 (mono) or 2 (stereo), got {channels}")
    if sample_rate is not None and sample_rate <= 0:
        raise MediaError(f"{path}: sample_rate must be > 0, got {sample_rate}")
    if seconds is not None and not seconds > 0:
        raise MediaError(f"{path}: seconds must be > 0, got {seconds}")
    if not path.exists():
        raise MediaError(f"{path}: file not found")
    found = _read_soundfile(path, _frames_for(path, seconds, sample_rate)) if path.is_file() else None
    if found is not None and channels is not None and found[0].shape[0] > 2:
        found = None  # more channels than stereo: FFmpeg knows their layout and mixes them down
    audio, sr = found if found is not None else _read_pyav(path, channels, seconds)
    if audio.shape[1] == 0:
        raise MediaError(f"{path}: zero audio duration (no samples)")
    if not np.isfinite(audio).all():
        raise MediaError(f"{path}: the audio holds NaN or infinite samples")
    audio = convert_channels(audio, channels)
    if sample_rate is not None:
        audio, sr = resample(audio, sr, int(sample_rate)), int(sample_rate)
    if seconds is not None:
        audio = audio[:, : round(seconds * sr)]
    return torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)), sr


def _frames_for(path: Path, seconds: float | None, sample_rate: int | None) -> int | None:
    """Frames soundfile reads for the first `seconds` of `path` resampled to `sample_rate` (None: all of them)."""
    if seconds is None:
        return None
    try:
        sr = int(sf.info(str(path)).samplerate)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return None  # not a soundfile format: PyAV reads it
    return math.ceil(seconds * sr) + resample_reach(sr, int(sample_rate or sr))


def audio_channels(path: str | Path) -> int:
    """The channel count of a file's first audio track (a one-line MediaError where it has none)."""
    path = Path(path)
    if path.is_file():
        try:
            return int(sf.info(str(path)).channels)
        except (sf.LibsndfileError, RuntimeError, TypeError):
            pass
    with open_media(path) as container:
        if not container.streams.audio:
            raise MediaError(f"{path}: no audio stream")
        return int(container.streams.audio[0].codec_context.channels)


def as_channels_first(audio: torch.Tensor | np.ndarray, what: str) -> np.ndarray:
    """(C, N) or (N,) tensor / array -> (C, N) float32 numpy; one or two channels."""
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().float().numpy()
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None]
    if audio.ndim != 2 or audio.shape[0] not in (1, 2):
        raise MediaError(f"{what}: audio must be (C, N) with C = 1 or 2, got shape {tuple(audio.shape)}")
    return audio


def write_audio(path: str | Path, audio: torch.Tensor | np.ndarray, sample_rate: int) -> Path:
    """Write (C, N) float audio to .wav (float32, exact) or .flac (24-bit, clipped to [-1, 1]), atomically."""
    path = Path(path)
    subtype = WRITE_SUBTYPES.get(path.suffix.lower())
    if subtype is None:
        raise MediaError(f"{path}: can only write {', '.join(WRITE_SUBTYPES)} audio")
    data = as_channels_first(audio, str(path))
    if data.shape[1] == 0:
        raise MediaError(f"{path}: zero audio duration (no samples to write)")
    if subtype != "FLOAT":
        data = np.clip(data, -1.0, 1.0)
    kind = path.suffix.lower().lstrip(".").upper()
    atomic_write(path, lambda f: sf.write(f, data.T, int(sample_rate), subtype=subtype, format=kind))
    return path
