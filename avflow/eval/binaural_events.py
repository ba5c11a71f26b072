"""Per-event binaural measures of a generated clip against its world reference (the binaural benchmark's columns).

At each ground-truth event (its time and azimuth from the clip's json):
- ``ild_error_db``, ``itd_error_us``: median |cue(pred) − cue(ref)| over events, cues measured at the event time
  (:func:`avflow.eval.side.compare_event_cues`);
- ``side_accuracy``: fraction of sided events whose sound (at its detected onset, paired one to one with the events)
  is on the event's side (:func:`avflow.eval.side.side_agreement`);
- ``follows_object``: the clip measure of :func:`avflow.eval.clip.measure_clip` (per-event ILD vs leftness, or the
  per-frame one for a single tracked object);
- ``onset_error_ms``: median |onset of the pred's mix − nearest onset of ``mono``| (only with a given ``mono``).
"""

from __future__ import annotations

import numpy as np

from avflow.eval import side
from avflow.eval.clip import measure_clip
from avflow.eval.events import truth_events
from avflow.eval.measure import Measure
from avflow.eval.offset import match_events
from avflow.eval.onsets import audio_onsets

MEASURES = ("ild_error_db", "itd_error_us", "side_accuracy", "follows_object")


def _truth(meta: dict) -> tuple[np.ndarray, np.ndarray]:
    events = meta.get("events") or []
    times = np.array([float(e["time"]) for e in events])
    az = np.array([float(e["azimuth"]) if e.get("azimuth") is not None else np.nan for e in events])
    return times, az


def onset_error_ms(pred: np.ndarray, mono: np.ndarray, sample_rate: int) -> Measure:
    """Median |t − nearest mono onset| (ms) over the onsets of pred's mix (L + R) / 2."""
    got = audio_onsets(np.asarray(pred).mean(0), sample_rate).times
    ref = audio_onsets(np.asarray(mono), sample_rate).times
    if len(got) == 0 or len(ref) == 0:
        return Measure.undefined("no onset in the output or in the mono")
    return Measure.of(float(1e3 * np.median([np.abs(ref - t).min() for t in got])))


def event_measures(pred: np.ndarray, ref: np.ndarray, sample_rate: int, frames: np.ndarray, fps: float, meta: dict,
                   mono: np.ndarray | None = None) -> dict[str, Measure]:  # fmt: skip
    """pred, ref (2, S) [left, right]; frames (T, H, W, 3) uint8; meta: the world clip's json (events)."""
    times, az = _truth(meta)
    out: dict[str, Measure] = {}
    if len(times) == 0:
        out |= {k: Measure.undefined("the clip has no events") for k in ("ild_error_db", "itd_error_us")}
        out["side_accuracy"] = Measure.undefined("the clip has no events")
    else:
        cues = side.compare_event_cues(pred, ref, sample_rate, times)
        out["ild_error_db"], out["itd_error_us"] = cues["ild_error_db"], cues["itd_error_us"]
        onsets, events = audio_onsets(pred, sample_rate), truth_events(times, az)
        match = match_events(onsets, events)
        out["side_accuracy"] = side.side_agreement(side.event_sides(pred, sample_rate, onsets, events, match))
    out["follows_object"] = measure_clip(pred, sample_rate, frames, fps).follows_object
    if mono is not None:
        out["onset_error_ms"] = onset_error_ms(pred, mono, sample_rate)
    return out
