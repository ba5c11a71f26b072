"""Per-event audio errors (avflow.eval.event_audio) on synthetic sounds with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from avflow.eval.event_audio import EventAudio, EventAudioConfig, compare_event_audio
from avflow.eval.synthetic import modal_click

SR = 16000
EVENTS = np.array([0.21, 0.52, 0.87, 1.31, 1.62])  # s


def delayed(x: np.ndarray, samples: float) -> np.ndarray:
    """``x`` (..., N) delayed by a fractional number of samples (band-limited: a linear phase)."""
    n = 4 * x.shape[-1]
    spec = np.fft.rfft(x, n) * np.exp(-2j * np.pi * np.fft.rfftfreq(n) * samples)
    return np.fft.irfft(spec, n)[..., : x.shape[-1]]


def scene(levels_db=(0.0, -4.0, -2.0, -7.0, -3.0), itd_samples=0.0, seed=0) -> np.ndarray:
    """(2, 2 s) struck sounds at EVENTS over quiet independent noise; the right ear lags by ``itd_samples``."""
    rng = np.random.default_rng(seed)
    mono = np.zeros(2 * SR)
    for t, level, material in zip(EVENTS, levels_db, ("metal", "wood", "glass", "rubber", "metal")):
        click = 0.3 * 10 ** (level / 20) * modal_click(SR, material, rng)
        start = int(round(t * SR))
        mono[start : start + click.size] += click[: mono.size - start]
    ears = np.stack([mono, delayed(mono, itd_samples)])
    return ears + 1e-4 * rng.standard_normal(ears.shape)


def test_identical_audio_has_no_errors_and_every_event_is_heard():
    ref = scene()
    got = compare_event_audio(ref, ref, SR, EVENTS)
    assert len(got) == len(EVENTS) and got.unheard == 0
    assert np.all(np.abs(got.times - EVENTS) < 0.003)  # the onsets of the struck sounds
    for name in EventAudio.ERRORS:
        assert np.all(getattr(got, name) == 0.0), name
    assert all(m.defined and m.value == 0.0 and m.confidence == 1.0 for m in got.summary().values())


@pytest.mark.parametrize("itd_samples", [3.37, -1.6])
def test_a_known_sub_sample_itd_is_the_itd_error(itd_samples):
    ref = scene()  # both ears alike: ITD 0
    pred = scene(itd_samples=itd_samples)  # the right ear lags: ITD = +itd / SR (left leads)
    got = compare_event_audio(pred, ref, SR, EVENTS).summary()
    assert got["itd_error_us"].value == pytest.approx(1e6 * abs(itd_samples) / SR, abs=0.1 * 1e6 / SR)
    assert got["ild_error_db"].value < 0.2 and got["loudness_error_db"].value < 0.2


def test_known_level_differences_are_the_ild_and_loudness_errors():
    ref = scene(itd_samples=2.0)
    left_louder = ref * np.array([[10 ** (3 / 20)], [1.0]])  # +3 dB on the left only
    got = compare_event_audio(left_louder, ref, SR, EVENTS)
    assert np.allclose(got.ild_errors_db, 3.0, atol=0.01)
    assert np.allclose(got.loudness_errors_db, 10 * np.log10((10**0.3 + 1) / 2), atol=0.01)
    assert np.all(got.itd_errors_us < 1.0) and np.all(np.abs(got.onset_errors_ms) < 0.5)
    quieter = compare_event_audio(0.5 * ref, ref, SR, EVENTS)
    assert np.allclose(quieter.loudness_errors_db, -6.02, atol=0.01)  # signed: pred below ref
    assert np.all(quieter.ild_errors_db < 0.01)


@pytest.mark.parametrize("shift", [23, -13])
def test_a_late_or_early_reconstruction_has_that_onset_error(shift):
    """Whole samples: a fractional delay of a sound that starts at full amplitude rings before it (band-limited)."""
    ref = scene()
    pred = np.roll(ref, shift, axis=-1)
    got = compare_event_audio(pred, ref, SR, EVENTS)
    shift_ms = 1e3 * shift / SR
    assert np.allclose(got.onset_errors_ms, shift_ms, atol=0.07), got.onset_errors_ms  # half the 0.125 ms grid
    assert got.summary()["onset_error_ms"].value == pytest.approx(abs(shift_ms), abs=0.07)


def test_unheard_events_and_missed_onsets_are_counted_not_measured():
    ref = scene()
    events = np.append(EVENTS, 1.9)  # nothing sounds at 1.9 s
    pred = ref.copy()
    pred[:, int(0.85 * SR) : int(1.2 * SR)] = 0.0  # the codec loses the sound at 0.87 s
    got = compare_event_audio(pred, ref, SR, events)
    assert got.unheard == 1 and len(got) == len(EVENTS)
    missed = np.isnan(got.onset_errors_ms)
    assert missed.tolist() == [False, False, True, False, False]
    assert np.isnan(got.loudness_errors_db[2]) and np.isnan(got.ild_errors_db[2])  # silent prediction
    summary = got.summary()
    assert summary["onset_error_ms"].confidence == pytest.approx(0.8)
    both = EventAudio.merge([got, compare_event_audio(ref, ref, SR, EVENTS)])
    assert len(both) == 2 * len(EVENTS) and both.unheard == 1
    assert both.summary()["onset_error_ms"].confidence == pytest.approx(0.9)
    assert not EventAudio.merge([]).summary()["itd_error_us"].defined


def test_bad_input_is_refused():
    ref = scene()
    with pytest.raises(ValueError, match="one shape"):
        compare_event_audio(ref[:1], ref[:1], SR, EVENTS)
    with pytest.raises(ValueError, match="match_s"):
        EventAudioConfig(match_s=0.0)
