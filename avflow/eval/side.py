"""Per-event binaural cues and sides, measured where each sound starts (its audio onset), not at the visual event.

Signs (docs/conventions.md): ``ILD = 20·log10(rms_L / rms_R)`` dB, positive = left louder; ``ITD > 0`` when the left ear
leads (s); ``azimuth = (x / W − 0.5)·90°``, negative = left. Audio is ``(2, N)`` float, channels [left, right].

Window: ``[t − pre_s, t + window_s)`` around an onset at ``t`` (a few ms before it, so the leading ear's onset is in).
ILD is measured on the energy the event adds: per ear, the energy in the window minus the energy of the same length
just before it (a sound still ringing from before is not this event's side), kept at least 10 % of the window's.
ITD is the lag ``τ`` (``|τ| ≤ max_itd_s``) maximising the GCC-PHAT ``r(τ) = IFFT[X/|X|]``, ``X = conj(L)·R`` of the
two windowed ears (1 ms cosine tapers), over the frequencies where ``|X|`` is within ``band_db`` of its peak (PHAT
lets every frequency of the sound count by its phase, so a ringing mode cannot make the correlation periodic, and
the band limit keeps empty frequencies' random phases out): ``X/|X|`` is zero-padded ``upsample`` times (band-limited
interpolation) and the peak of the interpolated ``r`` refined by a parabola, so the estimate is sub-sample. ``r``
peaks at ``τ > 0`` when the right ear lags, i.e. the left leads. Its confidence is the peak height in [0, 1] (1: one
delay explains every frequency of the band). An event's audio side is that of the cue with more evidence
(:func:`event_cues`); it has none when the two cues point to opposite sides (unless one is much the stronger) or
the window adds no energy.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from avflow.eval import spatial
from avflow.eval.events import VisualEvents
from avflow.eval.measure import Measure
from avflow.eval.offset import SyncResult
from avflow.eval.onsets import AudioOnsets
from avflow.eval.physics import Tracks

EPS = 1e-20
CHUNK = 1 << 16  # samples squared at a time for the clip's loudest sample (the result does not depend on it)
TORN = "the ILD and the ITD give opposite sides"
NO_ENERGY = "no energy added at this time (no sound starts here)"


@dataclass(frozen=True, kw_only=True)
class CueConfig:
    window_s: float = 0.015  # measured over [t − pre_s, t + window_s)
    pre_s: float = 0.003
    max_itd_s: float = 0.001  # ITD search range (a head is about 0.7 ms wide)
    upsample: int = 16  # band-limited interpolation factor of the cross-correlation
    band_db: float = 50.0  # GCC-PHAT uses the frequencies within this of the strongest cross-spectrum bin
    increment: bool = True  # ILD of the energy the event adds (False: of the window as it is)
    min_ild_db: float = 0.25  # |ILD| from which the ILD gives a side
    ild_scale_db: float = 2.0  # |ILD| that is full evidence of a side
    min_itd_s: float = 40e-6  # |ITD| from which the ITD gives a side
    itd_scale_s: float = 100e-6  # |ITD| that is full evidence (times the ITD's confidence)
    min_azimuth_deg: float = 5.0  # |azimuth| from which a visual event has a side
    silence_db: float = -60.0  # a window this far below the clip's loudest window is silent
    dominance: float = 2.0  # cues on opposite sides: the stronger decides when its evidence is this many times more
    margin_band_db: float = 20.0  # the ITD's side margin uses the frequencies within this of the strongest
    rise_db: float = 6.0  # an event with no onset paired: its sound starts where the level rises this much
    rise_frame_s: float = 0.005  # frames (hop half of it) in which that rise is looked for
    min_evidence: float = 0.0  # the deciding cue's evidence must reach this (at onsets: any above its threshold)
    rise_evidence: float = 0.5  # min_evidence at an energy rise (a soft start is a weaker anchor)
    long_window_s: float = 0.1  # no side over window_s: read again over up to this, until the next onset (0: never)
    late_attack_s: float = 0.2  # no onset or rise paired: a novel attack up to this after t_v + offset (0: never)
    late_novelty: float = 0.5  # ... when that attack's sound starts from quiet at least this much

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.pre_s < 0 or self.max_itd_s <= 0 or self.upsample < 1:
            raise ValueError("cue config needs window_s > 0, pre_s >= 0, max_itd_s > 0, upsample >= 1")
        if self.dominance < 1 or self.rise_db <= 0 or self.rise_frame_s <= 0:
            raise ValueError("cue config needs dominance >= 1, rise_db > 0, rise_frame_s > 0")
        if not (0 <= self.min_evidence <= 1 and 0 <= self.rise_evidence <= 1):
            raise ValueError("cue config needs min_evidence and rise_evidence in [0, 1]")
        if self.long_window_s < 0 or self.late_attack_s < 0 or not 0 <= self.late_novelty <= 1:
            raise ValueError("cue config needs long_window_s >= 0, late_attack_s >= 0 and 0 <= late_novelty <= 1")


@dataclass(frozen=True)
class EventCue:
    """Binaural cues of one sound event at audio time ``time`` (s)."""

    time: float
    ild_db: Measure
    itd_us: Measure
    side: str | None = None  # "left"/"right" from the stronger of the two cues, None when undecided (`reason`)
    reason: str = ""  # why `side` is None
    disagree: bool = False  # the ILD and the ITD point to opposite sides (torn, or the side is the much stronger's)


def _stereo(audio: np.ndarray) -> np.ndarray:
    """``(2, N)`` audio; float audio stays in its dtype and the cues convert the samples they read to float64 (the
    values of a float64 copy of the whole track, without it), other audio is converted here."""
    a = np.asarray(audio)
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
    if a.ndim != 2 or a.shape[0] != 2:
        raise ValueError(f"binaural cues need (2, N) audio, got shape {a.shape}")
    return a


def _f64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _peak(a: np.ndarray) -> float:
    """The largest squared sample of ``a`` ``(2, N)`` as float64 (0 when empty), a chunk of samples at a time."""
    if not a.size:
        return 0.0
    return float(np.max([np.max(_f64(a[:, s : s + CHUNK]) ** 2) for s in range(0, a.shape[1], CHUNK)]))


def _cue_span(a: np.ndarray, sample_rate: int, time: float, cfg: CueConfig, peak: float) -> tuple[int, int] | str:
    """The cue window ``[lo, hi)`` (samples) of a sound starting at ``time`` in ``a`` ``(2, N)``, or why no cue is
    read there: the window leaves the clip, or it is silent, its energy ``Σ_{ears, lo ≤ n < hi} a²`` at most
    ``(hi − lo)·peak·10^(silence_db/10)`` (``peak`` the clip's largest ``a²``)."""
    lo = int(round((time - cfg.pre_s) * sample_rate))
    hi = lo + int(round((cfg.pre_s + cfg.window_s) * sample_rate))
    if lo < 0 or hi > a.shape[1] or hi - lo < 8:
        return "the cue window lies outside the clip"
    if float((_f64(a[:, lo:hi]) ** 2).sum()) <= max(peak * (hi - lo) * 10 ** (cfg.silence_db / 10), EPS):
        return "silent at this time"
    return lo, hi


def _ild(a: np.ndarray, lo: int, hi: int, cfg: CueConfig) -> Measure:
    """ILD (dB) over the cue window ``[lo, hi)`` of ``a`` ``(2, N)`` (see the module docstring)."""
    energy = (_f64(a[:, lo:hi]) ** 2).sum(axis=1)  # (2,)
    if cfg.increment and lo - (hi - lo) >= 0:
        before = (_f64(a[:, lo - (hi - lo) : lo]) ** 2).sum(axis=1)
        energy = np.maximum(energy - before, 0.1 * energy)
    return Measure.of(10.0 * np.log10((energy[0] + EPS) / (energy[1] + EPS)))


def _itd(a: np.ndarray, lo: int, hi: int, sample_rate: int, cfg: CueConfig) -> tuple[Measure, float]:
    """ITD (µs) over the cue window ``[lo, hi)`` of ``a`` ``(2, N)``, both ears tapered (see :func:`itd_of`), and its
    side margin (:func:`itd_side_margin`)."""
    w = _taper(hi - lo, sample_rate)
    left, right = _f64(a[0, lo:hi]) * w, _f64(a[1, lo:hi]) * w
    itd = itd_of(left, right, sample_rate, cfg.max_itd_s, cfg.upsample, cfg.band_db)
    margin = itd_side_margin(left, right, sample_rate, cfg.min_itd_s, cfg.max_itd_s, cfg.upsample, cfg.margin_band_db)
    return itd, margin


def ild_at(audio: np.ndarray, sample_rate: int, time: float, config: CueConfig | None = None) -> Measure:
    """ILD (dB) of the sound starting at ``time`` (see the module docstring); undefined outside the clip or silent."""
    cfg = config or CueConfig()
    a = _stereo(audio)
    span = _cue_span(a, sample_rate, time, cfg, _peak(a))
    return Measure.undefined(span) if isinstance(span, str) else _ild(a, *span, cfg)


def _taper(n: int, sample_rate: int) -> np.ndarray:
    """1 ms raised-cosine fade-in and fade-out."""
    k = min(n // 2, max(1, int(0.001 * sample_rate)))
    w = np.ones(n)
    ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(k) + 0.5) / k)
    w[:k], w[n - k :] = ramp, ramp[::-1]
    return w


def _gcc(
    left: np.ndarray, right: np.ndarray, sample_rate: int, max_itd_s: float, upsample: int, band_db: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """The band-limited GCC-PHAT ``r`` of two equally long segments at lags ``k / (upsample·sr)``, ``|lag| ≤
    max_itd_s``: ``(lags k, r)``, or None when either is silent (see the module docstring)."""
    n = left.size
    if float(np.sqrt((left @ left) * (right @ right))) <= EPS:
        return None
    nfft = int(2 ** np.ceil(np.log2(2 * n)))
    cross = np.conj(np.fft.rfft(left, nfft)) * np.fft.rfft(right, nfft)  # r(τ) = Σ L(t)·R(t + τ)
    mag = np.abs(cross)
    band = mag >= mag.max() * 10 ** (-band_db / 10)  # frequencies the sound occupies (the rest is noise)
    cross = np.where(band, cross / np.maximum(mag, 1e-30), 0.0) * (cross.size / band.sum())  # PHAT in band
    big = nfft * upsample
    r = np.fft.irfft(cross, big) * upsample  # (big,) r at lags k / (upsample·sr)
    m = int(np.ceil(max_itd_s * sample_rate * upsample))
    lags = np.arange(-m, m + 1)
    return lags, r[lags % big]


def _peak_lag(lags: np.ndarray, vals: np.ndarray) -> tuple[float, int]:
    """The lag (in grid steps, refined by a parabola through the peak and its neighbours) of the largest ``vals``,
    and the peak's index."""
    j = int(np.argmax(vals))
    frac = 0.0
    if 0 < j < vals.size - 1:
        den = vals[j - 1] - 2 * vals[j] + vals[j + 1]
        frac = float(np.clip(0.5 * (vals[j - 1] - vals[j + 1]) / den, -0.5, 0.5)) if den < 0 else 0.0
    return float(lags[j] + frac), j


def itd_of(
    left: np.ndarray,
    right: np.ndarray,
    sample_rate: int,
    max_itd_s: float = 1e-3,
    upsample: int = 16,
    band_db: float = 50.0,
) -> Measure:
    """Sub-sample ITD (µs, > 0 when ``left`` leads) of two equally long segments (see the module docstring)."""
    curve = _gcc(left, right, sample_rate, max_itd_s, upsample, band_db)
    if curve is None:
        return Measure.undefined("silent at this time")
    lag, j = _peak_lag(*curve)
    return Measure.of(1e6 * lag / (sample_rate * upsample), float(np.clip(curve[1][j], 0.0, 1.0)))


def itd_side_margin(
    left: np.ndarray,
    right: np.ndarray,
    sample_rate: int,
    min_itd_s: float = 40e-6,
    max_itd_s: float = 1e-3,
    upsample: int = 16,
    band_db: float = 20.0,
) -> float:
    """How much better the ITD's side explains the two segments than the other side: ``r(τ*) − max r(τ)`` over the
    lags ``τ`` of the opposite sign with ``|τ| ≥ min_itd_s``, clipped to [0, 1] (0 when silent). A tone repeats its
    correlation peak every period, so both sides fit about equally well and its ITD gives no side; a click's
    correlation has one peak. The band is narrower than the ITD's own (20 dB, not 50): a short window's leakage
    around a tone would otherwise count as broadband sound (a steady 1.5 kHz tone: margin 0.63 at 50 dB, 0.03 at
    20 dB; a click: 0.93 and 0.75)."""
    curve = _gcc(left, right, sample_rate, max_itd_s, upsample, band_db)
    if curve is None:
        return 0.0
    lags, vals = curve
    j = int(np.argmax(vals))
    edge = min_itd_s * sample_rate * upsample
    other = vals[(lags * np.sign(lags[j]) <= -edge)] if lags[j] != 0 else vals[np.abs(lags) >= edge]
    return float(np.clip(vals[j] - (other.max() if other.size else 0.0), 0.0, 1.0))


def itd_at(audio: np.ndarray, sample_rate: int, time: float, config: CueConfig | None = None) -> Measure:
    """ITD (µs) of the sound starting at ``time`` (see the module docstring); undefined outside the clip or silent."""
    cfg = config or CueConfig()
    a = _stereo(audio)
    span = _cue_span(a, sample_rate, time, cfg, _peak(a))
    return Measure.undefined(span) if isinstance(span, str) else _itd(a, *span, sample_rate, cfg)[0]


def _evidence(value: Measure, threshold: float, scale: float) -> float:
    """Signed strength in [-1, 1] of a cue for "left" (0 below ``threshold``), scaled by its confidence."""
    if not value.defined or abs(value.value) < threshold:
        return 0.0
    return float(np.sign(value.value) * min(1.0, abs(value.value) / scale) * value.confidence)


def _adds_energy(a: np.ndarray, lo: int, hi: int) -> bool:
    """Whether the window ``[lo, hi)`` holds more energy (both ears) than the stretch of its length before it."""
    before = _f64(a[:, max(0, lo - (hi - lo)) : lo])
    return lo - (hi - lo) < 0 or float((_f64(a[:, lo:hi]) ** 2).sum()) > float((before**2).sum())


def event_cues(
    audio: np.ndarray,
    sample_rate: int,
    times: np.ndarray,
    config: CueConfig | None = None,
    *,
    ends: np.ndarray | None = None,
) -> list[EventCue]:
    """ILD and ITD of the sounds starting at ``times`` (s), and the side they give: the cue with the larger evidence
    ``|ILD|/ild_scale_db`` (1 dB from ``min_ild_db``) or ``margin·|ITD|/itd_scale_s`` (from ``min_itd_s``; ``margin``
    from :func:`itd_side_margin`, so a tone's ITD, which fits both sides, weighs little), each capped at 1, decides.
    When the two cues give opposite sides the stronger decides only if its evidence is ``dominance`` times the
    other's. No side (with its `reason`) when they stay torn, when the deciding evidence is below ``min_evidence``,
    or when the window adds no energy over the stretch before it (no sound starts there: the cues would be of what
    rings on).

    With ``ends`` (s, per time: where the next sound starts, e.g. the next onset) an event is read again over
    ``[t − pre_s, min(t + long_window_s, end − pre_s))`` when that is longer, and up to the next onset the window
    holds no other sound's start:
    - when the short window gives no side for want of evidence, any side the longer window gives is taken: a soft
      sound (a breath before a word, a slow attack) shows its side only as it grows;
    - when its ILD and ITD point to opposite sides (torn, or one much the stronger), the longer window's side is
      taken only where both its cues give it (:func:`_both_give`): at a voice's faint start the room noise can tip a
      0.3 dB ILD either way while the ITD, weakened by the same noise, keeps the other side; the sound's body
      settles it. A cue alone does not (a voice's ITD can alias to the other side by one period of a strong
      harmonic), and two sounds at once from both sides stay torn (or with the stronger's side, as before);
    - when its side rests on one cue alone (the other under its threshold), the same: the longer window's side is
      taken only where both its cues give it. At a voice's faint start the ILD can stay under 0.25 dB while a weak
      GCC peak (0.1-0.2) puts the ITD 450 µs to the wrong side; over the sound's body both cues agree.
    Codec comparisons (:func:`compare_event_cues`) read the short window only."""
    cfg = config or CueConfig()
    if ends is not None and cfg.long_window_s > cfg.window_s:
        short = event_cues(audio, sample_rate, times, replace(cfg, long_window_s=0.0))
        out = []
        for cue, end in zip(short, np.asarray(ends, dtype=np.float64)):
            window = min(cfg.long_window_s, float(end) - cfg.pre_s - cue.time)
            doubt = cue.disagree or _one_cue(cue, cfg)  # the side rests on one cue: taken back only where both agree
            if window > cfg.window_s and (doubt or (cue.side is None and cue.reason != TORN)):
                longer = event_cues(audio, sample_rate, np.array([cue.time]), replace(cfg, window_s=window))[0]
                if longer.side is not None and (not doubt or _both_give(longer, cfg)):
                    cue = longer
            out.append(cue)
        return out
    times = np.asarray(times, dtype=np.float64)
    if times.size == 0:
        return []
    a = _stereo(audio)
    peak = _peak(a)
    out = []
    for t in times:
        span = _cue_span(a, sample_rate, float(t), cfg, peak)
        margin = 0.0
        if isinstance(span, str):
            ild = itd = Measure.undefined(span)
        elif not _adds_energy(a, *span):
            ild = itd = Measure.undefined(NO_ENERGY)
        else:
            ild, (itd, margin) = _ild(a, *span, cfg), _itd(a, *span, sample_rate, cfg)
        e_ild = _evidence(ild, cfg.min_ild_db, cfg.ild_scale_db)
        e_itd = _evidence(Measure.of(itd.value, margin) if itd.defined else itd, 1e6 * cfg.min_itd_s,
                          1e6 * cfg.itd_scale_s)  # fmt: skip
        strong, weak = sorted((e_ild, e_itd), key=abs, reverse=True)
        disagree = strong * weak < 0
        if disagree and abs(strong) < cfg.dominance * abs(weak):
            out.append(EventCue(float(t), ild, itd, None, TORN, disagree=True))
        elif strong == 0:
            why = ild.reason if not ild.defined else "neither cue reaches its threshold"
            out.append(EventCue(float(t), ild, itd, None, why))
        elif abs(strong) < cfg.min_evidence:
            why = f"the cues are too weak here (evidence {abs(strong):.2f} < {cfg.min_evidence:g})"
            out.append(EventCue(float(t), ild, itd, None, why))
        else:
            out.append(EventCue(float(t), ild, itd, "left" if strong > 0 else "right", disagree=disagree))
    return out


def _reaches(value: Measure, threshold: float) -> bool:
    return value.defined and abs(value.value) >= threshold


def _one_cue(cue: EventCue, cfg: CueConfig) -> bool:
    """Whether ``cue`` has a side from one cue alone: the other is under its threshold (or undefined)."""
    ild, itd = _reaches(cue.ild_db, cfg.min_ild_db), _reaches(cue.itd_us, 1e6 * cfg.min_itd_s)
    return cue.side is not None and ild != itd


def _both_give(cue: EventCue, cfg: CueConfig) -> bool:
    """Whether the ILD and the ITD of ``cue`` both reach their thresholds and point to its side."""
    ild, itd = cue.ild_db, cue.itd_us
    if cue.side is None or not (_reaches(ild, cfg.min_ild_db) and _reaches(itd, 1e6 * cfg.min_itd_s)):
        return False
    return (ild.value > 0) == (itd.value > 0) == (cue.side == "left")


def compare_event_cues(
    pred: np.ndarray, ref: np.ndarray, sample_rate: int, times: np.ndarray, config: CueConfig | None = None
) -> dict[str, Measure | np.ndarray]:
    """Per-event cue errors of ``pred`` against ``ref`` at the same onset ``times`` (e.g. the reference's onsets):
    ``ild_error_db`` and ``itd_error_us`` (medians of ``|pred − ref|`` over events where both are defined; confidence
    = that fraction of events) and the per-event arrays ``ild_errors_db``/``itd_errors_us`` (NaN where undefined)."""
    p, r = event_cues(pred, sample_rate, times, config), event_cues(ref, sample_rate, times, config)
    out: dict[str, Measure | np.ndarray] = {}
    for name, get in (("ild_error_db", lambda c: c.ild_db), ("itd_error_us", lambda c: c.itd_us)):
        errs = np.array([abs(get(a).get() - get(b).get()) for a, b in zip(p, r)])
        ok = np.isfinite(errs)
        out[name.replace("_error", "_errors")] = errs
        out[name] = (
            Measure.of(float(np.median(errs[ok])), float(ok.mean()))
            if ok.any()
            else Measure.undefined("no event with the cue defined in both")
        )
    return out


@dataclass(frozen=True)
class EventSide:
    """One matched event: visual time and azimuth (NaN without a side), audio time of its sound (``anchor``:
    ``"onset"`` a paired onset, ``"sound start"`` the start of a paired onset's sound (its attack added no energy
    over its lead-in), ``"energy rise"`` where the level rises near the expected time, ``"late attack"`` the first
    loud attack of a sound that starts under the noise (:func:`_late_attack`), see :func:`event_sides`), its cues,
    and whether the audio side agrees with the visual one (None when either has no side)."""

    visual_time: float
    audio_time: float
    azimuth: float
    visual_side: str | None
    cue: EventCue
    agrees: bool | None
    anchor: str = "onset"


def energy_rise(audio: np.ndarray, sample_rate: int, start: float, stop: float, config: CueConfig | None = None):
    """The centre of the first frame (both ears, frames of ``rise_frame_s``, hop half of it, starting in ``[start,
    stop)``) whose level is ``rise_db`` above the mean level of the ``window_s`` before ``start`` and above the silence
    threshold, or None: where a sound starts softly (a word, a fade) before the onset detector's level step. The
    frame before it (half a frame earlier) stayed below, so the rise lies in the frame's second half: its centre."""
    cfg = config or CueConfig()
    a = _stereo(audio)
    frame = max(2, int(round(cfg.rise_frame_s * sample_rate)))
    hop = max(1, frame // 2)
    lo, hi = int(round(start * sample_rate)), int(round(stop * sample_rate))
    ref_lo = lo - int(round(cfg.window_s * sample_rate))
    if ref_lo < 0 or hi + frame > a.shape[1] or hi <= lo:
        return None
    power = (_f64(a[:, ref_lo : hi + frame]) ** 2).sum(axis=0)  # samples ref_lo .. hi + frame only
    ref = float(power[: lo - ref_lo].mean())
    floor = _peak(a) * 10 ** (cfg.silence_db / 10)
    level = np.lib.stride_tricks.sliding_window_view(power[lo - ref_lo :], frame)[::hop].mean(axis=1)  # (F,)
    rise = np.flatnonzero((level > ref * 10 ** (cfg.rise_db / 10)) & (level > floor))
    return None if rise.size == 0 else (lo + int(rise[0]) * hop + frame // 2) / sample_rate  # the frame's centre


def _visual_side(azimuth: float, cfg: CueConfig) -> str | None:
    if not np.isfinite(azimuth) or abs(azimuth) < cfg.min_azimuth_deg:
        return None
    return "left" if azimuth < 0 else "right"


def _next_start(onsets: AudioOnsets, t: float) -> float:
    """Where the next sound after time ``t`` (s) starts: the first onset start past it, or infinity."""
    later = onsets.starts[onsets.starts > t + 1e-3]
    return float(later.min()) if later.size else float("inf")


def _late_attack(
    onsets: AudioOnsets, expected: np.ndarray, v: int, window_s: float, used: set[int], cfg: CueConfig
) -> int | None:
    """The onset whose sound is event ``v``'s although no onset starts within ``window_s`` of its expected audio time
    ``expected[v]`` (``expected``: every event's visual time + the offset): a word whose first sounds lie under the
    room noise (a breathy "f" up to 100 ms long) is heard from its first loud attack on. It is the first onset after
    ``expected[v] + window_s``, at most ``late_attack_s`` after it, unpaired (not in ``used``), of a sound that starts
    from quiet (novelty at least ``late_novelty``), and nearer event ``v``'s expected time than any other event's.
    None where there is none."""
    if cfg.late_attack_s <= window_s:
        return None
    t = float(expected[v])
    later = np.flatnonzero((onsets.starts > t + window_s) & (onsets.starts <= t + cfg.late_attack_s))
    if later.size == 0 or (onsets.starts[: later[0]] > t - window_s).any():
        return None  # nothing that late, or another sound started since the expected time
    o = int(later[0])
    nearest = int(np.argmin(np.abs(expected - onsets.starts[o])))
    if o in used or onsets.novelty[o] < cfg.late_novelty or nearest != v:
        return None
    return o


def _read_sides(
    audio: np.ndarray,
    sample_rate: int,
    onsets: AudioOnsets,
    events: VisualEvents,
    lag: float,
    pairs: np.ndarray,
    cfg: CueConfig,
    anchor_window_s: float,
) -> dict[int, tuple[float, str, EventCue]]:
    """Per visual event: the audio time, anchor and cues of its sound when the offset is ``lag`` (s) and ``pairs``
    are its (event, onset) pairs (see :func:`event_sides`)."""
    times = {int(v): (float(onsets.times[o]), "onset") for v, o in pairs}
    if anchor_window_s > 0:
        for v in set(range(len(events))) - set(times):
            expected = float(events.times[v]) + lag
            t = energy_rise(audio, sample_rate, expected - anchor_window_s, expected + anchor_window_s, cfg)
            if t is not None:
                times[v] = (t, "energy rise")
        used, expected = {int(o) for _, o in pairs}, events.times + lag
        for v in sorted(set(range(len(events))) - set(times)):
            o = _late_attack(onsets, expected, v, anchor_window_s, used, cfg)
            if o is not None:
                times[v] = (float(onsets.times[o]), "late attack")
                used.add(o)
    cues: dict[int, EventCue] = {}
    # A soft start's window holds little more than the noise before it: there the cues must agree and be clear.
    soft = replace(cfg, dominance=float("inf"), min_evidence=max(cfg.min_evidence, cfg.rise_evidence))
    for anchor, anchor_cfg in (("onset", cfg), ("energy rise", soft), ("late attack", soft)):
        found = sorted(v for v in times if times[v][1] == anchor)
        at = np.array([times[v][0] for v in found])
        ends = np.array([_next_start(onsets, t) for t in at])
        cues |= dict(zip(found, event_cues(audio, sample_rate, at, anchor_cfg, ends=ends)))
    # An attack heard over its own lead-in (the second syllable of a word) may add no energy over the stretch before
    # it: such a sound is read again from its start (over the long window, up to the next sound's start).
    for v, o in pairs:
        v, start = int(v), float(onsets.starts[o])
        if cues[v].side is None and cues[v].reason == NO_ENERGY and start < times[v][0] - 1e-3:
            end = np.array([_next_start(onsets, times[v][0])])
            again = event_cues(audio, sample_rate, np.array([start]), cfg, ends=end)[0]
            if again.side is not None:
                times[v], cues[v] = (start, "sound start"), again
    return {v: (*times[v], cues[v]) for v in times}


def event_sides(
    audio: np.ndarray,
    sample_rate: int,
    onsets: AudioOnsets,
    events: VisualEvents,
    sync: SyncResult,
    config: CueConfig | None = None,
    *,
    anchor_window_s: float = 0.0,
) -> list[EventSide]:
    """Sides of the pairs matched by :func:`avflow.eval.offset.match_events`, measured at their audio onsets, sorted
    by visual time. With ``anchor_window_s > 0`` (e.g. :func:`avflow.eval.offset.pairing_tolerance`) an event left
    without an onset is read at the :func:`energy_rise` within ``±anchor_window_s`` of ``t_v + offset``, if any, else
    at a late attack (:func:`_late_attack`: up to ``late_attack_s`` after it); there its ILD and ITD must not
    disagree and the deciding one must reach ``rise_evidence`` (a soft start's window holds little more than the
    noise before it).

    When the offset is undefined as ambiguous, the sides are read at each of its ``candidates`` (lags that fit about
    equally well): an event has a side only when every candidate pairs it with a sound and all those sounds give the
    same side (reported at the best candidate's sound): it is the side whatever the offset is. Elsewhere the event
    has neither a side nor cues (which sound is its own is unknown), with the reason."""
    cfg = config or CueConfig()
    candidates = sync.candidates or ((sync.offset_ms.value, sync.pairs),)
    if any(pairs.size == 0 for _, pairs in candidates):
        return []
    readings = [
        _read_sides(audio, sample_rate, onsets, events, lag_ms / 1000.0, pairs, cfg, anchor_window_s)
        for lag_ms, pairs in candidates
    ]
    out = []
    for v in sorted(set().union(*readings)):
        seen_by = [r[v] for r in readings if v in r]
        t, anchor, cue = seen_by[0]
        why = ""
        if len(seen_by) < len(readings):
            why = "the offset is ambiguous and not every lag it may be pairs a sound with this event"
        elif len({c.side for _, _, c in seen_by}) > 1:
            why = "the offset is ambiguous and the lags it may be give different sides"
        if why:  # which sound is this event's is unknown: no cue of it either (follows_events skips it)
            cue = EventCue(cue.time, Measure.undefined(why), Measure.undefined(why), None, why)
        az = float(events.azimuth[v])
        seen, heard = _visual_side(az, cfg), cue.side
        agrees = None if seen is None or heard is None else seen == heard
        out.append(EventSide(float(events.times[v]), t, az, seen, cue, agrees, anchor))
    return out


def side_agreement(sides: list[EventSide]) -> Measure:
    """Fraction of sided events whose audio side (at the onset) is the visual side; confidence = the fraction of
    sided events whose audio side could be decided."""
    sided = [s for s in sides if s.visual_side is not None]
    if not sided:
        return Measure.undefined("no matched event on a side (none off-centre, or none matched to a sound)")
    decided = [s for s in sided if s.agrees is not None]
    if not decided:
        return Measure.undefined("no matched event has a clear ILD or ITD")
    return Measure.of(float(np.mean([s.agrees for s in decided])), len(decided) / len(sided))


def follows_events(sides: list[EventSide], min_events: int = 3, min_spread_deg: float = 10.0) -> Measure:
    """Pearson correlation over matched events between the ILD at each audio onset and the leftness ``−azimuth``
    of its visual event: +1 the sound is louder on the object's side, −1 the channels are swapped. Undefined with
    fewer than ``min_events`` events or azimuths spread over less than ``min_spread_deg``."""
    rows = [(s.cue.ild_db.value, -s.azimuth) for s in sides if s.cue.ild_db.defined and np.isfinite(s.azimuth)]
    if len(rows) < min_events:
        return Measure.undefined(f"fewer than {min_events} matched events with a side and a defined ILD")
    ild, left = np.array(rows).T
    if np.ptp(left) < min_spread_deg or np.std(ild) < 1e-9:
        return Measure.undefined(f"the events' azimuths span less than {min_spread_deg:g}° (or one ILD for all)")
    return Measure.of(float(np.corrcoef(ild, left)[0, 1]), min(1.0, len(rows) / 10))


def follows_object(audio: np.ndarray, sample_rate: int, tracks: Tracks, fps: float) -> Measure:
    """:func:`avflow.eval.spatial.follows_object` (per-frame ILD against the leftness of the one tracked object) with
    its reasons for having no value: mono audio, no object or several objects tracked, too few frames with sound."""
    a = np.asarray(audio)
    if a.ndim != 2 or a.shape[0] != 2:
        return Measure.undefined("the audio is not binaural (2 channels)")
    K = tracks.centers.shape[1]
    if K == 0:
        return Measure.undefined("no object tracked in the video")
    if K > 1:
        return Measure.undefined(f"{K} objects tracked: the per-event score (follows_events) applies")
    value = spatial.follows_object(a, sample_rate, tracks.centers[:, 0, 0], tracks.frame_size[1], fps)
    if not np.isfinite(value):
        return Measure.undefined("fewer than 3 frames with the object visible and sound")
    return Measure.of(value, float(np.isfinite(tracks.centers[:, 0, 0]).mean()))
