"""Does a clip show and sound what its world-style prompt names? The default model's quality measures, per clip.

Object (prompt_checks): per named object, the fraction of frames where its colour (uint8 RGB distance <= 40) forms
one compact component of 0.5-2.5x a world object's area with <= 6 % of the frame in that colour; its mean x / W over
those frames. Sound: the peak in dBFS (``20·log10 max|x|`` over both channels) and the audio onsets
(:func:`avflow.eval.onsets.audio_onsets`). Sync: the visible contacts of the named objects (downward motion turning
upward, :func:`avflow.eval.prompt_checks.floor_contacts`); each contact's error is ``|t_onset − t_contact|`` to its
nearest onset, ``UNMATCHED_MS`` when no onset lies within that. Space: at each matched onset, the ILD sign
(:func:`avflow.eval.side.ild_at`; positive = left) against the side of the contact's object at the contact
(``azimuth = (x / W − 0.5)·90°``; within ``CueConfig.min_azimuth_deg`` of the centre it has no side and is not
scored).

The frames and the audio may come from different sources: a2v measures its generated frames against the given audio,
v2a the given frames against its generated audio. Nothing is scored from a blank video: every object, sync and space
measure is then undefined with that reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from avflow.eval.events import is_blank
from avflow.eval.measure import Measure
from avflow.eval.onsets import audio_onsets
from avflow.eval.prompt_checks import (
    SIDE_RANGES,
    NamedObject,
    ObjectTrack,
    floor_contacts,
    parse_prompt,
    track_named_object,
)
from avflow.eval.side import CueConfig, ild_at

UNMATCHED_MS = 250.0  # error of a contact with no onset within this (ms)
MIN_SHOWN = 0.5  # an object "is shown in the clip" when shown in at least this fraction of frames
MIN_PEAK_DBFS = -20.0  # "sound": a peak at least this loud and at least one onset


@dataclass(frozen=True)
class ObjectMeasures:
    """One named object: what the prompt says and what the frames show."""

    named: NamedObject
    shown: Measure  # fraction of frames with the object shown
    mean_x: Measure  # mean x / W over the frames where it is shown
    contacts: np.ndarray  # (C,) s, its visible contacts
    x_at_contacts: np.ndarray  # (C,) x / W of its centre at each contact


@dataclass(frozen=True)
class Pair:
    """A visible contact, its nearest onset (None beyond UNMATCHED_MS) and the ILD side check at that onset."""

    contact: float
    obj: int  # index into PromptClipMeasures.objects
    onset: float | None
    error_ms: float  # |onset − contact|, UNMATCHED_MS when unmatched
    ild_db: Measure  # at the onset (undefined when unmatched)
    object_side: str | None  # "left"/"right" at the contact, None near the centre
    agrees: bool | None  # ILD sign == object side; None when either has no side or the ILD is undefined


@dataclass(frozen=True)
class PromptClipMeasures:
    prompt: str
    objects: list[ObjectMeasures]
    peak_dbfs: Measure
    onsets: np.ndarray  # (O,) s
    pairs: list[Pair] = field(default_factory=list)
    blank: str = ""  # the reason nothing visual was scored ("" when the video is not blank)

    def checks(self) -> dict[str, bool | None]:
        """Pass/fail of each per-clip target; None where the target does not apply to this prompt."""
        single = len(self.objects) == 1
        sides = [o for o in self.objects if o.named.side is not None]
        counted = [o for o in self.objects if o.named.bounces is not None]
        bouncing = [o for o in self.objects if o.named.bouncing]
        return {
            "object": _shown(self.objects[0]) if single else None,
            "object_side": _in_third(self.objects[0]) if single and sides else None,
            "sound": self.peak_dbfs.get(-np.inf) >= MIN_PEAK_DBFS and self.onsets.size >= 1,
            "contact": all(o.contacts.size >= 1 for o in bouncing) if bouncing else None,
            "count": all(_counted(o) for o in counted) if counted else None,
            "two_objects": all(_shown(o) for o in self.objects) if len(self.objects) == 2 else None,
        }

    def values(self) -> dict[str, Measure]:
        """Per-clip values with their reasons (for the per-clip lines and the JSON)."""
        out = {}
        for k, o in enumerate(self.objects):
            out[f"object{k}_shown"], out[f"object{k}_mean_x"] = o.shown, o.mean_x
            out[f"object{k}_contacts"] = _or_blank(self.blank, float(o.contacts.size))
        out["peak_dbfs"] = self.peak_dbfs
        out["onsets"] = Measure.of(float(self.onsets.size))
        errors = [p.error_ms for p in self.pairs]
        none = self.blank or "no visible contact of a named object"
        out["sync_median_ms"] = Measure.of(float(np.median(errors))) if errors else Measure.undefined(none)
        scored = [p.agrees for p in self.pairs if p.agrees is not None]
        why = self.blank or ("no onset matched to an off-centre contact" if errors else none)
        out["side_agreement"] = Measure.of(float(np.mean(scored))) if scored else Measure.undefined(why)
        return out


def _shown(o: ObjectMeasures) -> bool:
    return o.shown.get(0.0) >= MIN_SHOWN


def _counted(o: ObjectMeasures) -> bool:
    """Some contact is seen and their number is within one of the count named (no contact never passes)."""
    return o.contacts.size >= 1 and abs(o.contacts.size - o.named.bounces) <= 1


def _in_third(o: ObjectMeasures) -> bool:
    lo, hi = SIDE_RANGES[o.named.side]
    return _shown(o) and lo <= o.mean_x.get() <= hi


def _or_blank(blank: str, value: float) -> Measure:
    return Measure.undefined(blank) if blank else Measure.of(value)


def _object(frames: np.ndarray, fps: float, named: NamedObject, blank: str) -> ObjectMeasures:
    empty = np.zeros(0)
    if blank:
        return ObjectMeasures(named, Measure.undefined(blank), Measure.undefined(blank), empty, empty)
    track: ObjectTrack = track_named_object(frames, named)
    width = frames.shape[2]
    if track.shown.any():
        mean_x = Measure.of(track.mean_x / width)
    else:
        reasons = [r for r in track.reasons if r]
        common = max(set(reasons), key=reasons.count) if reasons else "not found"
        mean_x = Measure.undefined(f"the {named.colour} {named.shape} is shown in no frame ({common})")
    contacts = floor_contacts(track, fps)
    shown_t = np.flatnonzero(track.shown) / fps
    x = track.centers[track.shown, 0] / width
    at = np.interp(contacts, shown_t, x) if contacts.size else empty
    return ObjectMeasures(named, Measure.of(track.shown_fraction), mean_x, contacts, at)


def _side(x: float, cues: CueConfig) -> str | None:
    azimuth = (x - 0.5) * 90.0
    return None if abs(azimuth) < cues.min_azimuth_deg else ("left" if azimuth < 0 else "right")


def world_objects(prompt: str) -> list[NamedObject]:
    """The objects a world-style prompt names; a ValueError when it names none (a colour and a shape word), since no
    measure can then be scored. Callers check their prompts with it before generating anything."""
    named = parse_prompt(prompt)
    if not named:
        raise ValueError(f"the prompt names no world object (a colour and a shape word): {prompt!r}")
    return named


def measure_prompt_clip(
    prompt: str, frames: np.ndarray, fps: float, audio: np.ndarray, sample_rate: int, cues: CueConfig | None = None
) -> PromptClipMeasures:
    """The measures of one clip: ``frames`` ``(T, H, W, 3)`` uint8 with frame k at k / fps, ``audio`` ``(2, N)``
    float [left, right]. A prompt naming no world object (colour + shape word) is a ValueError."""
    cues = cues or CueConfig()
    named = world_objects(prompt)
    frames = np.asarray(frames)
    audio = np.asarray(audio, dtype=np.float64)
    if audio.ndim != 2 or audio.shape[0] != 2:
        raise ValueError(f"the measures need binaural (2, N) audio, got shape {audio.shape}")
    blank = "blank video (every frame is one flat colour)" if is_blank(frames) else ""
    objects = [_object(frames, fps, o, blank) for o in named]
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    peak_dbfs = Measure.of(20 * np.log10(peak)) if peak > 0 else Measure.undefined("silent audio")
    onsets = audio_onsets(audio, sample_rate).times if peak > 0 else np.zeros(0)
    pairs = []
    for k, o in enumerate(objects):
        for tc, x in zip(o.contacts, o.x_at_contacts):
            j = int(np.argmin(np.abs(onsets - tc))) if onsets.size else -1
            d = 1000.0 * abs(onsets[j] - tc) if j >= 0 else np.inf
            if d >= UNMATCHED_MS:
                pairs.append(Pair(float(tc), k, None, UNMATCHED_MS, Measure.undefined("no onset matched"),
                                  _side(x, cues), None))  # fmt: skip
                continue
            ild = ild_at(audio, sample_rate, float(onsets[j]), cues)
            side = _side(x, cues)
            heard = None if not ild.defined or ild.value == 0 else ("left" if ild.value > 0 else "right")
            agrees = None if side is None or heard is None else side == heard
            pairs.append(Pair(float(tc), k, float(onsets[j]), d, ild, side, agrees))
    return PromptClipMeasures(prompt, objects, peak_dbfs, onsets, sorted(pairs, key=lambda p: p.contact), blank)
