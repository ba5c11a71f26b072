"""Where a sound starts (`AudioOnsets.starts`): before a faint lead-in, not at its attack; offsets are read there."""

from __future__ import annotations

import numpy as np
import pytest

from avflow.eval.clip import measure_clip
from avflow.eval.onsets import OnsetConfig, audio_onsets
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
