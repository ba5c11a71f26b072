"""Long tracks in `avflow eval`'s audio measures: onsets, the whole-track ILD and ITD, follows-object and the
per-event cues read the track a chunk of samples at a time (no whole-track float64 copies, squares or STFTs), with
the whole track's results bit for bit; the whole-track GCC-PHAT keeps its one FFT (a cross-correlation over the whole
track has no bit-identical chunked form) but holds one spectrum less.

Measured before (tracemalloc, 60 s of 48 kHz stereo float32): audio_onsets +206 MB, itd_gcc_phat +236 MB,
follows_object +132 MB, ild +88 MB, event_sides +110 MB."""

from __future__ import annotations

import numpy as np
import pytest
from test_long_clip_memory import traced_peak

from avflow.eval import onsets, side, spatial

SR = 48000


def bursts(seconds: float, sr: int = SR, channels: int = 2, seed: int = 0) -> np.ndarray:
    """(channels, N) float32: a quiet noise floor and decaying noise bursts every 0.7 s, each louder in one ear and
    a few samples later in the other."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    a = 0.002 * rng.standard_normal((channels, n))
    length = int(0.1 * sr)
    for i, t in enumerate(np.arange(0.3, seconds - 0.2, 0.7)):
        k = int(t * sr)
        s = rng.standard_normal(length) * np.exp(-np.arange(length) / (0.02 * sr))
        for c in range(channels):
            d = 8 * c * (1 if i % 2 else -1)
            a[c, k : k + length] += (0.8 if (i + c) % 2 else 0.3) * np.roll(s, d)
    return a.astype(np.float32)


def same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


# --- the whole-track formulas as they were (one float64 copy of the track), for bit-for-bit comparison ------------


def ild_whole(audio):
    a = np.asarray(audio, dtype=np.float64)
    rms = np.sqrt(np.mean(a**2, axis=-1))
    return float("nan") if rms.min() <= spatial.EPS else float(20.0 * np.log10((rms[0] + 1e-12) / (rms[1] + 1e-12)))


def itd_whole(audio, sr, max_itd_s=1e-3):
    a = np.asarray(audio, dtype=np.float64)
    n = a.shape[1]
    nfft = int(2 ** np.ceil(np.log2(2 * n)))
    cross = np.conj(np.fft.rfft(a[0], nfft)) * np.fft.rfft(a[1], nfft)
    r = np.fft.irfft(cross / (np.abs(cross) + spatial.EPS), nfft)
    m = max(1, int(np.ceil(max_itd_s * sr)))
    lags = np.arange(-m, m + 1)
    vals = r[lags % nfft]
    j = int(np.argmax(vals))
    frac = 0.0
    if 0 < j < len(vals) - 1:
        den = vals[j - 1] - 2 * vals[j] + vals[j + 1]
        frac = float(np.clip(0.5 * (vals[j - 1] - vals[j + 1]) / den, -0.5, 0.5)) if den < 0 else 0.0
    return float((lags[j] + frac) / sr)


def ild_track_whole(audio, sr, times, window_s):
    a = np.asarray(audio, dtype=np.float64)
    win = max(1, int(round(window_s * sr)))
    starts = np.clip(np.round(np.asarray(times) * sr).astype(int), 0, max(0, a.shape[1] - 1))
    csum = np.concatenate([np.zeros((2, 1)), np.cumsum(a**2, axis=1)], axis=1)
    ends = np.minimum(starts + win, a.shape[1])
    e = (csum[:, ends] - csum[:, starts]) / np.maximum(ends - starts, 1)
    return 10.0 * np.log10((e[0] + spatial.EPS) / (e[1] + spatial.EPS)), e.mean(axis=0)


# --- results: chunked == whole track, bit for bit ---------------------------------------------------------------------


@pytest.mark.parametrize("n", [1001, 65536, 65537, 300_007])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_whole_track_ild_itd_and_ild_track_equal_the_float64_formulas(n, dtype):
    """ILD (a pairwise sum of squares split as numpy splits it), ITD (in-place spectra) and the windowed ILD track (a
    running sum carried from chunk to chunk) equal the whole-track float64 formulas bit for bit."""
    a = bursts(n / SR + 0.5, seed=n)[:, :n].astype(dtype)
    assert spatial.ild(a) == ild_whole(a)
    assert spatial.itd_gcc_phat(a, SR) == itd_whole(a, SR)
    times = np.append(np.linspace(0, n / SR, 37), [n / SR + 1.0])
    for got, want in zip(spatial.ild_track(a, SR, times, 0.01), ild_track_whole(a, SR, times, 0.01)):
        assert same(got, want)


@pytest.mark.parametrize("module", [spatial, onsets, side])
def test_long_audio_measures_do_not_depend_on_the_chunk(monkeypatch, module):
    """Onsets (the decimation, the band STFT and the broadband running sum), ILD, ITD, follows-object and the
    per-event cues give the same values read a few samples at a time as in one chunk."""
    a = bursts(6.3)
    x = np.random.default_rng(1).uniform(0, 320, 189)

    def measures():
        o = onsets.audio_onsets(a, SR)
        cues = side.event_cues(a, SR, o.times, ends=np.append(o.times[1:], np.inf))
        rises = [side.energy_rise(a, SR, t - 0.02, t + 0.02) for t in o.times]
        return (o, spatial.ild(a), spatial.itd_gcc_phat(a, SR), spatial.follows_object(a, SR, x, 320, 30.0),
                repr(cues), rises)  # fmt: skip

    monkeypatch.setattr(module, "CHUNK", 1 << 40)
    whole = measures()
    assert len(whole[0]) > 5 and any(c.side for c in side.event_cues(a, SR, whole[0].times))
    monkeypatch.setattr(module, "CHUNK", 999)
    got = measures()
    for k in ("times", "rise_db", "level_db", "novelty", "curve_times", "curve_rise"):
        assert same(getattr(got[0], k), getattr(whole[0], k)), k
    assert got[1:] == whole[1:]


@pytest.mark.parametrize("sr", [16000, 22050, 44100, 96000])
def test_onsets_at_other_rates_and_mono_do_not_depend_on_the_chunk(monkeypatch, sr):
    """No decimation (16 and 22.05 kHz), by 2 and by 6; mono audio."""
    a = bursts(4.1, sr, channels=1)[0]
    monkeypatch.setattr(onsets, "CHUNK", 1 << 40)
    whole = onsets.audio_onsets(a, sr)
    monkeypatch.setattr(onsets, "CHUNK", 777)
    got = onsets.audio_onsets(a, sr)
    assert len(whole) > 3
    for k in ("times", "rise_db", "level_db", "novelty", "curve_times", "curve_rise"):
        assert same(getattr(got, k), getattr(whole, k)), k


# --- memory: no whole-track float64 arrays --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minute():
    return bursts(60.0)  # 23 MB of float32; a float64 copy of it is 46 MB


def test_onsets_ild_follows_and_cues_of_a_minute_hold_no_whole_track_copy(minute):
    """Each below a third of one float64 copy of the track (46 MB), where each took 88-206 MB."""
    x = np.linspace(10, 300, 1800)
    t = np.arange(0.3, 59.5, 0.7)
    assert traced_peak(onsets.audio_onsets, minute, SR) < 20
    assert traced_peak(spatial.ild, minute) < 15
    assert traced_peak(spatial.follows_object, minute, SR, x, 320, 30.0) < 15
    assert traced_peak(side.event_cues, minute, SR, t, ends=t + 0.7) < 15
    assert traced_peak(side.energy_rise, minute, SR, 30.0, 30.1) < 15


def test_whole_track_itd_holds_two_spectra_not_four(minute):
    """The whole-track GCC-PHAT: its 2^23-point spectra take 64 MB each; it held four at once (+236 MB)."""
    nfft = 1 << 23
    spectrum_mb = (nfft // 2 + 1) * 16 / 2**20
    assert traced_peak(spatial.itd_gcc_phat, minute, SR) < 2.5 * spectrum_mb
