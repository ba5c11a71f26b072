"""Input checks shared by the metric entry points: a one-line ValueError naming the argument, what was expected and
what came, before any slow work. Without them a wrong layout scores as something plausible: soundfile's ``(N, 2)``
audio read as 16000 channels of 2 samples, float frames in [0, 1] as a blank video, NaN audio as silence.

Audio is ``(C, N)`` float, channels first, ``C`` in ``channels`` and more samples than channels (``(N,)`` where a
metric also takes mono); frames are ``(T, H, W, 3)`` uint8 0..255.
"""

from __future__ import annotations

import numpy as np


def check_audio(
    audio, what: str = "audio", *, channels: tuple[int, ...] = (1, 2), mono: bool = True, dtype=np.float64
) -> np.ndarray:
    """``audio`` as a ``dtype`` array of the same shape, after checking it is ``(C, N)`` (or ``(N,)`` with ``mono``)
    with ``C`` in ``channels`` and ``N > C``, floating and finite."""
    a = np.asarray(audio)
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{what}: expected float samples in [-1, 1], got dtype {a.dtype}"
                         f"{' (int16: divide by 32768)' if a.dtype == np.int16 else ''}")  # fmt: skip
    _check_audio_shape(a.shape, what, channels, mono)
    if not np.isfinite(a).all():
        raise ValueError(f"{what}: expected finite samples, got NaN or infinite values")
    return a.astype(dtype, copy=False)


def _check_audio_shape(shape: tuple[int, ...], what: str, channels: tuple[int, ...], mono: bool) -> None:
    layout = (f"({channels[0]}, N)" if len(channels) == 1 else f"(C, N) with C in {set(channels)}") + (
        " or (N,)" if mono else ""
    )
    if len(shape) == 1 and mono:
        c, n = 1, shape[0]
    elif len(shape) == 2:
        c, n = shape
    else:
        raise ValueError(f"{what}: expected {layout} audio, got shape {shape}")
    if c not in channels:
        hint = ": samples first? pass audio.T" if len(shape) == 2 and n in channels and c > n else ""
        raise ValueError(f"{what}: expected {layout} audio (channels first), got shape {shape}{hint}")
    if n <= c:
        raise ValueError(f"{what}: expected {layout} audio with more samples than channels, got shape {shape}")


def check_frames(frames, what: str = "frames") -> np.ndarray:
    """``frames`` as an array after checking it is ``(T, H, W, 3)`` uint8 with ``H, W >= 1`` (``T = 0`` passes: the
    callers say what no frames mean)."""
    f = np.asarray(frames)
    if f.ndim != 4 or f.shape[-1] != 3 or min(f.shape[1:3], default=0) < 1:
        hint = ": channels first? pass frames.transpose(0, 2, 3, 1)" if f.ndim == 4 and f.shape[1] == 3 else ""
        raise ValueError(f"{what}: expected (T, H, W, 3) frames, got shape {f.shape}{hint}")
    if f.dtype != np.uint8:
        raise ValueError(f"{what}: expected uint8 frames 0-255, got {f.dtype}{_range_hint(f)}")
    return f


def _range_hint(f: np.ndarray) -> str:
    """What to do with non-uint8 frames, from their range (only computed on the error path)."""
    if f.size == 0 or not np.issubdtype(f.dtype, np.number):
        return ""
    lo, hi = float(f.min()), float(f.max())
    if lo >= -1.0 and hi <= 1.0 and lo < 0:
        fix = "add 1, multiply by 127.5"
    elif lo >= 0 and hi <= 1.0:
        fix = "multiply by 255"
    else:
        fix = "clip to 0-255"
    return f" with values in [{lo:.3g}, {hi:.3g}]: {fix}, round and cast to uint8"
