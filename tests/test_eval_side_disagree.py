"""An event whose ILD and ITD point to opposite sides at its onset, or whose side there rests on one cue, is read again
over its sound, and the reading there taken where both cues agree."""

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


def _faint_right_then_left(seed: int, body_ild_db: float) -> np.ndarray:
    """1 s of quiet room noise with, at 0.5 s, 20 ms of faint hiss from the right at equal levels (its right ear 0.25 ms
    ahead, ILD 0: under the ILD's threshold) and then 0.2 s of a loud hiss from the left (its left ear 0.25 ms ahead
    and ``body_ild_db`` louder)."""
    rng = np.random.default_rng(seed)
    a = 3e-4 * rng.standard_normal((2, SR))
    t0, lag, n, m = SR // 2, 4, int(0.02 * SR), int(0.2 * SR)
    faint = 4e-3 * rng.standard_normal(n + lag)
    a[1, t0 : t0 + n] += faint[lag:]
    a[0, t0 : t0 + n] += faint[:n]  # the same sound 4 samples later
    body = 0.03 * rng.standard_normal(m + lag)
    a[0, t0 + n : t0 + n + m] += 10 ** (body_ild_db / 20) * body[lag:]
    a[1, t0 + n : t0 + n + m] += body[:m]
    return a


@pytest.mark.parametrize("seed", [0, 3, 6])
def test_a_side_from_one_cue_yields_to_the_sound_where_both_cues_agree(seed):
    # at the onset only the ITD reaches its threshold (the ILD is 0), and it gives the right; over the sound both give
    # the left (before: the short window's right was kept)
    a = _faint_right_then_left(seed, body_ild_db=1.5)
    short = side.event_cues(a, SR, np.array([0.5]))[0]
    assert short.side == "right" and abs(short.ild_db.value) < 0.25 < 40 < -short.itd_us.value, short
    read = side.event_cues(a, SR, np.array([0.5]), ends=np.array([0.9]))[0]
    assert read.side == "left" and read.ild_db.value > 0.25 and read.itd_us.value > 40, read


@pytest.mark.parametrize("seed", [0, 3, 6])
def test_a_side_from_one_cue_stays_when_the_sound_gives_one_cue_too(seed):
    # over the sound the ILD stays under its threshold as well: one cue against one cue, the onset's reading stays
    a = _faint_right_then_left(seed, body_ild_db=0.0)
    short = side.event_cues(a, SR, np.array([0.5]))[0]
    assert short.side == "right", short
    read = side.event_cues(a, SR, np.array([0.5]), ends=np.array([0.9]))[0]
    assert read == short
