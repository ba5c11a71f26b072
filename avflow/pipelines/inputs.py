"""What every generating command accepts as input, checked before any weights are read.

One minimum for all of them: clips shorter than `MIN_DURATION_S` are refused (MMAudio pads anything under its 0.64 s
Synchformer segment, the joint model needs four frames), whether the clip is a video to add sound to, audio to make a
video for, or a requested `--duration`.
"""

from __future__ import annotations

import math
from pathlib import Path

from avflow.errors import ConfigError, MediaError

MIN_DURATION_S = 0.5  # shortest input or output clip, in seconds, for foley, t2a, i2a, generate and binaural
MAX_DURATION_S = 60.0  # longest clip the joint model generates (`avflow generate`)
EPS_S = 1e-6  # absorbs float rounding of durations read from timestamps


def check_duration(seconds: float | None, what: str = "--duration") -> float | None:
    """`seconds` when it is None or at least MIN_DURATION_S (and finite), else a one-line ConfigError."""
    if seconds is None:
        return None
    if not math.isfinite(seconds) or seconds < MIN_DURATION_S - EPS_S:
        raise ConfigError(f"{what} must be at least {MIN_DURATION_S} s, got {seconds:g}")
    return float(seconds)


def check_video_input(path: str | Path, *, duration: float | None = None):
    """The `MediaInfo` of a readable video at least MIN_DURATION_S long (counting only its first `duration` seconds
    when given), else a one-line MediaError. Reads headers and timestamps, never frames."""
    from avflow.data.media import probe

    path = Path(path)
    info = probe(path)
    if not info.has_video or info.n_frames == 0:
        raise MediaError(f"{path}: no video stream")
    used = info.duration if duration is None else min(float(duration), info.duration)
    if used < MIN_DURATION_S - EPS_S:
        raise MediaError(f"{path}: video is too short ({used:.3f} s); at least {MIN_DURATION_S} s is needed")
    return info


def check_audio_input(path: str | Path):
    """The `MediaInfo` of a file with an audio track at least MIN_DURATION_S long, else a one-line MediaError."""
    from avflow.data.media import probe

    path = Path(path)
    info = probe(path)
    if not info.has_audio:
        raise MediaError(f"{path}: no audio stream")
    if info.duration < MIN_DURATION_S - EPS_S:
        raise MediaError(f"{path}: audio is too short ({info.duration:.3f} s); at least {MIN_DURATION_S} s is needed")
    return info
