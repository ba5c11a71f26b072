"""A flicker of the room noise shortly before each sound is no onset: it would fit the visual events as well as the
sounds do (an ambiguous offset, or a side read from the noise). A faint sound of its own stays one."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal.windows import tukey

from avflow.eval.events import VisualEvents
from avflow.eval.offset import match_events
from avflow.eval.onsets import OnsetConfig, audio_onsets
from avflow.eval.synthetic import modal_click

SR = 16000
NOISE = 1e-2  # room noise about 35 dB under the sounds
FLASHES = (0.8, 2.6)  # s, visual events
OFFSET = 0.1  # s, the sounds start this much after their flashes
LEAD = 0.057  # s, a flicker this much before each sound


def _flicker(rng: np.random.Generator) -> np.ndarray:
    """30 ms of five low tones at 0.3 of the noise's power: about +1 dB broadband, enough in the low bands for the
    band detector's 3 dB mean rise."""
    t = np.arange(int(0.03 * SR)) / SR
    tones = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f in (100, 170, 280, 450, 650))
    tones = tones * tukey(t.size, 0.3)
    return tones * np.sqrt(0.3) * NOISE / np.sqrt(np.mean(tones**2))


def _clip(seed: int, flicker: bool = True) -> np.ndarray:
    rng = np.random.default_rng(seed)
    audio = NOISE * rng.standard_normal(4 * SR)
    for t in FLASHES:
        if flicker:
            f = _flicker(rng)
            k = int((t + OFFSET - LEAD) * SR)
            audio[k : k + f.size] += f
        click = modal_click(SR, "wood", rng, 0.2)
        k = int((t + OFFSET) * SR)
        audio[k : k + click.size] += click
    return audio


def _events() -> VisualEvents:
    return VisualEvents(np.array(FLASHES), np.array(["flash", "flash"]), np.array([10.0, 50.0]), 64, np.zeros(1))


@pytest.mark.parametrize("seed", range(5))
def test_a_noise_flicker_before_each_sound_is_dropped_and_the_offset_is_the_sounds(seed):
    audio = _clip(seed)
    kept_all = audio_onsets(audio, SR, OnsetConfig(min_sound_db=0.0))  # the rule off: the flickers are onsets
    flickers = [t + OFFSET - LEAD for t in FLASHES]
    assert all(np.abs(kept_all.times - t).min() < 0.015 for t in flickers), kept_all.times
    assert not match_events(kept_all, _events()).offset_ms.defined  # the flickers fit as well as the sounds

    on = audio_onsets(audio, SR)
    assert on.times.size == 2 and np.allclose(on.times, [t + OFFSET for t in FLASHES], atol=0.003), on.times
    offset = match_events(on, _events()).offset_ms
    assert offset.defined and abs(offset.value - 1000 * OFFSET) < 2 and offset.confidence > 0.9, offset


@pytest.mark.parametrize("seed", range(3))
def test_a_faint_sound_of_its_own_stays_an_onset(seed):
    rng = np.random.default_rng(seed)
    audio = _clip(seed, flicker=False)
    click = modal_click(SR, "wood", rng, 0.2)
    click *= 2 * NOISE / np.abs(click).max()  # its peak twice the noise's RMS: dropped from min_sound_db 5 on
    audio[int(1.8 * SR) : int(1.8 * SR) + click.size] += click
    on = audio_onsets(audio, SR)
    assert np.abs(on.times - 1.8).min() < 0.004, on.times


def test_min_sound_db_must_not_be_negative():
    with pytest.raises(ValueError, match="min_sound_db"):
        OnsetConfig(min_sound_db=-1.0)
