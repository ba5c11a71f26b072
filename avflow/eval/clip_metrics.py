"""Model-free metrics of one generated clip against what is visible in its own frames (no ground truth needed).

Each is a :class:`~avflow.eval.measure.Measure`: a value, or the reason there is none (a blank video, silent audio,
no object tracked), which the UI and `avflow demo` show instead of a number.
"""

from __future__ import annotations

import numpy as np

from avflow.eval.measure import Measure


def clip_av_metrics(audio: np.ndarray, sample_rate: int, frames: np.ndarray, fps: float) -> dict[str, Measure]:
    """sync_offset_ms: audio onsets vs the flashes, appearances, cuts and contacts seen in the frames, by matching
    their patterns (ms, positive = audio late, with a confidence); side_agreement: matched events whose sound is on
    their side; follows_object: ILD at each sound's onset vs its event's azimuth; phys_residual_px: ballistic-fit
    residual of the tracked objects; n_onsets / n_visual_events: what was detected (left out when nothing could be
    looked at). ``audio`` ``(C, N)``, ``frames`` ``(T, H, W, 3)`` uint8 (:func:`avflow.eval.clip.measure_clip`)."""
    from avflow.eval import physics
    from avflow.eval.clip import measure_clip

    got = measure_clip(audio, sample_rate, frames, fps)
    out = got.values()
    if got.tracks is None:  # a blank video, or none: the reason it gives for the sync offset
        out["phys_residual_px"] = Measure.undefined(got.sync_offset_ms.reason or "no video")
    elif got.tracks.centers.shape[1] == 0:
        out["phys_residual_px"] = Measure.undefined("no object tracked in the video")
    else:
        residual = physics.trajectory_residual(got.tracks, fps, None)["residual_px"]
        short = Measure.undefined("no object tracked for 4 or more frames")
        out["phys_residual_px"] = Measure.of(residual) if np.isfinite(residual) else short
    if got.onsets is not None:
        out["n_onsets"] = Measure.of(float(len(got.onsets)))
    if got.events is not None:
        out["n_visual_events"] = Measure.of(float(len(got.events)))
    return out
