"""Binaural (spatial) audio metrics. Audio is ``(2, N)`` float, channel order [left, right].

Signs (docs/conventions.md): ``ILD = 20·log10(rms_L / rms_R)`` dB, positive = left louder; ``ITD > 0`` when the left ear
leads (s); ``azimuth = (x_center / W − 0.5)·90°``, negative = left.

A cue that cannot be measured is NaN, never a number from the edge of a search range or an ε floor: ILD, ITD and
IPD need sound in both ears (a channel whose RMS is at most ``EPS`` is silent), SNR a reference with sound. Callers
average with NaN-aware means or count the undefined ones (:class:`avflow.eval.measure.Measure`). Paired metrics need
``pred`` and ``ref`` of one shape: a caller that compares different lengths cuts them itself.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import hilbert

from avflow.eval.inputs import check_audio

EPS = 1e-12
NAN = float("nan")
CHUNK = 1 << 16  # samples squared at a time by the whole-track measures (the results do not depend on it)


def _stereo(audio: np.ndarray, what: str = "audio") -> np.ndarray:
    """``(2, N)`` finite float audio as float64 (a one-line ValueError otherwise, e.g. for ``(N, 2)``)."""
    return check_audio(audio, f"binaural metrics: {what}", channels=(2,), mono=False)


def _pair(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both ``(2, N)`` with one N: a shorter pred is not scored on the overlap only (0.1 s of 1 s would score a
    perfect SNR)."""
    pred, ref = _stereo(pred, "pred"), _stereo(ref, "ref")
    if pred.shape != ref.shape:
        raise ValueError(f"binaural metrics: pred and ref must have one shape, got pred {pred.shape} and ref "
                         f"{ref.shape}")  # fmt: skip
    return pred, ref


def _checked(audio: np.ndarray, what: str = "audio") -> np.ndarray:
    """``(2, N)`` finite float audio as :func:`_stereo` checks it, in its own dtype: the whole-track measures convert
    a row or a chunk at a time to float64 (the same values as a float64 copy of the whole track, without it)."""
    a = np.asarray(audio)
    return check_audio(a, f"binaural metrics: {what}", channels=(2,), mono=False, dtype=a.dtype)


def _sum_squares(x: np.ndarray) -> float:
    """``np.sum(x.astype(float64) ** 2)`` of a 1-D ``x`` bit for bit, squaring at most ``CHUNK`` samples at a time:
    the halves follow numpy's pairwise summation (above its block of 128 it sums two halves, the first rounded down
    to a multiple of 8), and numpy itself sums each piece."""
    n = x.size
    if n <= CHUNK:
        y = np.asarray(x, dtype=np.float64)
        return float(np.add.reduce(y * y))
    half = n // 2
    half -= half % 8
    return _sum_squares(x[:half]) + _sum_squares(x[half:])


def _rms_rows(a: np.ndarray) -> np.ndarray:
    """:func:`_rms` of ``(2, N)`` audio in any float dtype, bit for bit, without a whole-track copy."""
    return np.sqrt(np.array([_sum_squares(row) / row.size for row in a]))


def _rms(a: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean(a**2, axis=-1))  # (2,) per channel


def _silent_ear(a: np.ndarray) -> bool:
    """True when some channel of ``(2, N)`` audio has no sound (RMS at most ``EPS``)."""
    return bool(_rms(a).min() <= EPS)


def ild(audio: np.ndarray) -> float:
    """``ILD = 20·log10(rms_L / rms_R)`` dB over the whole signal; NaN when an ear is silent (no level to compare)."""
    rms = _rms_rows(_checked(audio))
    if rms.min() <= EPS:
        return NAN
    rms = rms + EPS
    return float(20.0 * np.log10(rms[0] / rms[1]))


def itd_gcc_phat(audio: np.ndarray, sample_rate: int, max_itd_s: float = 1e-3) -> float:
    """ITD (s) by GCC-PHAT: ``r(τ) = IFFT[conj(L)·R / |conj(L)·R|]``, ``ITD = argmax_{|τ| ≤ max} r(τ)`` refined by a
    parabola; ``r(τ)`` correlates ``L(t)`` with ``R(t + τ)``, so ``ITD > 0`` when the right ear lags (left leads).
    NaN when an ear is silent or the cross-spectrum is zero (no common frequency): the argmax of nothing would be
    the edge of the search range."""
    a = _checked(audio)
    if _rms_rows(a).min() <= EPS:
        return NAN
    n = a.shape[1]
    nfft = int(2 ** np.ceil(np.log2(2 * n)))
    # One whole-track spectrum at a time, the products in place: the same values as conj(L)·R / (|conj(L)·R| + EPS)
    # (a cross-correlation over the whole track has no bit-identical chunked form), half the memory.
    cross = np.fft.rfft(np.asarray(a[0], dtype=np.float64), nfft)
    np.conjugate(cross, out=cross)
    np.multiply(cross, np.fft.rfft(np.asarray(a[1], dtype=np.float64), nfft), out=cross)
    mag = np.abs(cross)
    if not mag.max() > EPS:
        return NAN
    mag += EPS
    np.divide(cross, mag, out=cross)
    del mag
    r = np.fft.irfft(cross, nfft)
    del cross
    m = max(1, int(np.ceil(max_itd_s * sample_rate)))
    lags = np.arange(-m, m + 1)
    vals = r[lags % nfft]
    j = int(np.argmax(vals))
    frac = 0.0
    if 0 < j < len(vals) - 1:
        den = vals[j - 1] - 2 * vals[j] + vals[j + 1]
        frac = float(np.clip(0.5 * (vals[j - 1] - vals[j + 1]) / den, -0.5, 0.5)) if den < 0 else 0.0
    return float((lags[j] + frac) / sample_rate)


def delta_ild(pred: np.ndarray, ref: np.ndarray) -> float:
    """``ΔILD = |ILD(pred) − ILD(ref)|`` dB; NaN when either ILD is (a silent ear)."""
    return abs(ild(pred) - ild(ref))


def delta_itd(pred: np.ndarray, ref: np.ndarray, sample_rate: int) -> float:
    """``ΔITD = |ITD(pred) − ITD(ref)|`` in µs, both by GCC-PHAT; NaN when either ITD is (a silent ear)."""
    return 1e6 * abs(itd_gcc_phat(pred, sample_rate) - itd_gcc_phat(ref, sample_rate))


def _spec(x: np.ndarray, n_fft: int, hop: int, win: int) -> np.ndarray:
    """Complex STFT, centred (zero padding of n_fft/2), Hann window of ``win`` padded to ``n_fft``: (..., F, frames)."""
    window = np.zeros(n_fft)
    off = (n_fft - win) // 2
    window[off : off + win] = np.hanning(win + 1)[:-1]
    pad = [(0, 0)] * (x.ndim - 1) + [(n_fft // 2, n_fft // 2)]
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(x, pad), n_fft, axis=-1)[..., ::hop, :]
    return np.swapaxes(np.fft.rfft(frames * window, axis=-1), -1, -2)


def ipd_error(pred: np.ndarray, ref: np.ndarray, n_fft: int = 512, hop: int = 128) -> float:
    """Energy-weighted mean absolute interaural phase difference error (rad):
    ``IPD = ∠(S_L·conj(S_R))`` per TF bin; ``Σ w·|wrap(IPD_pred − IPD_ref)| / Σ w`` with ``w = |S_L^ref|·|S_R^ref|``.
    NaN when an ear of either is silent or the weights are all zero (no bin where both reference ears sound)."""
    p, r = _pair(pred, ref)
    if _silent_ear(p) or _silent_ear(r):
        return NAN
    sp, sr = _spec(p, n_fft, hop, n_fft), _spec(r, n_fft, hop, n_fft)
    d = np.angle(sp[0] * np.conj(sp[1]) * np.conj(sr[0] * np.conj(sr[1])))  # wrapped difference
    w = np.abs(sr[0]) * np.abs(sr[1])  # (F, frames)
    if not w.sum() > EPS:
        return NAN
    return float((w * np.abs(d)).sum() / (w.sum() + EPS))


def stft_distance(pred: np.ndarray, ref: np.ndarray) -> float:
    """Mono2Binaural STFT distance: ``Σ_c mean((Re, Im)[S_c^pred − S_c^ref]²)`` (the mean over the stacked real and
    imaginary parts, no square root: squared error, so twice the error reads four times) with n_fft 512, hop 160,
    window 400, centred (Gao & Grauman 2019, their ``evaluate.py``; zero padding here where librosa may reflect).
    Until 2026-12-06 a square root was taken per ear (docs/metrics.md)."""
    p, r = _pair(pred, ref)
    d = _spec(p, 512, 160, 400) - _spec(r, 512, 160, 400)  # (2, F, T)
    return float(sum(0.5 * np.mean(d[c].real ** 2 + d[c].imag ** 2) for c in range(2)))


def envelope_distance(pred: np.ndarray, ref: np.ndarray) -> float:
    """Mono2Binaural ENV distance: ``Σ_c sqrt(mean((|H(pred_c)| − |H(ref_c)|)²))``, H the analytic signal."""
    p, r = _pair(pred, ref)
    return float(sum(np.sqrt(np.mean((np.abs(hilbert(p[c])) - np.abs(hilbert(r[c]))) ** 2)) for c in range(2)))


def magnitude_distance(pred: np.ndarray, ref: np.ndarray) -> float:
    """PseudoBinaural Mag: ``Σ_c mean((|S_c^pred| − |S_c^ref|)²)`` with n_fft 512, hop 128 (Xu et al. 2021)."""
    p, r = _pair(pred, ref)
    sp, sr = _spec(p, 512, 128, 512), _spec(r, 512, 128, 512)
    return float(sum(np.mean((np.abs(sp[c]) - np.abs(sr[c])) ** 2) for c in range(2)))


def phase_distance(pred: np.ndarray, ref: np.ndarray) -> float:
    """PseudoBinaural Phase: mean over TF bins of ``|wrap(∠D^pred − ∠D^ref)|`` (rad), ``D`` the STFT of ``L − R``."""
    p, r = _pair(pred, ref)
    dp, dr = _spec(p[0] - p[1], 512, 128, 512), _spec(r[0] - r[1], 512, 128, 512)
    return float(np.mean(np.abs(np.angle(dp * np.conj(dr)))))


def snr(pred: np.ndarray, ref: np.ndarray, eps: float = 1e-12) -> float:
    """PseudoBinaural SNR (dB): ``10·log10((mean(ref²) + ε) / (mean((pred − ref)²) + ε))``; higher is better.
    The reference code uses ``ε = 1e-4``, which caps the SNR of quiet (not peak-normalised) audio; here ε is tiny.
    NaN when the reference is silent (no signal to compare the error with)."""
    p, r = _pair(pred, ref)
    if not _rms(r.ravel()) > EPS:
        return NAN
    return float(10.0 * np.log10((np.mean(r**2) + eps) / (np.mean((p - r) ** 2) + eps)))


def ild_track(audio: np.ndarray, sample_rate: int, times: np.ndarray, window_s: float) -> tuple[np.ndarray, np.ndarray]:
    """ILD (dB) and mean energy in windows ``[t, t + window_s)`` starting at each of ``times``: (ild (T,), energy)."""
    a = _checked(audio)
    win = max(1, int(round(window_s * sample_rate)))
    starts = np.clip(np.round(np.asarray(times) * sample_rate).astype(int), 0, max(0, a.shape[1] - 1))
    ends = np.minimum(starts + win, a.shape[1])
    e = (_energy_csum_at(a, ends) - _energy_csum_at(a, starts)) / np.maximum(ends - starts, 1)  # (2, T)
    return 10.0 * np.log10((e[0] + EPS) / (e[1] + EPS)), e.mean(axis=0)


def _energy_csum_at(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``csum[:, idx]`` of ``csum = [0, cumsum(a², axis=1)]`` (``(2, N + 1)``, float64) for ``a`` ``(2, N)`` and indices
    ``idx`` in ``[0, N]``, bit for bit, a chunk of samples at a time (a running sum is sequential: each chunk's starts
    from the last one's)."""
    idx = np.asarray(idx)
    out = np.zeros((a.shape[0], idx.size))
    carry = np.zeros(a.shape[0])
    for s in range(0, a.shape[1], CHUNK):
        sq = np.asarray(a[:, s : s + CHUNK], dtype=np.float64) ** 2
        csum = np.cumsum(np.concatenate([carry[:, None], sq], axis=1), axis=1)  # csum[:, s .. s + len]
        inside = (idx >= s) & (idx < s + sq.shape[1])
        out[:, inside] = csum[:, idx[inside] - s]
        carry = csum[:, -1]
    out[:, idx == a.shape[1]] = carry[:, None]
    return out


def follows_object(
    audio: np.ndarray, sample_rate: int, x_center: np.ndarray, width: int, fps: float, floor_db: float = -40.0
) -> float:
    """ "Sound follows the object": Pearson correlation between ILD over time and the object's leftness ``−azimuth``.

    Per frame ``k``: ``ILD_k`` over ``[k/fps, (k+1)/fps)``, ``azimuth_k = (x_k / W − 0.5)·90°``; frames where the object
    is visible and the audio energy is within ``floor_db`` of its maximum enter a weighted Pearson correlation
    (weights = energy) of ``ILD_k`` with ``−azimuth_k``. +1: louder on the object's side; −1: channels swapped.
    """
    times = np.arange(len(x_center)) / fps
    ild_k, energy = ild_track(audio, sample_rate, times, 1.0 / fps)
    az = (np.asarray(x_center, dtype=np.float64) / width - 0.5) * 90.0
    ok = np.isfinite(az) & (energy > energy.max() * 10 ** (floor_db / 10)) & (energy > 0)
    if ok.sum() < 3:
        return float("nan")
    w, a, b = energy[ok], ild_k[ok], -az[ok]
    a, b = a - np.average(a, weights=w), b - np.average(b, weights=w)
    den = np.sqrt(np.average(a * a, weights=w) * np.average(b * b, weights=w))
    return float(np.average(a * b, weights=w) / den) if den > 0 else float("nan")


def follows_events(
    audio: np.ndarray, sample_rate: int, event_times: np.ndarray, azimuths: np.ndarray, window_s: float = 0.05
) -> float:
    """Event version of :func:`follows_object` for scenes with several sources: Pearson correlation over events
    between ``ILD`` in ``[t_e, t_e + window_s)`` and ``−azimuth_e`` of the object that made event ``e``. NaN with
    fewer than 3 events or no spread in azimuth."""
    t = np.asarray(event_times, dtype=np.float64)
    az = np.asarray(azimuths, dtype=np.float64)
    if t.size < 3 or np.ptp(az) < 1e-6:
        return float("nan")
    ild_e, energy = ild_track(audio, sample_rate, t, window_s)
    ok = energy > 0
    if ok.sum() < 3 or np.std(ild_e[ok]) < 1e-9:
        return float("nan")
    return float(np.corrcoef(ild_e[ok], -az[ok])[0, 1])
