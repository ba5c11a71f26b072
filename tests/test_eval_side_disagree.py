"""An event whose ILD and ITD point to opposite sides at its onset is read again over its sound, where they agree."""

from __future__ import annotations

import numpy as np
import pytest

from avflow.eval import side

SR = 16000


def _voice_from_the_right(seed: int, left_hiss: float, hiss_s: float) -> np.ndarray:
    """1 s of room noise with, at 0.5 s, a voiced sound (200 Hz) from the right (its right ear 0.25 ms ahead and 1 dB
    louder) that starts faintly for 20 ms, and a hiss on the left from 0.5 s for ``hiss_s``."""
    rng = np.random.default_rng(seed)
    a = 1e-3 * rng.standard_normal((2, SR))
    t0, lag = SR // 2, 4
    t = np.arange(int(0.3 * SR)) / SR
    voice = sum(np.sin(2 * np.pi * 200 * h * t + h) / h for h in range(1, 10))
    voice *= 0.05 * np.where(t < 0.02, 0.03, 1.0) * np.exp(-t / 0.2)
    a[1, t0 : t0 + t.size] += voice
    a[0, t0 + lag : t0 + lag + t.size] += 0.9 * voice
    n = int(hiss_s * SR)
    a[0, t0 : t0 + n] += left_hiss * rng.standard_normal(n)
    a[1, t0 : t0 + n] += left_hiss / 3 * rng.standard_normal(n)
    return a


@pytest.mark.parametrize("seed", [0, 2, 4])
def test_cues_that_disagree_at_a_faint_start_are_settled_by_the_sound(seed):
    # noise in the faint start tips its ILD to the left; its ITD keeps the right
    a = _voice_from_the_right(seed, left_hiss=3e-3, hiss_s=0.015)
    short = side.event_cues(a, SR, np.array([0.5]))[0]
    assert short.disagree and short.ild_db.value > 0 > short.itd_us.value and short.side != "right", short
    read = side.event_cues(a, SR, np.array([0.5]), ends=np.array([0.9]))[0]
    assert read.side == "right" and not read.disagree, read
    assert read.ild_db.value < 0 and read.itd_us.value < 0


@pytest.mark.parametrize("seed", [0, 1, 5])
def test_two_sounds_at_once_from_both_sides_keep_the_short_reading(seed):
    # the hiss on the left lasts through the longer window too: there the cues disagree again
    a = _voice_from_the_right(seed, left_hiss=0.03, hiss_s=0.15)
    short = side.event_cues(a, SR, np.array([0.5]))[0]
    assert short.disagree, short
    read = side.event_cues(a, SR, np.array([0.5]), ends=np.array([0.9]))[0]
    assert read == short
