"""Model-free metrics of one generated clip against what is visible in its own frames (no ground truth needed)."""

from __future__ import annotations

import numpy as np


def clip_av_metrics(audio: np.ndarray, sample_rate: int, frames: np.ndarray, fps: float) -> dict[str, float]:
    """sync_ms: audio onsets minus contacts detected in the frames (median, positive = audio late);
    follows_object: correlation over detected contacts of the ILD just after the contact with the leftness of the
    object that made it; phys_residual_px: ballistic-fit residual of the tracked objects; plus the counts a NaN is
    explained by (onsets, contacts, tracked objects, contacts of single tracked objects and the spread of their
    azimuths).
    """
    from avflow.eval import physics, spatial, sync

    tracks = physics.track_objects(frames)
    onsets = sync.detect_onsets(audio, sample_rate)
    contacts = sync.visual_contacts(tracks, fps)
    m = sync.match_offset(onsets, contacts)
    fit = physics.trajectory_residual(tracks, fps, None)
    times, azimuths = [], []
    width = frames.shape[2]
    for k in range(tracks.centers.shape[1]):
        one = physics.Tracks(tracks.centers[:, k : k + 1], tracks.areas[:, k : k + 1], tracks.frame_size)
        for tc in sync.visual_contacts(one, fps):
            x = np.interp(tc * fps, np.arange(len(frames)), tracks.centers[:, k, 0])
            if np.isfinite(x):
                times.append(tc)
                azimuths.append((x / width - 0.5) * 90.0)
    follows = spatial.follows_events(audio, sample_rate, np.array(times), np.array(azimuths)) if times else np.nan
    return {
        "sync_ms": float(m["offset_ms"]),
        "sync_abs_ms": abs(float(m["offset_ms"])),
        "sync_matched": float(m["matched"]),
        "follows_object": float(follows),
        "phys_residual_px": float(fit["residual_px"]),
        "n_onsets": float(onsets.size),
        "n_contacts": float(contacts.size),
        "n_objects": float(np.isfinite(tracks.centers[..., 0]).any(axis=0).sum()),
        "n_object_contacts": float(len(times)),
        "contact_spread_deg": float(np.ptp(azimuths)) if azimuths else 0.0,
    }
