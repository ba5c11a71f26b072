"""A sound whose first part lies under the room noise (a breathy "f" before a word's vowel) is read at its first loud
attack, when no other event's sound is nearer."""

from __future__ import annotations

import numpy as np
import pytest

from avflow.eval import side
from avflow.eval.events import truth_events
from avflow.eval.offset import match_events
from avflow.eval.onsets import audio_onsets

SR, FPS = 16000, 16.0


def _burst(rng: np.random.Generator, a: np.ndarray, t: float, right: bool, lead_s: float = 0.0) -> None:
    """Adds at ``t`` (s) a decaying noise burst from the left or the right (the near ear 4 samples ahead and 3 dB
    louder), after ``lead_s`` of a hiss from the same side 8 dB under the room noise (the burst then starts at
    ``t + lead_s``)."""
    i, n_lead, n = int(round(t * SR)), int(round(lead_s * SR)), int(0.15 * SR)
    sound = np.concatenate([0.4e-3 * rng.standard_normal(n_lead),
                            0.05 * rng.standard_normal(n + 4) * np.exp(-np.arange(n + 4) / (0.04 * SR))])  # fmt: skip
    m = n_lead + n
    near, far = (1, 0) if right else (0, 1)
    a[near, i : i + m] += sound[4 : m + 4] * 10 ** (3 / 20)
    a[far, i : i + m] += sound[:m]


def _clip(seed: int, quiet_event: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """3 s of room noise and four flashes (left, right, left, right: azimuths ∓30°) whose sounds play at their times,
    the second's after 90 ms under the noise; with ``quiet_event``, a fifth flash 0.1 s before that one makes no
    sound. Returns the audio ``(2, N)``, the event times and azimuths."""
    rng = np.random.default_rng(seed)
    a = 1e-3 * rng.standard_normal((2, 3 * SR))
    times, az = [0.5, 1.2, 2.0, 2.5], [-30.0, 30.0, -30.0, 30.0]
    for t, z in zip(times, az):
        _burst(rng, a, t, z > 0, lead_s=0.09 if t == 1.2 else 0.0)
    if quiet_event:
        times, az = times + [1.1], az + [-30.0]
    return a, np.array(times), np.array(az)


def _sides(a: np.ndarray, times: np.ndarray, az: np.ndarray, cfg: side.CueConfig) -> dict[float, side.EventSide]:
    onsets = audio_onsets(a, SR)
    events = truth_events(times, az)
    sync = match_events(onsets, events, frame_period_s=1 / FPS)
    found = side.event_sides(a, SR, onsets, events, sync, cfg, anchor_window_s=0.04125)
    return {round(s.visual_time, 3): s for s in found}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_sound_that_starts_under_the_noise_is_read_at_its_attack(seed):
    a, times, az = _clip(seed, quiet_event=False)
    before = _sides(a, times, az, side.CueConfig(late_attack_s=0.0))
    assert 1.2 not in before, before.get(1.2)  # its attack lies 90 ms after it: no onset or rise paired
    sides = _sides(a, times, az, side.CueConfig())
    got = sides[1.2]
    assert got.anchor == "late attack" and got.cue.side == "right" and got.agrees, got
    assert abs(got.audio_time - 1.29) < 0.005, got.audio_time
    assert all(sides[t].agrees for t in (0.5, 2.0, 2.5))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_an_event_without_a_sound_takes_no_later_sound_nearer_another_event(seed):
    # guard: the flash at 1.1 s makes no sound; the attack at 1.29 s is nearer the flash at 1.2 s, whose sound it is
    a, times, az = _clip(seed, quiet_event=True)
    sides = _sides(a, times, az, side.CueConfig())
    assert 1.1 not in sides, sides.get(1.1)
    assert sides[1.2].cue.side == "right" and sides[1.2].anchor == "late attack"
