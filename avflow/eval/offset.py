"""Audio-visual offset by matching the pattern of visual events to the pattern of audio onsets.

Sign (docs/conventions.md): the offset is ``t_audio − t_visual``; positive means the audio is late.

Onset ``a`` at ``t_a``, the start of its sound (its ``starts``: where it leaves the noise floor, before a faint
lead-in rather than at the attack), with novelty ``ν_a`` (:mod:`avflow.eval.onsets`) weighs ``w_a = f + (1 − f)·ν_a``
(``f = novelty_floor``), and spreads over a flat-topped triangle of half-width ``τ``:
``A(t) = max_a w_a·clip(2·(1 − |t − t_a|/τ), 0, 1)`` (full weight within ``τ/2``, none beyond ``τ``).
A lag ``d`` scores ``s(d) = (1/V)·Σ_v A(t_v + d)`` over the ``V`` visual events, on a 1 ms grid in ``±max_offset``.
The whole pattern is matched at once: one lag must fit every event, and a sound with several onsets is anchored on
its first (heard from quiet, it weighs more than the later ones heard over it), not on whichever lies nearest.

The best lag ``d*`` is refined twice to the weighted median of ``t_a − t_v`` over the pairs it matches (within ``τ``,
then ``τ_fine``): that is the offset ``d``. The events are then paired one to one with the onsets at ``d``
(:func:`pair_nearest` within :func:`pairing_tolerance`, which allows for frame-quantised visual times): the sides are
read at these pairs. The runner-up ``d₂`` is the best lag at least ``exclusion`` from ``d*``, ``ρ = s(d₂)/s(d*)``.
Undefined: no visual events, no onsets, nothing matched, ``ρ ≥ ambiguous_ratio``, or periodic visual events (three
or more, intervals within ``periodic_cv`` of their mean, shorter than twice the search range) with ``ρ`` at least
``distinct_ratio``: their offset is known only up to a multiple of the period. Else
``confidence = clip((1 − ρ)/(1 − distinct_ratio), 0, 1) · clip(coverage / min_coverage, 0, 1)``, ``coverage`` the
fraction of visual events with an onset within ``τ`` of ``t_v + d*``.

``candidates``: the lags that may be the offset, each refined and paired as above: the offset alone when it is
defined; when it is undefined as ambiguous or periodic, every peak of ``s`` above ``distinct_ratio·s(d*)`` (peaks at
least ``exclusion`` apart, best first). A measure that holds at every candidate (an event's side, read at whichever
onset each candidate pairs it with) holds whatever the offset is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avflow.eval.events import VisualEvents
from avflow.eval.measure import Measure
from avflow.eval.onsets import AudioOnsets


@dataclass(frozen=True, kw_only=True)
class SyncConfig:
    max_offset_s: float = 0.3  # lags searched: ±this
    step_s: float = 0.001
    tolerance_s: float = 0.02  # τ: half-width of an onset's triangle in the coarse search
    fine_tolerance_s: float = 0.01  # τ_fine: pairs kept in the last refinement, and paired at exact visual times
    novelty_floor: float = 0.6  # f: weight of an onset heard over a louder sound (1 = ignore novelty)
    exclusion_s: float = 0.04  # the runner-up lag is at least this far from the best one
    ambiguous_ratio: float = 0.95  # runner-up / best at or above this: undefined
    distinct_ratio: float = 0.7  # runner-up / best at or below this: no confidence lost to the runner-up
    min_coverage: float = 0.5  # fraction of visual events matched from which no confidence is lost to coverage
    periodic_cv: float = 0.1  # visual intervals this regular (std / mean) make a periodic pattern

    def __post_init__(self) -> None:
        if not 0 < self.fine_tolerance_s <= self.tolerance_s < self.max_offset_s:
            raise ValueError("sync config needs 0 < fine_tolerance_s <= tolerance_s < max_offset_s")
        if not 0 <= self.distinct_ratio < self.ambiguous_ratio <= 1:
            raise ValueError("sync config needs 0 <= distinct_ratio < ambiguous_ratio <= 1")
        if not 0 < self.min_coverage <= 1:
            raise ValueError("sync config needs 0 < min_coverage <= 1")


@dataclass(frozen=True)
class SyncResult:
    """``offset_ms`` (a :class:`Measure`); ``pairs`` ``(P, 2)`` indices (visual event, onset) paired one to one at that
    offset (:func:`pair_nearest`); ``lags_ms``/``scores`` the score curve; ``runner_up_ms`` the best lag away from the
    peak (NaN if none); ``candidates`` the lags the offset may be, with their pairs (see the module docstring)."""

    offset_ms: Measure
    pairs: np.ndarray
    lags_ms: np.ndarray
    scores: np.ndarray
    runner_up_ms: float
    coverage: float
    candidates: tuple[tuple[float, np.ndarray], ...] = ()  # (lag ms, pairs) per candidate offset, best first


def _onset_map(onsets: AudioOnsets, t0: float, n: int, step: float, tol: float, floor: float) -> np.ndarray:
    """``A`` on the grid ``t0 + i·step``, ``i < n``."""
    grid = np.zeros(n)
    half = int(np.ceil(tol / step))
    weights = floor + (1.0 - floor) * onsets.novelty
    for ta, wa in zip(onsets.starts, weights):
        c = int(round((ta - t0) / step))
        lo, hi = max(0, c - half), min(n, c + half + 1)
        if lo >= hi:
            continue
        tri = wa * np.clip(2.0 * (tol - np.abs(t0 + np.arange(lo, hi) * step - ta)) / tol, 0.0, 1.0)
        grid[lo:hi] = np.maximum(grid[lo:hi], tri)
    return grid


def _pairs(onsets: AudioOnsets, events: VisualEvents, lag: float, tol: float, weights: np.ndarray) -> np.ndarray:
    """For each visual event the onset with the largest triangle weight at ``t_v + lag`` (within ``tol``)."""
    out = []
    for v, tv in enumerate(events.times):
        dist = np.abs(onsets.starts - tv - lag)
        score = np.where(dist < tol, weights * (1.0 - dist / tol), 0.0)
        if score.size and score.max() > 0:
            out.append((v, int(score.argmax())))
    return np.array(out, dtype=int).reshape(-1, 2)


def pairing_tolerance(frame_period_s: float, config: SyncConfig | None = None) -> float:
    """Half-width (s) of the window in which an onset is paired with a visual event at the measured offset:
    ``τ_pair = τ_fine + T/2``, ``T`` the video's frame period (0 for exactly timed events).

    ``τ_fine`` is what a pair may be off when the visual time is exact: the onset's timing (a level step read over
    ``window_s`` windows, :mod:`avflow.eval.onsets`) and the ``step_s`` lag grid. A brightening first seen in frame
    ``k`` began within the frame period before ``k / fps``, the time it is given (a contact is interpolated between
    frames, no better than that): its true time is uncertain by one frame period, ``±T/2`` about the mean delay that
    the offset absorbs. With the defaults: 27 ms at 30 fps, 30 ms at 25 fps, 41 ms at 16 fps."""
    cfg = config or SyncConfig()
    return cfg.fine_tolerance_s + 0.5 * max(0.0, frame_period_s)


def pair_nearest(audio_times: np.ndarray, visual_times: np.ndarray, lag: float, tolerance: float) -> np.ndarray:
    """One-to-one pairs ``(visual event, onset)`` whose distance ``|t_a − t_v − lag|`` is below ``tolerance``, nearest
    first: every candidate pair in order of distance is kept unless its event or its onset is already paired (so a
    wider window never pairs one onset twice, and of two onsets competing for one event the nearer wins).
    ``(P, 2)`` indices, sorted by event."""
    dist = np.abs(np.asarray(audio_times)[None, :] - np.asarray(visual_times)[:, None] - lag)  # (V, O)
    v, a = np.nonzero(dist < tolerance)
    taken_v, taken_a, out = set(), set(), []
    for i in np.argsort(dist[v, a], kind="stable"):
        if v[i] not in taken_v and a[i] not in taken_a:
            taken_v.add(v[i])
            taken_a.add(a[i])
            out.append((int(v[i]), int(a[i])))
    return np.array(sorted(out), dtype=int).reshape(-1, 2)


def _weighted_median(x: np.ndarray, w: np.ndarray) -> float:
    order = np.argsort(x)
    cw = np.cumsum(w[order])
    return float(x[order][np.searchsorted(cw, 0.5 * cw[-1])])


def match_events(
    onsets: AudioOnsets, events: VisualEvents, config: SyncConfig | None = None, *, frame_period_s: float = 0.0
) -> SyncResult:
    """Offset between visual events and audio onsets, and their pairs at that offset (see the module docstring);
    ``frame_period_s`` (``1 / fps``; 0 for exactly timed events) widens the pairing (:func:`pairing_tolerance`)."""
    cfg = config or SyncConfig()
    n_lags = int(round(cfg.max_offset_s / cfg.step_s))
    lags = np.arange(-n_lags, n_lags + 1) * cfg.step_s  # (L,)
    none = np.zeros((0, 2), dtype=int)

    def undefined(reason: str, scores: np.ndarray | None = None) -> SyncResult:
        scores = np.zeros(lags.size) if scores is None else scores
        return SyncResult(Measure.undefined(reason), none, 1000 * lags, scores, float("nan"), 0.0)

    if len(events) == 0:
        return undefined("no visual events (no flash, appearance, cut or contact)")
    if len(onsets) == 0:
        return undefined("no audio onsets (silent or steady audio)")
    tol = cfg.tolerance_s
    t0 = float(events.times.min()) - cfg.max_offset_s - 2 * tol
    n = int(np.ceil((float(events.times.max()) + cfg.max_offset_s + 2 * tol - t0) / cfg.step_s)) + 1
    grid = _onset_map(onsets, t0, n, cfg.step_s, tol, cfg.novelty_floor)
    pos = (events.times[:, None] + lags[None, :] - t0) / cfg.step_s  # (V, L) fractional grid index
    lo = np.clip(np.floor(pos).astype(int), 0, n - 2)
    frac = np.clip(pos - lo, 0.0, 1.0)
    scores = ((1 - frac) * grid[lo] + frac * grid[lo + 1]).mean(axis=0)  # (L,)
    best = int(scores.argmax())
    if scores[best] <= 0:
        return undefined(f"no audio onset within ±{1000 * cfg.max_offset_s:.0f} ms of any visual event", scores)
    far = np.abs(lags - lags[best]) >= cfg.exclusion_s
    runner = int(np.flatnonzero(far)[scores[far].argmax()]) if far.any() else best
    ratio = float(scores[runner] / scores[best]) if far.any() else 0.0
    runner_ms = 1000 * float(lags[runner]) if far.any() else float("nan")
    period = _period(events.times, cfg)
    reason = ""
    if ratio >= cfg.ambiguous_ratio:
        reason = f"ambiguous: lags {1000 * lags[best]:+.0f} ms and {runner_ms:+.0f} ms fit about equally well"
    elif period and ratio > cfg.distinct_ratio:
        reason = f"periodic visual events (every {1000 * period:.0f} ms): the offset is ambiguous by the period"
    weights = cfg.novelty_floor + (1 - cfg.novelty_floor) * onsets.novelty
    tau_pair = pairing_tolerance(frame_period_s, cfg)

    def refined(lag: float) -> tuple[float, np.ndarray]:
        for t in (tol, cfg.fine_tolerance_s):
            found = _pairs(onsets, events, lag, t, weights)
            if found.size == 0:
                break
            lag = _weighted_median(onsets.starts[found[:, 1]] - events.times[found[:, 0]], weights[found[:, 1]])
        return lag, pair_nearest(onsets.starts, events.times, lag, tau_pair)

    if reason:
        peaks = _peaks(scores, cfg.distinct_ratio * scores[best], int(round(cfg.exclusion_s / cfg.step_s)))
        candidates = tuple((1000.0 * lag, pairs) for lag, pairs in (refined(float(lags[i])) for i in peaks))
        return SyncResult(Measure.undefined(reason), none, 1000 * lags, scores, runner_ms, 0.0, candidates)
    lag, pairs = refined(float(lags[best]))
    coverage = float(np.mean([np.abs(onsets.starts - tv - lag).min() < tol for tv in events.times]))
    distinct = float(np.clip((1.0 - ratio) / (1.0 - cfg.distinct_ratio), 0.0, 1.0))
    confidence = distinct * min(1.0, coverage / cfg.min_coverage)
    offset = Measure.of(1000.0 * lag, confidence)
    return SyncResult(offset, pairs, 1000 * lags, scores, runner_ms, coverage, ((1000.0 * lag, pairs),))


def _peaks(scores: np.ndarray, floor: float, exclusion: int) -> list[int]:
    """Indices of the local maxima of ``scores`` above ``floor``, best first, each at least ``exclusion`` grid steps
    from a better one."""
    padded = np.concatenate(([-np.inf], scores, [-np.inf]))
    local = np.flatnonzero((scores >= padded[:-2]) & (scores >= padded[2:]) & (scores > floor))
    kept: list[int] = []
    for i in local[np.argsort(-scores[local], kind="stable")]:
        if all(abs(int(i) - k) >= exclusion for k in kept):
            kept.append(int(i))
    return kept


def _period(times: np.ndarray, cfg: SyncConfig) -> float | None:
    """The period (s) of three or more visual events at regular intervals shorter than twice the search range."""
    gaps = np.diff(np.sort(times))
    if gaps.size < 2 or gaps.mean() <= 0:
        return None
    mean = float(gaps.mean())
    regular = float(gaps.std()) <= cfg.periodic_cv * mean and mean < 2 * cfg.max_offset_s
    return mean if regular else None
