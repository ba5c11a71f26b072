"""Audio-visual synchronisation metrics in milliseconds, with no learned model: the first onset detector and matcher
(used by `avflow.pipelines.generate` and ground-truth tests) and AV-Align. The clip-level offset with a confidence and
reasons for being undefined is :mod:`avflow.eval.offset` (onsets: :mod:`avflow.eval.onsets`, visual events:
:mod:`avflow.eval.events`).

Sign convention (docs/conventions.md): an offset is ``t_audio - t_visual``; positive means the audio is late.
Audio is ``(C, N)`` or ``(N,)`` float; frames are ``(T, H, W, 3)`` uint8 with frame ``k`` shown at ``k / fps``.
Other layouts, dtypes and non-finite audio are a one-line ValueError (:mod:`avflow.eval.inputs`).
"""

from __future__ import annotations

import numpy as np

from avflow.eval.inputs import check_audio, check_frames
from avflow.eval.physics import Tracks, reversals, track_objects


def _mono(audio: np.ndarray) -> np.ndarray:
    """``(C, N)`` or ``(N,)`` float audio -> ``(N,)`` float64 mix, checked first: ``(N, 2)`` audio would otherwise
    be N channels of 2 samples, too short for any onset."""
    audio = check_audio(audio, "audio")
    return audio.mean(axis=0) if audio.ndim == 2 else audio


def _parabolic_offset(y_prev: float, y_mid: float, y_next: float) -> float:
    """Sub-sample peak position in [-0.5, 0.5] of the parabola through three samples."""
    denom = y_prev - 2.0 * y_mid + y_next
    if denom >= 0:
        return 0.0
    return float(np.clip(0.5 * (y_prev - y_next) / denom, -0.5, 0.5))


def onset_envelope(
    audio: np.ndarray, sample_rate: int, hop_s: float = 0.001, window_s: float = 0.004, floor_db: float = -50.0
) -> tuple[np.ndarray, np.ndarray]:
    """Onset strength at ``hop_s`` resolution: the rise of log energy as a window's leading edge moves.

    ``e[k] = Σ x²[k·hop : k·hop + win]`` (mono mix), ``L[k] = ln(e[k] + ε)`` with ``ε = 10^(floor_db/10)·max e``,
    ``flux[k] = max(0, L[k+1] − L[k])``, placed at the leading edge ``t[k] = (k + ½)·hop + win`` (seconds).
    Returns ``(flux (K,), times (K,))``.
    """
    x = _mono(audio)
    hop = max(1, round(hop_s * sample_rate))
    win = max(hop, round(window_s * sample_rate))
    if x.size < win + 2 * hop:
        return np.zeros(0), np.zeros(0)
    csum = np.concatenate([[0.0], np.cumsum(x * x)])
    starts = np.arange(0, x.size - win + 1, hop)
    energy = csum[starts + win] - csum[starts]  # (K+1,)
    eps = max(float(energy.max()) * 10 ** (floor_db / 10), 1e-20)
    log_e = np.log(energy + eps)
    flux = np.maximum(0.0, np.diff(log_e))
    times = ((np.arange(flux.size) + 0.5) * hop + win) / sample_rate
    return flux, times


def detect_onsets(
    audio: np.ndarray, sample_rate: int, min_rise: float = 1.0, rel_threshold: float = 0.2, min_gap_s: float = 0.02
) -> np.ndarray:
    """Onset times (s): peaks of :func:`onset_envelope` above ``max(min_rise, rel·max)`` (natural-log units),
    at least ``min_gap_s`` apart (strongest kept), refined by parabolic interpolation."""
    flux, times = onset_envelope(audio, sample_rate)
    if flux.size < 3 or flux.max() <= 0:
        return np.zeros(0)
    hop = times[1] - times[0]
    thr = max(min_rise, rel_threshold * float(flux.max()))
    inner = flux[1:-1]
    peaks = np.flatnonzero((inner >= flux[:-2]) & (inner > flux[2:]) & (inner >= thr)) + 1
    keep: list[int] = []
    for p in peaks[np.argsort(-flux[peaks])]:
        if all(abs(times[p] - times[q]) >= min_gap_s for q in keep):
            keep.append(int(p))
    keep.sort()
    return np.array([times[p] + hop * _parabolic_offset(flux[p - 1], flux[p], flux[p + 1]) for p in keep])


def match_offset(
    audio_times: np.ndarray, visual_times: np.ndarray, max_offset_s: float = 0.25, tolerance_s: float = 0.015
) -> dict[str, float]:
    """Global offset between two event lists: ``t_audio − t_visual`` in ms.

    Coarse: the lag ``d`` on a 1 ms grid in ``±max_offset_s`` maximising the number of events of the sparser list
    with a partner in the other within ``tolerance_s`` after shifting by ``d`` (ties: smallest |d|). Fine: twice,
    ``d ←`` median of the nearest-partner differences ``t_a − t_v`` within ``tolerance_s`` then ``tolerance_s / 3``
    of ``d``. ``matched`` = fraction of visual events with an audio partner within ``tolerance_s`` of ``d``;
    ``abs_error_ms`` = mean |t_a − t_v − d| over the final matches.
    """
    a, v = np.sort(np.asarray(audio_times, float)), np.sort(np.asarray(visual_times, float))
    nan = {"offset_ms": float("nan"), "matched": 0.0, "abs_error_ms": float("nan"), "n_events": float(v.size)}
    if a.size == 0 or v.size == 0:
        return nan
    diff = a[None, :] - v[:, None]  # (V, A)
    axis = 1 if v.size <= a.size else 0  # look for partners of the sparser list
    lags = np.arange(-max_offset_s, max_offset_s + 1e-9, 0.001)
    counts = np.array([(np.abs(diff - d).min(axis=axis) <= tolerance_s).sum() for d in lags])
    if counts.max() == 0:
        return nan
    cand = lags[counts == counts.max()]
    lag = float(cand[np.argmin(np.abs(cand))])
    close = np.zeros(0)
    for tol in (tolerance_s, tolerance_s / 3):
        nearest = np.take_along_axis(diff, np.abs(diff - lag).argmin(axis=axis, keepdims=True), axis=axis).ravel()
        if not (np.abs(nearest - lag) <= tol).any():
            break
        close = nearest[np.abs(nearest - lag) <= tol]
        lag = float(np.median(close))
    per_visual = diff[np.arange(v.size), np.abs(diff - lag).argmin(axis=1)]
    return {
        "offset_ms": 1000.0 * lag,
        "matched": float(np.mean(np.abs(per_visual - lag) <= tolerance_s)),
        "abs_error_ms": 1000.0 * float(np.mean(np.abs(close - lag))) if close.size else float("nan"),
        "n_events": float(v.size),
    }


def _contact_time(t: np.ndarray, y: np.ndarray, before: int, after: int, lo: int, hi: int) -> float | None:
    """Sub-frame time of a reversal with the contact in ``(t[before], t[after])``: the intersection of the trajectory
    before (frames lo..before) and after (after..hi). With ≥ 5 points both sides are parabolas
    ``y = a_s + b_s·τ + c·τ²`` sharing ``c`` (same gravity), so ``τ = −(a_0 − a_1)/(b_0 − b_1)``; else two lines."""
    pre, post = np.arange(max(lo, before - 3), before + 1), np.arange(after, min(hi, after + 3) + 1)
    if pre.size < 2 or post.size < 2:
        return None
    tau = t - t[before]
    if pre.size + post.size >= 5:
        rows = [[tau[j] ** 2, 1.0, tau[j], 0.0, 0.0] for j in pre] + [
            [tau[j] ** 2, 0.0, 0.0, 1.0, tau[j]] for j in post
        ]
        _, a0, b0, a1, b1 = np.linalg.lstsq(np.array(rows), y[np.concatenate([pre, post])], rcond=None)[0]
    else:
        b0, a0 = np.polyfit(tau[pre], y[pre], 1)
        b1, a1 = np.polyfit(tau[post], y[post], 1)
    if abs(b0 - b1) < 1e-12:
        return None
    tc = t[before] - float((a0 - a1) / (b0 - b1))
    return tc if t[before] - 1e-9 <= tc <= t[after] + 1e-9 else None


def visual_contacts(tracks: Tracks, fps: float, min_speed: float = 0.3) -> np.ndarray:
    """Contact times (s) from object trajectories: velocity reversals (:func:`avflow.eval.physics.reversals`) of ``y``
    from down to up (floor, objects) and of ``x`` either way (walls), located to sub-frame precision by intersecting
    the fitted trajectories before and after (:func:`_contact_time`). Frame ``k`` is at ``k / fps``."""
    T = tracks.centers.shape[0]
    t = np.arange(T) / fps
    out: list[float] = []
    for k in range(tracks.centers.shape[1]):
        for axis in (1, 0):
            pos = tracks.centers[:, k, axis]
            revs = reversals(pos, min_speed, down_up_only=axis == 1)
            for j, (before, after) in enumerate(revs):
                lo = revs[j - 1][1] if j > 0 else 0
                hi = revs[j + 1][0] if j + 1 < len(revs) else T - 1
                while lo < before and not np.isfinite(pos[lo : before + 1]).all():
                    lo += 1
                while hi > after and not np.isfinite(pos[after : hi + 1]).all():
                    hi -= 1
                tc = _contact_time(t, pos, before, after, lo, hi)
                if tc is not None:
                    out.append(tc)
    times = np.sort(np.array(out))
    if times.size > 1:  # one contact seen on two axes (corner) counts once
        times = times[np.concatenate([[True], np.diff(times) > 0.5 / fps])]
    return times


def sync_to_events(audio: np.ndarray, sample_rate: int, event_times: np.ndarray, **kw) -> dict[str, float]:
    """Offset (ms) of detected audio onsets against ground-truth event times: :func:`match_offset`."""
    return match_offset(detect_onsets(audio, sample_rate), event_times, **kw)


def sync_to_frames(
    audio: np.ndarray, sample_rate: int, frames: np.ndarray | None, fps: float, tracks: Tracks | None = None, **kw
) -> dict[str, float]:
    """Offset (ms) of audio onsets against contacts detected in the frames (:func:`visual_contacts`)."""
    tracks = track_objects(frames) if tracks is None else tracks
    return match_offset(detect_onsets(audio, sample_rate), visual_contacts(tracks, fps), **kw)


def normal_flow_magnitude(frames: np.ndarray) -> np.ndarray:
    """Per-frame mean optical-flow magnitude, approximated by normal flow ``|I_t| / |∇I|`` (grey 0..1) over pixels
    with ``|∇I| > 0.02``; ``flow[0] = flow[1]`` as in AV-Align. Shape ``(T,)``. Two grey frames at a time: a float
    copy of the whole video took 4x its size (0.8 GB for 40 s at 320x180)."""

    def grey(k: int) -> np.ndarray:  # (H, W) float32 in 0..1
        return np.asarray(frames[k], dtype=np.float32).mean(axis=-1) / 255.0

    T = len(frames)
    out = np.zeros(T)
    before = grey(0) if T else None
    for k in range(1, T):
        now = grey(k)
        mid = 0.5 * (now + before)
        gy, gx = np.gradient(mid)
        gmag = np.hypot(gx, gy)
        sel = gmag > 0.02
        if sel.any():
            out[k] = float(np.mean(np.abs(now - before)[sel] / gmag[sel]))
        before = now
    if T > 1:
        out[0] = out[1]
    return out


def av_align(audio: np.ndarray, sample_rate: int, frames: np.ndarray, fps: float) -> float:
    """AV-Align (Yariv et al. 2023, arXiv 2309.16429): IoU of audio and video peaks.

    Audio peaks ``A`` = :func:`detect_onsets`; video peaks ``V`` = strict local maxima ``k / fps`` of the per-frame
    flow magnitude (:func:`normal_flow_magnitude`); an audio peak is matched if some video peak lies within
    ``±1/fps``; ``AV-Align = I / (|A| + |V| − I)`` with ``I`` the number of matched audio peaks.
    """
    frames = check_frames(frames, "frames")  # float frames would see no motion (the flow reads 0..255)
    a = detect_onsets(audio, sample_rate)
    flow = normal_flow_magnitude(frames)
    inner = flow[1:-1]
    v = (np.flatnonzero((inner > flow[:-2]) & (inner > flow[2:])) + 1) / fps
    if a.size + v.size == 0:
        return float("nan")
    inter = sum(bool(np.any(np.abs(v - ta) < 1.0 / fps)) for ta in a)
    return float(inter / (a.size + v.size - inter))
