"""What every generating command accepts as input, checked before any weights are read.

One minimum for all of them: clips shorter than `MIN_DURATION_S` are refused (MMAudio pads anything under its 0.64 s
Synchformer segment, the joint model needs four frames), whether the clip is a video to add sound to, audio to make a
video for, or a requested `--duration`.
"""

from __future__ import annotations

import math
from pathlib import Path

from avflow.data.file_kinds import IMAGE_FILE_SUFFIXES
from avflow.errors import ConfigError, MediaError

MIN_DURATION_S = 0.5  # shortest input or output clip, in seconds, for foley, t2a, i2a, generate and binaural
MAX_DURATION_S = 60.0  # longest clip the joint model generates (`avflow generate`)
EPS_S = 1e-6  # absorbs float rounding of durations read from timestamps
MAX_SOUND_S = 3600.0  # longest sound t2a and i2a make (at 44.1 kHz, 635 MB of float32 held until it is written)
SPAN_SLACK_S = 0.05  # an asked duration may exceed an input's length by this much (frame and timestamp rounding)


def check_duration(seconds: float | None, what: str = "--duration") -> float | None:
    """`seconds` when it is None or at least MIN_DURATION_S (and finite), else a one-line ConfigError."""
    if seconds is None:
        return None
    if not math.isfinite(seconds):  # inf, nan: no length at all, whatever "at least" says
        raise ConfigError(f"{what} must be at least {MIN_DURATION_S} s and a finite number of seconds, got "
                          f"{seconds:g}")  # fmt: skip
    if seconds < MIN_DURATION_S - EPS_S:
        raise ConfigError(f"{what} must be at least {MIN_DURATION_S} s, got {seconds:g}")
    return float(seconds)


def check_sound_duration(seconds: float, what: str = "--duration") -> float:
    """A length for a sound made from text or an image alone (t2a, i2a): at least MIN_DURATION_S and at most
    MAX_SOUND_S (nothing else bounds it: a typo's 1e9 s would plan 1e8 windows before the first step), else a
    one-line ConfigError naming it as `what` (the option, or the argument from Python)."""
    check_duration(seconds, what)
    if seconds > MAX_SOUND_S:
        raise ConfigError(f"{what} must be at most {MAX_SOUND_S:g} s (one hour), got {seconds:g}")
    return float(seconds)


FIRST_SECONDS_HINT = "give a duration (--duration) to use its first seconds"
WHOLE_CLIP_HINT = "cut it to its last seconds first (a continuation reads all of the clip; --duration is what it adds)"


def used_span(available: float, what: str, duration: float | None, *, hint: str = FIRST_SECONDS_HINT) -> float:
    """Seconds of an input `available` s long that are used: all of it (at most MAX_DURATION_S) or its first
    `duration`; a one-line ConfigError when it is too long to take whole (ending with `hint`: what to do), or shorter
    than asked."""
    if duration is None:
        if available > MAX_DURATION_S + SPAN_SLACK_S:
            raise ConfigError(f"{what} is {available:.1f} s long; at most {MAX_DURATION_S:g} s are generated at once: "
                              f"{hint}")  # fmt: skip
        return available
    if duration > available + SPAN_SLACK_S:
        raise ConfigError(f"{what} is {available:.3f} s long, shorter than the asked duration of {duration:g} s")
    return min(duration, available)


def check_video_input(path: str | Path, *, duration: float | None = None):
    """The `MediaInfo` of a readable video at least MIN_DURATION_S long (counting only its first `duration` seconds
    when given), else a one-line MediaError. Reads headers and timestamps, never frames."""
    from avflow.data.media import probe

    path = Path(path)
    info = probe(path)
    if not info.has_video or info.n_frames == 0:
        raise MediaError(f"{path}: no video stream")
    if info.n_frames == 1 and path.suffix.lower() in IMAGE_FILE_SUFFIXES:  # not "too short (0.040 s)"
        raise MediaError(f"{path}: is a still image, not a video (`avflow i2a` makes a sound for an image)")
    used = info.duration if duration is None else min(float(duration), info.duration)
    if used < MIN_DURATION_S - EPS_S:
        raise MediaError(f"{path}: video is too short ({used:.3f} s); at least {MIN_DURATION_S} s is needed")
    if duration is not None and duration > info.duration + SPAN_SLACK_S:
        raise MediaError(f"{path}: video is {info.duration:.3f} s long, shorter than the asked duration of "
                         f"{duration:g} s")  # fmt: skip
    return info


def check_audio_input(path: str | Path):
    """The `MediaInfo` of a file with an audio track at least MIN_DURATION_S long (its `audio_duration`: the audio's
    own length, not a video's beside it), else a one-line MediaError."""
    from avflow.data.media import probe

    path = Path(path)
    info = probe(path)
    if not info.has_audio:
        raise MediaError(f"{path}: no audio stream")
    if info.audio_duration < MIN_DURATION_S - EPS_S:
        raise MediaError(f"{path}: audio is too short ({info.audio_duration:.3f} s); at least {MIN_DURATION_S} s is "
                         "needed")  # fmt: skip
    return info
