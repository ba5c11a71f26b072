"""A generated clip (video frames + stereo audio): writing it, its spectrogram and its model-free measures.

`GeneratedClip.metrics()` returns named `Measure`s: a value where the clip defines it, else none and the reason
(never a bare NaN). `clip_measures` is the one function that computes them from the clip's audio and frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import Tensor


@dataclass(frozen=True, kw_only=True)
class Measure:
    """One measure of a clip: a finite `value` when `defined`, else None and a one-line `reason`. (The fields and
    text of the metrics issue's `avflow.eval.measure.Measure`, which replaces this class once it is merged.)"""

    value: float | None
    defined: bool
    reason: str = ""

    @classmethod
    def of(cls, value: float, reason: str) -> Measure:
        """`value` when finite, else undefined with `reason`."""
        value = float(value)
        return cls(value=value, defined=True) if math.isfinite(value) else cls(value=None, defined=False, reason=reason)

    def __str__(self) -> str:
        return f"{self.value:.4g}" if self.defined else f"undefined: {self.reason}"


def measure_lines(measures: dict[str, Measure], notes: dict[str, str] | None = None) -> list[str]:
    """One line per measure: its value (and `notes[name]`, what it means), or `undefined:` and why."""
    notes = notes or {}
    return [
        f"  {name:<18} {m.value:8.3f}  {notes.get(name, '')}".rstrip() if m.defined else f"  {name:<18} {m}"
        for name, m in measures.items()
    ]


def clip_measures(audio: np.ndarray, sample_rate: int, frames: np.ndarray, fps: float) -> dict[str, Measure]:
    """The measures of one clip from its audio (2, N) and frames (T, H, W, 3), each defined or with its reason.

    Today `avflow.eval.clip_metrics.clip_av_metrics`, whose NaNs become the reason the value has no meaning here;
    once the metrics issue is merged this becomes `avflow.eval.clip.measure_clip(...).values()`."""
    from avflow.eval.clip_metrics import clip_av_metrics

    m = clip_av_metrics(audio, sample_rate, frames, fps)
    onsets, contacts, objects, of_objects = (int(m[k]) for k in ("n_onsets", "n_contacts", "n_objects",
                                                                  "n_object_contacts"))  # fmt: skip
    no_object = "no object tracked in the frames" if not objects else ""
    no_contact = no_object or ("" if contacts else "no contact (an object's fall turning upward) seen in the frames")
    if no_contact:
        sync = no_contact
    elif not onsets:
        sync = "no audio onset detected"
    else:
        sync = "no audio onset within 250 ms of a contact"
    if no_contact or of_objects < 3:
        follows = no_contact or f"needs 3 contacts of tracked objects, saw {of_objects}"
    elif m["contact_spread_deg"] < 1e-6:
        follows = "every contact is at the same azimuth: nothing to follow"
    else:
        follows = "the audio is silent or its level difference does not vary at the contacts"
    phys = no_object or "no object tracked for 4 frames in a row"
    return {
        "sync_ms": Measure.of(m["sync_ms"], sync),
        "sync_matched": Measure.of(m["sync_matched"] if contacts else math.nan, no_contact),
        "follows_object": Measure.of(m["follows_object"], follows),
        "phys_residual_px": Measure.of(m["phys_residual_px"], phys),
        "n_onsets": Measure.of(onsets, ""),
        "n_contacts": Measure.of(contacts, ""),
    }


@dataclass(frozen=True, kw_only=True)
class GeneratedClip:
    frames: Tensor  # (T, H, W, 3) uint8
    audio: Tensor  # (2, N) float32 [left, right]; N / sample_rate is the clip's exact length
    sample_rate: int
    fps: float
    prompt: str
    task: str = "t2av"
    windows: int = 1  # generation windows of the model's trained length

    @property
    def duration(self) -> float:
        """Seconds of audio: exactly the asked or given length (the frames cover it, to the next whole frame)."""
        return self.audio.shape[1] / self.sample_rate

    def save(self, path: str | Path) -> Path:
        """An mp4 with h264 video and a stereo AAC track of the video's duration."""
        from avflow.data.media import write_video

        return write_video(path, self.frames, self.fps, self.audio, self.sample_rate)

    def save_spectrogram(self, path: str | Path) -> Path:
        """Left and right spectrograms with time and frequency axes on a fixed dBFS scale (`data/spectrogram.py`)."""
        from avflow.data.spectrogram import save_spectrogram

        return save_spectrogram(self.audio.numpy(), path, self.sample_rate, names=("left", "right"))

    def metrics(self) -> dict[str, Measure]:
        """Model-free measures against what is visible in the generated frames (see `clip_measures`)."""
        return clip_measures(self.audio.numpy(), self.sample_rate, self.frames.numpy(), self.fps)
