"""Where a sound starts (`AudioOnsets.starts`): before a faint lead-in, not at its attack; offsets are read there."""

from __future__ import annotations

import numpy as np
import pytest

from avflow.eval import side
from avflow.eval.clip import measure_clip
from avflow.eval.events import VisualEvents
from avflow.eval.measure import Measure
from avflow.eval.offset import SyncResult
from avflow.eval.onsets import AudioOnsets, OnsetConfig, audio_onsets
from avflow.eval.synthetic import flash_clip, modal_click

SR = 16000


NOISE = 3e-3  # room noise about 50 dB under the clicks (the onset detector's floor is 55 dB under the loudest)


def _noise(seconds: float, rng: np.random.Generator) -> np.ndarray:
    return NOISE * rng.standard_normal(int(seconds * SR))


# the lead-in's noise over the room's: +4 and +5.5 dB in all (from +8 dB this abrupt a lead-in is an onset of its own)
@pytest.mark.parametrize("lead_gain", [1.25, 1.6])
def test_a_faint_lead_in_moves_the_start_and_not_the_attack(lead_gain):
    rng = np.random.default_rng(1)
    audio = _noise(2.0, rng)
    lead, attack = 0.9, 1.0  # a breath of 100 ms, then the word
    audio[14400:16000] += lead_gain * NOISE * rng.standard_normal(1600)
    click = modal_click(SR, "wood", rng, 0.2)
    audio[16000 : 16000 + click.size] += click
    on = audio_onsets(audio, SR)
    first = int(np.argmin(np.abs(on.times - attack)))
    assert abs(on.times[first] - attack) < 0.0015, on.times
    assert abs(on.starts[first] - lead) < 0.004, on.starts
    assert np.all(on.starts <= on.times)


def test_an_attack_out_of_the_noise_starts_at_its_attack_and_lead_in_s_0_turns_starts_off():
    rng = np.random.default_rng(2)
    audio = _noise(2.0, rng)
    for t in (0.4, 1.3):
        click = modal_click(SR, "wood", rng, 0.2)
        audio[int(t * SR) : int(t * SR) + click.size] += click
    on = audio_onsets(audio, SR)
    assert on.times.size == 2 and np.abs(on.starts - on.times).max() < 0.0015, (on.times, on.starts)
    off = audio_onsets(audio, SR, OnsetConfig(lead_in_s=0.0))
    np.testing.assert_array_equal(off.starts, off.times)


def test_the_decaying_tail_of_an_earlier_sound_does_not_move_a_start():
    rng = np.random.default_rng(3)
    audio = _noise(2.0, rng)
    t = np.arange(int(0.5 * SR)) / SR
    audio[8000:16000] += 0.05 * rng.standard_normal(t.size) * np.exp(-t / 0.08)  # rings down
    click = modal_click(SR, "wood", rng, 0.2)
    audio[16000 : 16000 + click.size] += click
    on = audio_onsets(audio, SR)
    k = int(np.argmin(np.abs(on.times - 1.0)))
    assert abs(on.times[k] - 1.0) < 0.0015 and on.novelty[k] >= OnsetConfig().lead_in_novelty, (on.times, on.novelty)
    assert abs(on.starts[k] - on.times[k]) < 0.0015, on.starts


@pytest.mark.parametrize("delay", [0.06, -0.11])
def test_the_offset_is_measured_from_where_each_sound_starts(delay):
    """Each flash's sound is a 70 ms lead-in (noise that swells in over 5 ms to 5.5 dB over the room's) and then its
    click, both from the flash's side; the sound starts at the lead-in, ``delay`` after the flash. Timed at the
    attack, the offset would read 70 ms late."""
    clip = flash_clip(5, audio_delay_s=0.0, n_events=4)
    rng = np.random.default_rng(5)
    audio = NOISE * rng.standard_normal(clip.audio.shape)
    lead = int(0.07 * SR)
    swell = np.minimum(1.0, np.arange(lead) / (0.005 * SR))
    for event in clip.meta["events"]:
        at = int(round((event["time"] + delay) * SR))
        sound = np.concatenate([1.6 * NOISE * swell * rng.standard_normal(lead), modal_click(SR, "wood", rng, 0.12)])
        for ear, gain in enumerate((1.0, 0.3) if event["side"] == "left" else (0.3, 1.0)):
            audio[ear, at : at + sound.size] += gain * sound
    got = measure_clip(audio.astype(np.float32), SR, clip.frames, clip.fps)
    m = got.sync_offset_ms
    assert m.defined and abs(m.value - 1000 * delay) < 5 and m.confidence >= 0.5, m
    assert sum(s.agrees is True for s in got.sides) == len(clip.meta["events"]), got.sides


def test_an_attack_that_adds_no_energy_over_its_lead_in_is_read_from_the_sound_start():
    """A word whose loud first part (from 0.38 s, louder left) leads into a softer attack at 0.5 s: the window at the
    attack adds no energy over the stretch before it, so the cues are read from the sound's start."""
    rng = np.random.default_rng(4)
    n = SR
    mono = NOISE * rng.standard_normal(n)
    lead, attack = int(0.38 * SR), int(0.5 * SR)
    sound = np.zeros(n)
    sound[lead:attack] = 0.05 * rng.standard_normal(attack - lead)
    sound[attack : attack + int(0.2 * SR)] = 0.02 * rng.standard_normal(int(0.2 * SR))
    audio = np.stack([mono + sound, NOISE * rng.standard_normal(n) + 0.5 * sound])  # (2, N): 6 dB louder left
    width = 64
    events = VisualEvents(np.array([0.5]), np.array(["flash"]), np.array([8.0]), width, np.zeros(1))
    starts = np.array([lead / SR])
    onsets = AudioOnsets(np.array([0.5]), np.ones(1), np.zeros(1), np.ones(1), np.zeros(0), np.zeros(0), starts)
    match = SyncResult(Measure.of(0.0, 1.0), np.array([[0, 0]]), np.zeros(1), np.zeros(1), float("nan"), 1.0)
    at_attack = side.event_cues(audio, SR, np.array([0.5]))[0]
    assert at_attack.side is None and at_attack.reason == side.NO_ENERGY
    read = side.event_sides(audio, SR, onsets, events, match)
    assert len(read) == 1 and read[0].anchor == "sound start" and read[0].agrees is True, read
    assert abs(read[0].audio_time - lead / SR) < 1e-6
    without_start = AudioOnsets(np.array([0.5]), np.ones(1), np.zeros(1), np.ones(1), np.zeros(0), np.zeros(0))
    assert side.event_sides(audio, SR, without_start, events, match)[0].agrees is None
