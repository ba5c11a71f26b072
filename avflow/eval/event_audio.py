"""Per-event audio of a reconstruction against its reference (codecs, vocoders): for every ground-truth sound event,
where it starts, how loud it is and which side it comes from.

A ground-truth event at ``t_e`` (s, e.g. a world contact from the clip's json) is heard in the reference at the
reference's audio onset (:func:`avflow.eval.onsets.audio_onsets`) nearest ``t_e`` within ``match_s``. Events that
share one onset (closer than the onset detector separates) are one sound, measured once; an event with no reference
onset within ``match_s`` (masked by a louder sound, or too quiet) is counted as unheard and not measured. At each
reference onset ``t``:

- onset: ``t_pred − t`` (ms) for the prediction's onset nearest ``t`` within ``match_s`` (NaN: missed), both timed by
  the onset detector's level step on a 0.125 ms grid;
- loudness: ``10·log10(E_pred / E_ref)`` (dB), ``E`` the energy of both ears over ``[t, t + loudness_s)`` (cut at the
  clip's end), i.e. the RMS over 50 ms from the onset;
- ILD and ITD: ``|pred − ref|`` of :func:`avflow.eval.side.compare_event_cues` at ``t``, window
  ``[t − pre_s, t + window_s)`` of its :class:`~avflow.eval.side.CueConfig` (3 ms before to 15 ms after; the ITD is
  the sub-sample GCC-PHAT estimate).

Summaries are medians of the absolute errors over the measured events; a measure's confidence is the fraction of
measured events where it is defined (onset: where the prediction has an onset within ``match_s``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from avflow.eval.measure import Measure
from avflow.eval.onsets import OnsetConfig, audio_onsets
from avflow.eval.side import CueConfig, compare_event_cues


@dataclass(frozen=True, kw_only=True)
class EventAudioConfig:
    match_s: float = 0.01  # an event's onset lies within this of its time; a prediction's within this of the ref's
    loudness_s: float = 0.05  # loudness window from the onset
    onsets: OnsetConfig = OnsetConfig(hop_s=1.25e-4)  # onset times on a 0.125 ms grid (the default 1 ms: ±0.5 ms)
    cues: CueConfig = CueConfig()

    def __post_init__(self) -> None:
        if self.match_s <= 0 or self.loudness_s <= 0:
            raise ValueError("event audio config needs match_s > 0 and loudness_s > 0")


@dataclass(frozen=True)
class EventAudio:
    """Per measured event, all ``(E,)``: reference onset ``times`` (s), signed ``onset_errors_ms`` (pred − ref) and
    ``loudness_errors_db`` (pred over ref), absolute ``ild_errors_db`` and ``itd_errors_us``; NaN where undefined.
    ``unheard``: ground-truth events without a reference onset."""

    times: np.ndarray
    onset_errors_ms: np.ndarray
    loudness_errors_db: np.ndarray
    ild_errors_db: np.ndarray
    itd_errors_us: np.ndarray
    unheard: int = 0

    ERRORS = ("onset_errors_ms", "loudness_errors_db", "ild_errors_db", "itd_errors_us")

    def __len__(self) -> int:
        return int(self.times.size)

    @staticmethod
    def merge(parts: Iterable[EventAudio]) -> EventAudio:
        """All events of several clips as one."""
        parts = list(parts)
        if not parts:
            empty = np.zeros(0)
            return EventAudio(empty, empty, empty, empty, empty)
        arrays = [np.concatenate([getattr(p, name) for p in parts]) for name in ("times", *EventAudio.ERRORS)]
        return EventAudio(*arrays, unheard=sum(p.unheard for p in parts))

    def summary(self) -> dict[str, Measure]:
        """``onset_error_ms``, ``loudness_error_db``, ``ild_error_db``, ``itd_error_us``: medians of ``|error|``."""
        out = {}
        for name in self.ERRORS:
            errors = np.abs(getattr(self, name))
            ok = np.isfinite(errors)
            key = name.replace("_errors", "_error")
            out[key] = (
                Measure.of(float(np.median(errors[ok])), float(ok.mean()))
                if ok.any()
                else Measure.undefined("no event with this measure defined")
            )
        return out


def _nearest(times: np.ndarray, t: float, tolerance: float) -> int | None:
    """Index of the entry of ``times`` nearest ``t`` if within ``tolerance``."""
    if times.size == 0:
        return None
    k = int(np.argmin(np.abs(times - t)))
    return k if abs(times[k] - t) <= tolerance else None


def _loudness_change_db(pred: np.ndarray, ref: np.ndarray, sample_rate: int, t: float, length_s: float) -> float:
    lo = max(0, int(round(t * sample_rate)))
    hi = min(ref.shape[1], lo + int(round(length_s * sample_rate)))
    e_pred, e_ref = float((pred[:, lo:hi] ** 2).sum()), float((ref[:, lo:hi] ** 2).sum())
    return 10.0 * np.log10(e_pred / e_ref) if e_pred > 0 and e_ref > 0 else np.nan


def compare_event_audio(
    pred: np.ndarray,
    ref: np.ndarray,
    sample_rate: int,
    event_times: np.ndarray,
    config: EventAudioConfig | None = None,
) -> EventAudio:
    """Per-event onset, loudness, ILD and ITD errors of ``pred`` against ``ref`` (both ``(2, N)`` [left, right]) at
    the ground-truth ``event_times`` (s) (see the module docstring)."""
    cfg = config or EventAudioConfig()
    pred, ref = np.asarray(pred, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if pred.shape != ref.shape or pred.ndim != 2 or pred.shape[0] != 2:
        raise ValueError(f"per-event audio needs two (2, N) signals of one shape, got {pred.shape} and {ref.shape}")
    ref_onsets = audio_onsets(ref, sample_rate, cfg.onsets).times
    pred_onsets = audio_onsets(pred, sample_rate, cfg.onsets).times
    heard = [_nearest(ref_onsets, float(t), cfg.match_s) for t in np.asarray(event_times, dtype=np.float64)]
    times = ref_onsets[sorted({k for k in heard if k is not None})]  # (E,) one per heard sound
    onset = np.full(times.size, np.nan)
    loudness = np.full(times.size, np.nan)
    for i, t in enumerate(times):
        k = _nearest(pred_onsets, float(t), cfg.match_s)
        if k is not None:
            onset[i] = 1e3 * (pred_onsets[k] - t)
        loudness[i] = _loudness_change_db(pred, ref, sample_rate, float(t), cfg.loudness_s)
    if times.size:
        cues = compare_event_cues(pred, ref, sample_rate, times, cfg.cues)
        ild, itd = cues["ild_errors_db"], cues["itd_errors_us"]
    else:
        ild = itd = np.zeros(0)
    return EventAudio(times, onset, loudness, ild, itd, unheard=sum(k is None for k in heard))
