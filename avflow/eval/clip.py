"""The sync and side measures of one clip, from its audio and frames alone, each with its reason when undefined.

``measure_clip(audio, sr, frames, fps)`` is what a report, the UI or ``avflow demo`` calls: it detects audio onsets
(:mod:`avflow.eval.onsets`) and visual events (:mod:`avflow.eval.events`), matches their patterns for the offset
(:mod:`avflow.eval.offset`), and measures the binaural cues at the matched onsets (:mod:`avflow.eval.side`). Nothing
is scored from a blank video or silent audio: those measures are undefined and say so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from avflow.eval import side
from avflow.eval.events import EventConfig, VisualEvents, detect, is_blank
from avflow.eval.inputs import check_audio, check_frames
from avflow.eval.measure import Measure
from avflow.eval.offset import SyncConfig, SyncResult, match_events, pairing_tolerance
from avflow.eval.onsets import AudioOnsets, OnsetConfig, audio_onsets
from avflow.eval.physics import Tracks


@dataclass(frozen=True, kw_only=True)
class ClipConfig:
    onsets: OnsetConfig = field(default_factory=OnsetConfig)
    events: EventConfig = field(default_factory=EventConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    cues: side.CueConfig = field(default_factory=side.CueConfig)


@dataclass(frozen=True)
class ClipMeasures:
    """The measures (:meth:`values`) and what they were computed from, for timelines: detected onsets and visual
    events (None when there was no audio or no video), the match, the per-event sides and the object tracks."""

    sync_offset_ms: Measure
    side_agreement: Measure
    follows_object: Measure
    duration: float
    onsets: AudioOnsets | None = None
    events: VisualEvents | None = None
    sync: SyncResult | None = None
    sides: list[side.EventSide] = field(default_factory=list)
    tracks: Tracks | None = None

    def values(self) -> dict[str, Measure]:
        return {
            "sync_offset_ms": self.sync_offset_ms,
            "side_agreement": self.side_agreement,
            "follows_object": self.follows_object,
        }


def _silent(audio: np.ndarray) -> bool:
    return not np.any(np.abs(np.asarray(audio)) > 1e-6)


def measure_clip(
    audio: np.ndarray,
    sample_rate: int,
    frames: np.ndarray | None = None,
    fps: float | None = None,
    *,
    tracks: Tracks | None = None,
    config: ClipConfig | None = None,
) -> ClipMeasures:
    """Sync offset (ms, positive = audio late), side agreement and follows-object of one clip.

    ``audio`` ``(C, N)`` or ``(N,)`` float; ``frames`` ``(T, H, W, 3)`` uint8 with frame ``k`` at ``k / fps`` (None for
    audio only); ``tracks`` optionally replaces the colour tracker (e.g. tracks from ground-truth masks). Audio
    samples-first, not float or not finite, and frames not uint8 are a ValueError (:mod:`avflow.eval.inputs`)."""
    cfg = config or ClipConfig()
    audio = check_audio(audio, "audio", dtype=np.float32)
    frames = None if frames is None else check_frames(frames, "frames")
    duration = audio.shape[-1] / sample_rate
    binaural = audio.ndim == 2 and audio.shape[0] == 2
    no_side = None if binaural else "the audio is not binaural (2 channels)"
    if frames is None or len(frames) < 2 or not fps:
        reason = "no video" if frames is None or not fps else "fewer than 2 frames"
        return ClipMeasures(
            Measure.undefined(reason), Measure.undefined(no_side or reason), Measure.undefined(no_side or reason),
            duration, audio_onsets(audio, sample_rate, cfg.onsets),
        )  # fmt: skip
    if is_blank(frames):  # nothing to measure against; still, the sound's onsets count and the frames show 0 events
        reason = "blank video (every frame is one flat colour)"
        none_seen = VisualEvents(np.zeros(0), np.zeros(0, dtype=object), np.zeros(0), frames.shape[2],
                                 np.zeros(len(frames)))  # fmt: skip
        return ClipMeasures(Measure.undefined(reason), Measure.undefined(reason), Measure.undefined(reason), duration,
                            audio_onsets(audio, sample_rate, cfg.onsets), none_seen)  # fmt: skip
    events, tracks = detect(frames, fps, tracks, cfg.events)
    if _silent(audio):
        reason = "silent audio"
        return ClipMeasures(Measure.undefined(reason), Measure.undefined(reason), Measure.undefined(reason),
                            duration, None, events, tracks=tracks)  # fmt: skip
    onsets = audio_onsets(audio, sample_rate, cfg.onsets)
    match = match_events(onsets, events, cfg.sync, frame_period_s=1.0 / fps)
    if not binaural:
        return ClipMeasures(match.offset_ms, Measure.undefined(no_side), Measure.undefined(no_side), duration,
                            onsets, events, match, tracks=tracks)  # fmt: skip
    anchor = pairing_tolerance(1.0 / fps, cfg.sync)
    sides = side.event_sides(audio, sample_rate, onsets, events, match, cfg.cues, anchor_window_s=anchor)
    n_objects = tracks.centers.shape[1]
    if n_objects == 0 and not np.isfinite(events.x).any():
        follows = Measure.undefined("no object tracked in the video")
    else:
        follows = side.follows_events(sides)
        if not follows.defined and n_objects == 1:
            follows = side.follows_object(audio, sample_rate, tracks, fps)
    return ClipMeasures(
        match.offset_ms, side.side_agreement(sides), follows, duration, onsets, events, match, sides, tracks
    )
