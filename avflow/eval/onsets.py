"""Audio onsets for sync and side measures: where a sound starts, and whether it starts an event.

Detection works per frequency band, so that an impact still shows while another sound rings in other bands: the
power of each of ``n_bands`` log-spaced bands (60 Hz to Nyquist, Hann STFT of ``2·window_s`` every ``band_hop_s``,
channels summed so opposite-phase ears cannot cancel; audio faster than ``band_rate`` is first decimated by an integer
factor) is floored at ``floor_db`` below the loudest band value, and
``odf(t) = mean_b max(0, L_b[t, ·) − L_b[·, t))``, the mean rise in dB from the frame that ends at ``t`` to the frame
that starts there. Onsets are the peaks of ``odf`` of at least ``min_rise_db``, no closer than ``min_gap_s``, whose
sound gets within ``min_level_db`` of the loudest window.

A Hann frame sees an impulse best at its centre, so the band detector places clicks up to half a frame early; each
onset is therefore timed on the broadband level step ``rise(t) = L[t, t + w) − L[t − w, t)`` (rectangular windows
of ``window_s``, no such bias): its largest value from ``window_s/2`` before to ``2·window_s`` after the detection,
refined by a parabola.

Each onset also gets a ``novelty`` in [0, 1]: how far the level of its sound (the loudest window in ``peak_s``
after it, up to where the sound ends) rises above the loudest window in the ``context_s`` before it, over
``novelty_range_db``. The first onset of a sound that starts from quiet scores near 1; the second click of a shutter
or the next note of a chime, heard while the first is still ringing, scores near 0. A sound ends where its level
stays at or under that context for ``quiet_s``: a flicker of the room noise 0.28 s before a loud sound is no start
of it, and a word's dip between a faint consonant and its vowel is no end. Matching visual events to onsets weighs
by it, so a sound with several onsets is anchored on its start (see :mod:`avflow.eval.offset`).

Each onset of novelty at least ``lead_in_novelty`` also gets a ``start``: where its sound leaves the noise floor. A
recording often begins with a faint lead-in (a breath before a word, the first click of a shutter, 10–30 dB under the
attack) that the level step passes over, up to 140 ms before the attack. With ``x[n] = Σ_c a_c[n]²``, the noise
power ``P`` (the 10th percentile of ``window_s`` means over the ``context_s`` before the search and the search
itself, at least the floor: a lead-in can be as faint as 2–3 dB over a steady room noise) and
``k = 10^(lead_in_margin_db/10)``, the start is the CUSUM change point ``argmin_s Σ_{n<s} (x[n] − k·P)`` over the
``lead_in_s`` before the attack (not before the previous onset): the sum falls while the level is under ``k·P`` and
climbs from where the sound begins. It counts only when a window's worth of quiet lies before it in the search;
else (and for an attack straight out of silence) the start is the attack time. A level that decays towards the onset
(the tail of an earlier sound) moves nothing. AAC's pre-echo (quantisation noise spread over the block before an
attack, a few dB over a quiet floor) reads as a lead-in of 5–20 ms. The offset is measured on the starts; cues (ILD,
ITD) are read at the attack, where the sound is loud.

A room noise flickers: a few bands rise by the detector's 3 dB for a moment while the broadband level stays within
1–3 dB of the noise. Such an onset, tens of ms before a sound, takes that sound's level and novelty (both are read
after it), so it can stand in for the sound's start in matching and in reading its side (an ILD of the noise). So an
onset is kept only if its own sound, the ``window_s`` windows from it to the next onset's start (at most
``peak_s``), rises at least ``min_sound_db`` over the clip's noise, the 10th percentile of all its windows. The
onsets kept keep their starts: a start is not looked for across a dropped flicker, which the lead-in search would
take for the sound's start where it is a few dB over the noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.fft import rfft
from scipy.ndimage import maximum_filter1d
from scipy.signal import resample_poly

from avflow.eval.inputs import check_audio

CHUNK = 1 << 16  # samples (and band-detector frames) handled at a time; the results do not depend on it


@dataclass(frozen=True, kw_only=True)
class OnsetConfig:
    hop_s: float = 0.001  # time step of the broadband level step (onset times)
    band_hop_s: float = 0.002  # time step of the band detector
    window_s: float = 0.008  # broadband level windows; the band detector's frames are twice as long
    n_bands: int = 12
    band_rate: int = 16000  # the band detector decimates faster audio by an integer factor to at least this rate
    floor_db: float = -55.0  # levels are floored this far below the loudest (ignores the noise floor)
    min_rise_db: float = 3.0  # mean band rise at an onset
    min_level_db: float = -45.0  # the loudest window after an onset is within this of the clip's loudest
    min_gap_s: float = 0.015  # of two onsets closer than this, the one with the larger rise stays
    peak_s: float = 0.3  # the onset's level is the loudest window starting within this after it
    context_s: float = 0.3  # novelty compares with the loudest window ending in this span before the onset
    novelty_range_db: float = 30.0  # rise above the context that counts as fully new
    quiet_s: float = 0.05  # a sound ends where its level stays at or under its context this long (novelty)
    lead_in_s: float = 0.2  # a sound's start is looked for this far before its attack (0: starts are the attacks)
    lead_in_margin_db: float = 3.0  # a lead-in is at least this far above the noise
    lead_in_novelty: float = 0.1  # only onsets this novel (a sound from quiet) look for a lead-in
    min_sound_db: float = 3.5  # an onset's own sound rises this far over the clip's noise, else it is a flicker of it

    def __post_init__(self) -> None:
        if not 0 < self.hop_s <= self.window_s <= self.context_s or not 0 < self.band_hop_s <= self.window_s:
            raise ValueError("onset config needs 0 < hop_s, band_hop_s <= window_s <= context_s")
        if self.n_bands < 1 or self.quiet_s <= 0:
            raise ValueError("onset config needs n_bands >= 1 and quiet_s > 0")
        if self.lead_in_s < 0 or self.lead_in_margin_db <= 0 or not 0 <= self.lead_in_novelty <= 1:
            raise ValueError("onset config needs lead_in_s >= 0, lead_in_margin_db > 0 and 0 <= lead_in_novelty <= 1")
        if self.min_sound_db < 0:
            raise ValueError("onset config needs min_sound_db >= 0")


@dataclass(frozen=True)
class AudioOnsets:
    """Onsets of one clip, all ``(O,)``; ``curve_times``/``curve_rise`` is the band detector's ``odf`` (dB) per hop,
    kept for timelines."""

    times: np.ndarray  # s, the attack: on the broadband level step, sub-hop
    rise_db: np.ndarray  # odf at the detection
    level_db: np.ndarray  # loudest window after the onset relative to the clip's loudest (<= 0)
    novelty: np.ndarray  # [0, 1], 1 = the sound starts from quiet
    curve_times: np.ndarray
    curve_rise: np.ndarray
    starts: np.ndarray | None = None  # s, where each onset's sound leaves the noise floor (<= times; None: the times)

    def __post_init__(self) -> None:
        if self.starts is None:
            object.__setattr__(self, "starts", self.times)

    def __len__(self) -> int:
        return int(self.times.size)


def _running_max(x: np.ndarray, width: int) -> np.ndarray:
    """``out[k] = max(x[k : k + width])`` (shorter at the end)."""
    if width <= 1 or x.size == 0:
        return x.copy()
    padded = np.concatenate([x, np.full(width - 1, -np.inf)])
    return maximum_filter1d(padded, width, origin=-(width // 2), mode="nearest")[: x.size]


def _peaks(curve: np.ndarray, threshold: float, gap: int) -> np.ndarray:
    """Indices of maxima of ``curve`` over ``±gap`` that reach ``threshold``; of a flat top, the first."""
    local = _running_max(np.concatenate([np.full(gap, -np.inf), curve]), 2 * gap + 1)[: curve.size]
    keep: list[int] = []
    for k in np.flatnonzero((curve >= local) & (curve >= threshold)):
        if not keep or k - keep[-1] > gap:
            keep.append(int(k))
    return np.array(keep, dtype=int)


def _decimate(a: np.ndarray, q: int) -> np.ndarray:
    """``resample_poly(a.astype(float64), 1, q, axis=-1).astype(float32)`` of ``(C, N)`` audio bit for bit, a chunk at
    a time: each chunk starts at a multiple of ``q`` and is read with a margin wider than the filter (10·q taps each
    side), so every output sample sums the same taps of the same samples in the same order as over the whole track
    (zero taps beyond the margin add nothing)."""
    n = a.shape[1]
    out = np.empty((a.shape[0], -(-n // q)), dtype=np.float32)
    step, margin = q * max(1, CHUNK // q), q * (10 + 64)
    for s in range(0, n, step):
        lo, hi = max(0, s - margin), min(n, s + step + margin)
        y = resample_poly(np.asarray(a[:, lo:hi], dtype=np.float64), 1, q, axis=-1)
        first, count = s // q, -(-min(step, n - s) // q)
        out[:, first : first + count] = y[:, (s - lo) // q : (s - lo) // q + count]
    return out


def band_rise(audio: np.ndarray, sample_rate: int, config: OnsetConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The band detector ``odf`` (dB) and its times (s, the split between the two frames): ``(odf (K,), t (K,))``.
    The decimation and the STFT go a chunk at a time (the whole track's values, bit for bit)."""
    cfg = config or OnsetConfig()
    a = np.atleast_2d(np.asarray(audio))  # (C, N), converted to float64 a chunk at a time
    q = max(1, int(sample_rate // cfg.band_rate))
    if q > 1:
        a, sample_rate = _decimate(a, q), sample_rate / q
    else:
        a = np.concatenate([np.asarray(a[:, s : s + CHUNK], dtype=np.float64).astype(np.float32)
                            for s in range(0, a.shape[1], CHUNK)], axis=1)  # fmt: skip
    hop = max(1, round(cfg.band_hop_s * sample_rate))
    n = max(2, round(cfg.window_s * sample_rate)) * 2
    if a.shape[1] < 2 * n + hop:
        return np.zeros(0), np.zeros(0)
    frames = sliding_window_view(a, n, axis=-1)[:, ::hop]  # (C, F, n)
    window = np.hanning(n + 1)[:-1].astype(np.float32)
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    edges = np.geomspace(60.0, sample_rate / 2, cfg.n_bands + 1)
    starts = np.searchsorted(freqs, edges[:-1])
    step = max(1, CHUNK // n)
    parts = []
    for k in range(0, frames.shape[1], step):
        spec = rfft(frames[:, k : k + step] * window, axis=-1)  # (C, f, n/2 + 1)
        power = (spec.real**2 + spec.imag**2).sum(axis=0)  # (f, n/2 + 1)
        parts.append(np.add.reduceat(power, starts, axis=1)[:, : cfg.n_bands])  # (f, B)
    band = np.concatenate(parts)  # (F, B)
    level = 10 * np.log10(band + band.max() * 10 ** (cfg.floor_db / 10) + 1e-30)
    lag = n // hop  # frame k starts at t = k·hop; frame k − lag ends there
    odf = np.maximum(level[lag:] - level[:-lag], 0.0).mean(axis=1)  # (F - lag,)
    return odf, (np.arange(lag, level.shape[0]) * hop) / sample_rate


def _sound_peaks(level: np.ndarray, idx: np.ndarray, context: np.ndarray, span: int, quiet: int) -> np.ndarray:
    """Per onset at hop ``idx[i]``, the loudest ``level`` (dB per window, on the hop grid) of its sound: from the onset
    over at most ``span`` hops, up to the first run of ``quiet`` hops at or under ``context[i]`` (its first window
    always counts)."""
    span, quiet = max(1, span), max(1, quiet)
    out = np.empty(idx.size)
    for i, (k, c) in enumerate(zip(idx, context)):
        seg = level[k : k + span]  # (S,)
        runs = np.convolve((seg <= c).astype(np.int32), np.ones(quiet, dtype=np.int32), mode="valid")
        full = np.flatnonzero(runs >= quiet)
        end = max(1, int(full[0])) if full.size else seg.size  # the quiet run starts at full[0]
        out[i] = seg[:end].max()
    return out


def _power_csum_at(a: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, float]:
    """``csum[idx]`` of ``csum = [0, cumsum(Σ_c a²)]`` (float64) for ``a`` ``(C, N)`` and indices in ``[0, N]``, and
    the largest ``Σ_c a²``, bit for bit, a chunk of samples at a time (the running sum continues from chunk to
    chunk)."""
    out, carry, top = np.zeros(idx.size), np.zeros(1), -np.inf
    for s in range(0, a.shape[1], CHUNK):
        x = np.asarray(a[:, s : s + CHUNK], dtype=np.float64)
        power = (x * x).sum(axis=0)
        top = max(top, float(power.max()))
        csum = np.cumsum(np.concatenate([carry, power]))  # csum[s .. s + len]
        inside = (idx >= s) & (idx < s + power.size)
        out[inside] = csum[idx[inside] - s]
        carry = csum[-1:]
    out[idx == a.shape[1]] = carry[0]
    return out, top


def _sound_starts(
    a: np.ndarray, sample_rate: int, times: np.ndarray, novelty: np.ndarray, floor: float, cfg: OnsetConfig
) -> np.ndarray:
    """Per onset, where its sound leaves the noise floor (see the module docstring); ``a`` ``(C, N)``, ``floor`` the
    power (``Σ_c a²`` per sample) under which everything is noise."""
    starts = times.copy()
    if cfg.lead_in_s <= 0:
        return starts
    span, ref = round(cfg.lead_in_s * sample_rate), round(cfg.context_s * sample_rate)
    win = max(1, round(cfg.window_s * sample_rate))
    margin = 10 ** (cfg.lead_in_margin_db / 10)
    attacks = np.round(times * sample_rate).astype(int)
    for i in np.flatnonzero(novelty >= cfg.lead_in_novelty):
        p = int(attacks[i])
        lo = max(0, p - span, int(attacks[i - 1]) if i > 0 else 0)
        ref_lo = max(0, lo - ref)
        if p - lo < 2 * win or p - ref_lo < 4 * win:
            continue
        x = np.asarray(a[:, ref_lo:p], dtype=np.float64)
        x = (x * x).sum(axis=0)  # (n,) power before the attack
        windows = x[: x.size // win * win].reshape(-1, win).mean(axis=1)
        noise = max(float(np.percentile(windows, 10)), floor)
        excess = np.concatenate([[0.0], np.cumsum(x[lo - ref_lo :] - margin * noise)])  # [j]: Σ over [lo, lo + j)
        j = int(excess.argmin())
        if j >= win:  # a window of quiet before the start, within the search
            starts[i] = min(float(times[i]), (lo + j) / sample_rate)
    return starts


def audio_onsets(audio: np.ndarray, sample_rate: int, config: OnsetConfig | None = None) -> AudioOnsets:
    """Onsets of ``audio`` ``(C, N)`` or ``(N,)`` float (see the module docstring); samples-first, integer or
    non-finite audio is a ValueError (:func:`avflow.eval.inputs.check_audio`), not "no onsets"."""
    cfg = config or OnsetConfig()
    a = np.asarray(audio)
    a = np.atleast_2d(check_audio(a, "audio", dtype=a.dtype))  # float64 a chunk at a time, no whole-track copies
    hop = max(1, round(cfg.hop_s * sample_rate))
    win = max(hop, round(cfg.window_s * sample_rate))
    odf, odf_t = band_rise(a, sample_rate, cfg)
    # broadband level step on the same hop grid
    pos = np.arange(win, a.shape[1] - win + 1, hop)  # (K,) split points in samples
    at, top = _power_csum_at(a, np.concatenate([pos - win, pos, pos + win]))
    empty = np.zeros(0)
    if odf.size == 0 or top <= 0:
        return AudioOnsets(empty, empty, empty, empty, odf_t, odf)
    c_before, c_pos, c_after = at.reshape(3, pos.size)
    after, before = (c_after - c_pos) / win, (c_pos - c_before) / win
    loudest = float(after.max())
    floor = loudest * 10 ** (cfg.floor_db / 10)
    level_after = 10 * np.log10((after + floor) / loudest)  # (K,) dB re the loudest window
    rise = level_after - 10 * np.log10((before + floor) / loudest)
    times = pos / sample_rate
    peak = _running_max(level_after, max(1, round(cfg.peak_s * sample_rate / hop)))
    found = _peaks(odf, cfg.min_rise_db, max(1, round(cfg.min_gap_s / cfg.band_hop_s)))
    idx, det = [], []
    for j in found:
        lo, hi = np.searchsorted(times, [odf_t[j] - cfg.window_s / 2, odf_t[j] + 2 * cfg.window_s])
        if hi <= lo:
            continue
        k = lo + int(rise[lo:hi].argmax())
        if peak[k] >= cfg.min_level_db and (not idx or k != idx[-1]):
            idx.append(k)
            det.append(odf[j])
    if not idx:
        return AudioOnsets(empty, empty, empty, empty, odf_t, odf)
    idx = np.array(idx)
    frac = np.zeros(idx.size)  # sub-hop position of the step's peak
    inner = (idx > 0) & (idx < rise.size - 1)
    y0, y1, y2 = rise[idx[inner] - 1], rise[idx[inner]], rise[idx[inner] + 1]
    den = y0 - 2 * y1 + y2
    frac[inner] = np.where(den < 0, np.clip(0.5 * (y0 - y2) / np.where(den < 0, den, -1.0), -0.5, 0.5), 0.0)
    # novelty: the loudest window after the onset vs the loudest window that ends before it
    ctx, lead = max(1, round(cfg.context_s * sample_rate / hop)), win // hop
    padded = np.concatenate([np.full(ctx + lead, cfg.floor_db), level_after])  # index m -> m + ctx + lead
    context = _running_max(padded, ctx)[idx + 1]  # windows idx - lead - ctx + 1 .. idx - lead
    span, quiet = round(cfg.peak_s * sample_rate / hop), round(cfg.quiet_s * sample_rate / hop)
    own = _sound_peaks(level_after, idx, context, span, quiet)  # (O,) the loudest window of each onset's own sound
    novelty = np.clip((own - context) / cfg.novelty_range_db, 0.0, 1.0)
    attack = times[idx] + frac * hop / sample_rate
    starts = _sound_starts(a, sample_rate, attack, novelty, floor, cfg)
    heard = _heard(level_after, idx, starts, times, win / sample_rate, span, cfg.min_sound_db)
    idx, attack, novelty, det, starts = idx[heard], attack[heard], novelty[heard], np.array(det)[heard], starts[heard]
    return AudioOnsets(attack, det, peak[idx], novelty, odf_t, odf, starts)


def _heard(
    level: np.ndarray, idx: np.ndarray, starts: np.ndarray, times: np.ndarray, window: float, span: int, margin: float
) -> np.ndarray:
    """Per onset at hop ``idx[i]``, whether its own sound rises ``margin`` dB over the clip's noise: the loudest of the
    ``level`` windows (dB, on the hop grid ``times``, each ``window`` s long) from the onset to the next onset's
    ``starts`` (at least one, at most ``span``), against the 10th percentile of all windows."""
    noise = float(np.percentile(level, 10))
    ends = np.searchsorted(times, np.append(starts[1:], np.inf) - window, side="right")  # windows ending by then
    ends = np.clip(ends, idx + 1, idx + max(1, span))
    return np.array([level[k:e].max() >= noise + margin for k, e in zip(idx, ends)], dtype=bool)
