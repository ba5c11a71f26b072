"""An onset's novelty is its own sound's rise over what came before: a flicker of the room noise shortly before a
loud sound does not inherit that sound's level, and a word's faint consonant keeps its vowel's."""

from __future__ import annotations

import numpy as np
import pytest

from avflow.eval.onsets import OnsetConfig, audio_onsets
from avflow.eval.synthetic import modal_click

SR = 16000
NOISE = 3e-3  # room noise about 50 dB under the sounds


def _at(onsets, t: float) -> int:
    i = int(np.argmin(np.abs(onsets.times - t)))
    assert abs(onsets.times[i] - t) < 0.004, onsets.times
    return i


@pytest.mark.parametrize("seed", [0, 1])
def test_a_noise_flicker_before_a_loud_sound_is_not_novel(seed):
    rng = np.random.default_rng(seed)
    audio = NOISE * rng.standard_normal(2 * SR)
    audio[int(0.72 * SR) : int(0.72 * SR) + 80] += 2.5 * NOISE * rng.standard_normal(80)  # 5 ms, about +10 dB
    click = modal_click(SR, "wood", rng, 0.2)
    audio[SR : SR + click.size] += click  # 280 ms later, 50 dB over the noise
    on = audio_onsets(audio, SR)
    flicker, loud = _at(on, 0.72), _at(on, 1.0)
    assert on.novelty[loud] > 0.9 and on.novelty[flicker] < 0.4, on.novelty
    # the span that ends a sound is what separates the two: with a quiet span longer than the gap, it inherits again
    long_quiet = audio_onsets(audio, SR, OnsetConfig(quiet_s=0.29))
    assert long_quiet.novelty[_at(long_quiet, 0.72)] > 0.9


@pytest.mark.parametrize("seed", range(4))
def test_a_faint_consonant_keeps_the_novelty_of_its_vowel(seed):
    rng = np.random.default_rng(seed)
    audio = NOISE * rng.standard_normal(2 * SR)
    c0 = int(0.9 * SR)
    audio[c0 : c0 + 160] += 3.5 * NOISE * rng.standard_normal(160)  # 10 ms consonant, about +12 dB
    audio[c0 + 160 : c0 + 1600] += 1.2 * NOISE * rng.standard_normal(1440)  # 90 ms at about +4 dB
    t = np.arange(int(0.3 * SR)) / SR
    vowel = 0.3 * np.sin(2 * np.pi * 220 * t) * np.minimum(1, t / 0.005) * np.exp(-t / 0.15)
    audio[c0 + 1600 : c0 + 1600 + t.size] += vowel
    on = audio_onsets(audio, SR)
    consonant, voiced = _at(on, 0.9), _at(on, 1.0)
    assert on.novelty[consonant] >= on.novelty[voiced] and on.novelty[consonant] > 0.9, on.novelty


def test_quiet_s_must_be_positive():
    with pytest.raises(ValueError, match="quiet_s"):
        OnsetConfig(quiet_s=0.0)
