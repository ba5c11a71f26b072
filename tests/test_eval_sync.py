"""Sync offset, visual events, audio onsets and per-event sides (avflow.eval) on synthetic cases with known answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from avflow.cli import main as cli_main
from avflow.eval import side
from avflow.eval.clip import measure_clip
from avflow.eval.events import VisualEvents, brightening_events, detect, is_blank
from avflow.eval.measure import Measure
from avflow.eval.offset import SyncConfig, SyncResult, match_events, pair_nearest, pairing_tolerance
from avflow.eval.onsets import AudioOnsets, audio_onsets
from avflow.eval.synthetic import flash_clip, modal_click, pan_binaural

SR = 16000


def test_measure_is_a_value_or_a_reason():
    assert Measure.of(3.0, 0.4).to_dict() == {"value": 3.0, "confidence": 0.4}
    nan = Measure.of(float("nan"))
    assert not nan.defined and nan.value is None and "not finite" in nan.reason
    assert Measure.undefined("blank video").to_dict() == {"value": None, "reason": "blank video"}
    assert np.isnan(Measure.undefined("x").get()) and Measure.of(2.0).get() == 2.0
    with pytest.raises(ValueError):
        Measure(value=None, defined=False)  # no reason
    with pytest.raises(ValueError):
        Measure(value=1.0, defined=True, confidence=1.5)


def _frames(T=40, size=64, level=40):
    return np.full((T, size, size, 3), level, dtype=np.uint8)


def test_flash_on_counts_once_at_its_first_frame_and_off_never():
    fps = 25.0
    frames = _frames()
    frames[10:13, 20:30, 8:18] = 230  # a 3-frame flash on the left: on at 10, off at 13
    frames[25, 20:30, 46:56] = (120, 200, 255)  # a 1-frame flash on the right
    ev = brightening_events(frames, fps)
    assert np.allclose(ev.times, [10 / fps, 25 / fps])
    assert list(ev.kinds) == ["flash", "flash"] and ev.x[0] < 32 < ev.x[1]
    assert np.all(np.sign(ev.azimuth) == [-1, 1])


def test_fades_count_at_the_first_frame():
    fps = 20.0
    frames = _frames()
    for k, level in zip(range(8, 13), (120, 230, 180, 130, 80)):  # fade-in over 2 frames, fade-out over 3
        frames[k, 20:32, 20:32] = level
    frames[25:37] = np.linspace(40, 240, 12).astype(np.uint8)[:, None, None, None]  # slow fade of the light
    ev = brightening_events(frames, fps)
    assert np.allclose(ev.times, [8 / fps]), ev.times


def test_moving_and_disappearing_objects_are_not_events_but_appearing_ones_and_cuts_are():
    fps = 16.0
    frames = _frames(T=48)
    for k in range(48):  # a bright square sliding 3 px per frame, vanishing at frame 30
        if k < 30:
            frames[k, 10:20, 2 + 2 * k : 12 + 2 * k] = (250, 220, 60)
    frames[36:, 40:52, 40:52] = (60, 220, 90)  # pops in at frame 36 and stays
    frames[44:] = np.clip(frames[44:].astype(int) + 120, 0, 255)  # a cut to brighter content at 44
    ev = brightening_events(frames, fps)
    assert np.allclose(ev.times, [36 / fps, 44 / fps]), ev.times
    assert list(ev.kinds) == ["flash", "global"] and np.isnan(ev.x[1])


def test_blank_video_has_no_score_and_says_why():
    clip = flash_clip(0)
    blank = np.full_like(clip.frames, 128)
    assert is_blank(blank) and not is_blank(clip.frames)
    got = measure_clip(clip.audio, SR, blank, clip.fps)
    for m in got.values().values():
        assert not m.defined and "blank video" in m.reason


def test_generated_clip_metrics_show_the_reason_not_a_score_for_a_blank_video():
    from avflow.commands.demo import metric_line
    from avflow.eval.clip_metrics import clip_av_metrics

    clip = flash_clip(2, audio_delay_s=0.04)
    blank = clip_av_metrics(clip.audio, SR, np.full_like(clip.frames, 30), clip.fps)
    assert {"sync_offset_ms", "side_agreement", "follows_object", "phys_residual_px"} <= set(blank)
    counts = {"n_onsets", "n_visual_events"}  # what was detected: the sound's onsets, and no event in the frames
    assert all(not m.defined and "blank video" in m.reason for k, m in blank.items() if k not in counts)
    assert blank["n_visual_events"].value == 0 and blank["n_onsets"].value >= 1
    assert "undefined: blank video" in metric_line("follows_object", blank["follows_object"])
    seen = clip_av_metrics(clip.audio, SR, clip.frames, clip.fps)
    assert abs(seen["sync_offset_ms"].value - 40) < 5 and seen["side_agreement"].value == 1.0
    assert seen["n_visual_events"].value == 5 and f"{seen['sync_offset_ms'].value:8.3f}" in metric_line(
        "sync_offset_ms", seen["sync_offset_ms"]
    )


def test_silent_audio_and_no_visual_events_are_undefined_with_reasons():
    clip = flash_clip(1)
    silent = measure_clip(np.zeros_like(clip.audio), SR, clip.frames, clip.fps)
    assert not silent.sync_offset_ms.defined and "silent" in silent.sync_offset_ms.reason
    static = clip.frames.copy()
    static[:] = clip.frames[0]  # the scene never changes
    still = measure_clip(clip.audio, SR, static, clip.fps)
    assert not still.sync_offset_ms.defined and "no visual events" in still.sync_offset_ms.reason
    mono = measure_clip(clip.audio.mean(0), SR, clip.frames, clip.fps)
    assert mono.sync_offset_ms.defined and "binaural" in mono.side_agreement.reason


def test_onsets_are_timed_to_the_millisecond_and_the_first_of_a_sound_is_new():
    rng = np.random.default_rng(0)
    audio = 1e-4 * rng.standard_normal(2 * SR)
    starts = (0.3, 0.4, 1.2)  # a sound with two onsets 100 ms apart, then another from quiet
    for t in starts:
        click = modal_click(SR, "wood", rng, 0.2)
        audio[int(t * SR) : int(t * SR) + click.size] += click
    on = audio_onsets(audio, SR)
    assert on.times.size == 3 and np.abs(on.times - starts).max() < 0.0015, on.times
    assert on.novelty[0] > 0.8 and on.novelty[2] > 0.8 and on.novelty[1] < 0.5, on.novelty


@pytest.mark.parametrize("delay", [0.12, -0.2])
def test_offset_sign_audio_late_is_positive(delay):
    clip = flash_clip(2, audio_delay_s=delay)
    got = measure_clip(clip.audio, SR, clip.frames, clip.fps)
    m = got.sync_offset_ms
    assert m.defined and abs(m.value - 1000 * delay) < 3 and m.confidence >= 0.5, m
    assert got.sync.pairs.shape[0] == len(clip.events)


@pytest.mark.parametrize("delay", [0.15, -0.08])
def test_sounds_with_several_onsets_are_anchored_on_their_first(delay):
    clip = flash_clip(4, audio_delay_s=delay, onsets=(0.0, 0.09, 0.21), fade=True, flash_frames=4)
    m = measure_clip(clip.audio, SR, clip.frames, clip.fps).sync_offset_ms
    assert m.defined and abs(m.value - 1000 * delay) < 3, m


def test_periodic_events_are_ambiguous():
    clip = flash_clip(5, audio_delay_s=0.04, period_s=0.2)
    m = measure_clip(clip.audio, SR, clip.frames, clip.fps).sync_offset_ms
    assert not m.defined and "periodic" in m.reason, m
    irregular = flash_clip(5, audio_delay_s=0.04)
    assert measure_clip(irregular.audio, SR, irregular.frames, irregular.fps).sync_offset_ms.defined


def test_an_ambiguous_offset_gives_sides_only_where_every_lag_it_may_be_agrees():
    clip = flash_clip(1, audio_delay_s=0.04, period_s=0.2, duration=3.0)
    got = measure_clip(clip.audio, SR, clip.frames, clip.fps)
    assert not got.sync_offset_ms.defined and got.sync.pairs.size == 0
    lags = [lag for lag, _ in got.sync.candidates]
    assert len(lags) >= 2 and abs(lags[0] - 40) < 3  # the true lag first, the others a period away
    assert all(min(abs(a - b) for b in lags if b != a) > 150 for a in lags)
    truth = [e["side"] for e in clip.meta["events"]]
    heard = {round(s.visual_time, 4): s.cue for s in got.sides}
    for i, (e, want) in enumerate(zip(clip.meta["events"], truth)):
        cue = heard.get(round(e["time"], 4))
        # each lag pairs event i with the sound of event i or a neighbour: a side only when all of them agree
        neighbours = truth[max(0, i - 1) : i + 2]
        if cue is not None and cue.side is not None:
            assert cue.side == want and len(set(neighbours)) == 1 and 0 < i < len(truth) - 1, (i, truth)
        elif 0 < i < len(truth) - 1 and len(set(neighbours)) > 1:
            assert cue is not None and "ambiguous" in cue.reason, (i, cue)
    assert sum(c.side is not None for c in heard.values()) >= 3  # this clip has runs of three alike
    defined = measure_clip(flash_clip(6).audio, SR, flash_clip(6).frames, flash_clip(6).fps).sync
    assert len(defined.candidates) == 1 and defined.candidates[0][0] == defined.offset_ms.value


def test_world_clip_offset_and_contacts():
    from avflow.world.dataset import make_clip

    clip = make_clip(3)
    events, _ = detect(clip.frames, 16.0)
    truth = np.array([e["time"] for e in clip.meta["events"]])
    contacts = events.times[events.kinds == "contact"]
    assert contacts.size >= 3
    assert np.median(np.abs(contacts[:, None] - truth[None]).min(axis=1)) < 0.01  # sub-frame (62.5 ms) contacts
    for delay in (0.0, 0.07):
        shifted = np.zeros_like(clip.audio)
        n = int(delay * SR)
        shifted[:, n:] = clip.audio[:, : clip.audio.shape[1] - n]
        m = measure_clip(shifted, SR, clip.frames, 16.0).sync_offset_ms
        assert m.defined and abs(m.value - 1000 * delay) < 10, (delay, m)


def _fractional_delay(x: np.ndarray, delay: float) -> np.ndarray:
    """x delayed by ``delay`` samples (band-limited: a linear phase in the frequency domain)."""
    n = 4 * x.size
    spec = np.fft.rfft(x, n) * np.exp(-2j * np.pi * np.fft.rfftfreq(n) * delay)
    return np.fft.irfft(spec, n)[: x.size]


@pytest.mark.parametrize("delay", [3.37, -5.81, 0.42])
def test_itd_is_sub_sample_and_positive_when_the_left_ear_leads(delay):
    rng = np.random.default_rng(1)
    x = np.convolve(rng.standard_normal(1200), np.hanning(9), mode="same")  # a noise burst below ~4 kHz
    left, right = x, _fractional_delay(x, delay)  # right lags by `delay` samples: left leads when delay > 0
    got = side.itd_of(left, right, SR)
    assert abs(got.value - 1e6 * delay / SR) < 0.05 * 1e6 / SR, (got, 1e6 * delay / SR)  # within 0.05 sample
    assert got.confidence > 0.8
    assert side.itd_of(right, left, SR).value == pytest.approx(-got.value, abs=3.0)


def test_ild_sign_and_event_sides_follow_the_flashing_square():
    clip = flash_clip(6)
    got = measure_clip(clip.audio, SR, clip.frames, clip.fps)
    assert got.side_agreement.value == 1.0 and got.side_agreement.confidence == 1.0
    truth = [e["side"] for e in clip.meta["events"]]
    assert [s.cue.side for s in got.sides] == truth
    assert all((s.cue.ild_db.value > 0) == (t == "left") for s, t in zip(got.sides, truth))
    assert all((s.cue.itd_us.value > 0) == (t == "left") for s, t in zip(got.sides, truth))
    swapped = measure_clip(clip.audio[::-1], SR, clip.frames, clip.fps)
    assert swapped.side_agreement.value == 0.0
    if got.follows_object.defined:
        assert got.follows_object.value > 0.8 and swapped.follows_object.value < -0.8


def test_cues_are_read_at_the_onset_not_at_the_visual_event():
    clip = flash_clip(8, audio_delay_s=0.2)  # late audio: at the visual event time there is silence
    got = measure_clip(clip.audio, SR, clip.frames, clip.fps)
    assert got.side_agreement.value == 1.0
    at_visual = side.event_cues(clip.audio, SR, clip.events)
    assert sum(c.side is not None for c in at_visual) < len(clip.events)  # what the old measure looked at


def _flashes_heard_off_frame(seed: int, delay: float, shifts: tuple[float, ...], fps: float = 25.0):
    """A :func:`flash_clip`'s frames with its audio made again: event ``i``'s click from its side at ``t_v + delay +
    shifts[i]`` (a flash that began within the frame period around the frame it is first seen in)."""
    clip = flash_clip(seed, fps=fps, n_events=len(shifts))
    rng = np.random.default_rng(seed)
    n = clip.audio.shape[1]
    audio = 1e-4 * rng.standard_normal((2, n))
    for e, shift in zip(clip.meta["events"], shifts):
        click = modal_click(SR, "wood", rng, 0.12)
        mono = np.zeros(n)
        start = int(round((e["time"] + delay + shift) * SR))
        mono[start : start + click.size] = click[: n - start]
        audio += pan_binaural(mono, SR, np.full(n, e["azimuth"]))
    return clip.frames, audio.astype(np.float32), clip.fps, clip.meta["events"]


@pytest.mark.parametrize("shift", [0.017, -0.015])
def test_an_onset_within_the_frame_period_is_paired_and_gives_its_side(shift):
    delay = 0.12
    frames, audio, fps, truth = _flashes_heard_off_frame(11, delay, (0.0, 0.0, shift, 0.0, 0.0))
    got = measure_clip(audio, SR, frames, fps)
    assert got.sync_offset_ms.defined and abs(got.sync_offset_ms.value - 1000 * delay) < 3, got.sync_offset_ms
    assert pairing_tolerance(1 / fps) == pytest.approx(SyncConfig().fine_tolerance_s + 0.5 / fps)
    assert sorted(got.sync.pairs[:, 0]) == [0, 1, 2, 3, 4], got.sync.pairs
    assert [s.cue.side for s in got.sides] == [e["side"] for e in truth]
    assert abs(got.sides[2].audio_time - (truth[2]["time"] + delay + shift)) < 0.002
    exact = match_events(got.onsets, got.events)  # times taken as exact: the 10 ms window leaves it out
    assert sorted(exact.pairs[:, 0]) == [0, 1, 3, 4], exact.pairs


@pytest.mark.parametrize("fps", [25.0, 16.0])
def test_an_onset_far_from_its_event_stays_unpaired(fps):
    delay = -0.09
    frames, audio, fps, truth = _flashes_heard_off_frame(12, delay, (0.0, 0.0, 0.06, 0.0), fps)
    got = measure_clip(audio, SR, frames, fps)
    assert got.sync_offset_ms.defined and abs(got.sync_offset_ms.value - 1000 * delay) < 3, got.sync_offset_ms
    assert pairing_tolerance(1 / fps) < 0.06
    assert sorted(got.sync.pairs[:, 0]) == [0, 1, 3], got.sync.pairs
    # unpaired, event 2's sound is still its own: the first attack after the window, nearer it than any other event
    # (`side._late_attack`), read with the energy-rise rules
    assert [s.anchor for s in got.sides] == ["onset", "onset", "late attack", "onset"]
    assert [s.cue.side for s in got.sides] == [e["side"] for e in truth]


def test_pairs_are_one_to_one_and_the_nearest_wins():
    visual = np.array([1.0, 2.0, 2.03, 3.0])
    audio = np.array([1.082, 1.104, 2.125, 3.16])  # at lag 0.1: event 0 has onsets 18 ms early and 4 ms late
    # the nearer onset wins event 0; events 1 and 2 compete for onset 2 (25 and 5 ms off): event 2 gets it and
    # event 1 stays unpaired (one onset is never paired twice); event 3's onset is 60 ms off
    for tolerance in (0.03, 0.05):
        assert pair_nearest(audio, visual, 0.1, tolerance).tolist() == [[0, 1], [2, 2]]
    assert pair_nearest(audio, visual, 0.1, 0.07).tolist() == [[0, 1], [2, 2], [3, 3]]
    assert pair_nearest(audio, visual, 0.1, 0.003).shape == (0, 2)


def test_compare_event_cues_reports_codec_errors():
    clip = flash_clip(9)
    times = audio_onsets(clip.audio, SR).times
    same = side.compare_event_cues(clip.audio, clip.audio, SR, times)
    assert same["ild_error_db"].value == 0 and same["itd_error_us"].value == 0
    louder_left = clip.audio * np.array([[10 ** (2 / 20)], [1.0]], dtype=np.float32)
    got = side.compare_event_cues(louder_left, clip.audio, SR, times)
    assert got["ild_error_db"].value == pytest.approx(2.0, abs=0.01)
    assert got["itd_error_us"].value < 1.0


def test_follows_object_is_undefined_without_a_tracked_object():
    from avflow.eval.physics import Tracks

    clip = flash_clip(10)
    none = Tracks(np.full((len(clip.frames), 0, 2), np.nan), np.zeros((len(clip.frames), 0)), (64, 64))
    m = side.follows_object(clip.audio, SR, none, clip.fps)
    assert not m.defined and "no object tracked" in m.reason


def _write_m4a(path: Path, audio: np.ndarray, rate: int) -> Path:
    """(C, N) float audio as AAC in an .m4a (FFmpeg's own encoder)."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=rate, layout="stereo" if audio.shape[0] == 2 else "mono")
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio, dtype=np.float32), format="fltp",
                                           layout=stream.layout.name)  # fmt: skip
        frame.sample_rate = rate
        for packet in (*stream.encode(frame), *stream.encode(None)):
            out.mux(packet)
    return path


def test_cli_eval_skips_unreadable_clips_and_writes_a_report(tmp_path, capsys):
    from avflow.data.media import write_video

    folder = tmp_path / "clips"
    folder.mkdir()
    for seed, delay in ((0, 0.1), (1, -0.05)):
        clip = flash_clip(seed, audio_delay_s=delay)
        write_video(folder / f"c{seed}.mp4", clip.frames, clip.fps, clip.audio, SR)
        (folder / f"c{seed}.json").write_text(json.dumps(clip.meta))
    (folder / "broken.mp4").write_bytes(b"not a video")
    _write_m4a(folder / "voice.m4a", flash_clip(2).audio, SR)  # a sound alone, compressed: an audio-only clip
    out, report = tmp_path / "res.json", tmp_path / "report"
    assert cli_main(["eval", str(folder), "--json", str(out), "--report", str(report)]) == 0
    result = json.loads(out.read_text())
    assert result["n_clips"] == 3 and result["n_skipped"] == 1 and "broken" in result["skipped"]
    assert "voice" in result["clips"]  # it was passed over without a word
    assert result["summary"]["sync_error_ms"]["within_20ms"] == 1.0
    assert abs(result["clips"]["c0"]["sync_offset_ms"] - 100) < 10  # AAC at 16 kHz smears clicks a few ms early
    assert (report / "index.html").is_file() and (report / "timelines" / "c0.png").is_file()
    printed = capsys.readouterr().out
    assert "c0: sync_offset_ms=+" in printed and "nan" not in printed.lower()
    only_broken = tmp_path / "broken"
    only_broken.mkdir()
    (only_broken / "x.mp4").write_bytes(b"nope")
    assert cli_main(["eval", str(only_broken)]) == 2
    assert cli_main(["eval", str(tmp_path / "missing")]) == 2
    assert cli_main(["eval", str(out)]) == 2  # a file that is not a clip
    assert cli_main(["eval", str(folder / "c0.mp4"), "--ref", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and "no readable clip" in err[0] and "missing: not found" in err[1], err
    assert "res.json: not a clip" in err[2] and "give a file to pair with one clip's file" in err[3], err
    # one clip's file: scored as a folder of one (it was "not a folder")
    assert cli_main(["eval", str(folder / "c0.mp4"), "--json", str(tmp_path / "one.json")]) == 0
    one = json.loads((tmp_path / "one.json").read_text())
    assert one["n_clips"] == 1 and one["clips"]["c0"]["sync_offset_ms"] == result["clips"]["c0"]["sync_offset_ms"]
    assert "c0: sync_offset_ms=+" in capsys.readouterr().out


def _click_pair(itd_samples: int, gain_left: float, seed: int = 0) -> np.ndarray:
    """A wood click at 0.5 s, the right ear delayed by ``itd_samples`` (> 0: left leads) and the left scaled."""
    click = modal_click(SR, "wood", np.random.default_rng(seed), 0.12)
    audio = 1e-5 * np.random.default_rng(seed + 1).standard_normal((2, SR))
    start = SR // 2
    audio[0, start : start + click.size] += gain_left * click
    audio[1, start + itd_samples : start + itd_samples + click.size] += click
    return audio


def test_event_side_is_undecided_when_ild_and_itd_disagree():
    left = side.event_cues(_click_pair(5, 2.0), SR, np.array([0.5]))[0]
    assert left.side == "left" and left.reason == ""
    torn = side.event_cues(_click_pair(-5, 2.0), SR, np.array([0.5]))[0]  # louder left, but the right ear leads
    assert torn.ild_db.value > 0 > torn.itd_us.value
    assert torn.side is None and "opposite sides" in torn.reason


def test_event_cues_undefined_where_no_energy_is_added():
    audio = _click_pair(5, 2.0)
    cue = side.event_cues(audio, SR, np.array([0.53]))[0]  # 30 ms into the ringing click: no new sound starts
    assert cue.side is None and not cue.ild_db.defined and "no energy added" in cue.ild_db.reason
    assert side.event_cues(audio, SR, np.array([0.5]))[0].ild_db.defined


def _tone_pair(itd_samples: int, gain_left: float, freq: float = 1500.0) -> np.ndarray:
    """A steady tone burst at 0.5 s (100 ms), the right ear delayed by ``itd_samples`` and the left scaled."""
    t = np.arange(int(0.1 * SR)) / SR
    tone = np.sin(2 * np.pi * freq * t)
    audio = 1e-5 * np.random.default_rng(3).standard_normal((2, SR))
    start = SR // 2
    audio[0, start : start + tone.size] += gain_left * tone
    audio[1, start + itd_samples : start + itd_samples + tone.size] += tone
    return audio


def test_itd_side_margin_is_high_for_a_click_and_low_for_a_tone():
    lo, hi = SR // 2 - 48, SR // 2 + 240  # the cue window of a sound at 0.5 s
    click, tone = _click_pair(3, 1.0), _tone_pair(3, 1.0)
    assert side.itd_side_margin(click[0, lo:hi], click[1, lo:hi], SR) > 0.5
    # inside a steady 1.5 kHz tone, a 3 samples' lead correlates as well as 1/1500 s − 3 samples' lag: no side
    mid = slice(lo + 800, hi + 800)
    assert side.itd_side_margin(tone[0, mid], tone[1, mid], SR) < 0.1
    assert side.itd_side_margin(np.zeros(100), np.zeros(100), SR) == 0.0


def test_the_much_stronger_cue_decides_when_the_cues_disagree():
    # a tone 6 dB louder on the right whose left ear leads: the ILD is clear, the tone's ITD fits both sides
    tone = side.event_cues(_tone_pair(3, 0.5), SR, np.array([0.5]))[0]
    assert tone.ild_db.value < -3 and tone.itd_us.value > 0
    assert tone.side == "right" and tone.reason == ""
    strict = side.event_cues(_tone_pair(3, 0.5), SR, np.array([0.5]), side.CueConfig(dominance=1e9))[0]
    assert strict.side is None and "opposite sides" in strict.reason


def test_energy_rise_finds_a_soft_start_and_nothing_in_steady_noise():
    rng = np.random.default_rng(4)
    audio = 1e-3 * rng.standard_normal((2, SR))
    start = int(0.5 * SR)
    ramp = np.linspace(0.0, 1.0, int(0.04 * SR))  # a word fading in over 40 ms
    audio[:, start : start + ramp.size] += 0.3 * ramp * rng.standard_normal(ramp.size)
    found = side.energy_rise(audio, SR, 0.48, 0.53)
    assert found is not None and 0.5 <= found <= 0.51
    assert side.energy_rise(audio, SR, 0.2, 0.25) is None  # noise only
    assert side.energy_rise(audio, SR, 0.0, 0.05) is None  # no level before the window to compare with


def test_an_event_without_a_paired_onset_is_read_at_the_energy_rise():
    clip = flash_clip(6)
    onsets = audio_onsets(clip.audio, SR)
    events = detect(clip.frames, clip.fps)[0]
    match = match_events(onsets, events, frame_period_s=1.0 / clip.fps)
    assert match.pairs.shape[0] == len(events) >= 2
    dropped = type(match)(match.offset_ms, match.pairs[1:], match.lags_ms, match.scores, match.runner_up_ms, 1.0)
    tol = pairing_tolerance(1.0 / clip.fps)
    plain = side.event_sides(clip.audio, SR, onsets, events, dropped)
    anchored = side.event_sides(clip.audio, SR, onsets, events, dropped, anchor_window_s=tol)
    assert len(plain) == len(events) - 1 and len(anchored) == len(events)
    first = anchored[0]
    assert first.anchor == "energy rise" and first.agrees is True
    assert abs(first.audio_time - onsets.times[match.pairs[0, 1]]) < 0.005
    assert [s.anchor for s in anchored[1:]] == ["onset"] * (len(events) - 1)


def test_at_an_energy_rise_the_cues_must_agree():
    # the tone of the test above (6 dB louder right, left ear leads) with no onset paired: read at its energy rise,
    # where a soft start's cues may be mostly noise, so the much stronger ILD does not overrule the ITD there
    audio = _tone_pair(3, 0.5)
    width = 64
    events = VisualEvents(np.array([0.2, 0.5]), np.array(["flash", "flash"]), np.array([8.0, 56.0]), width, np.zeros(2))
    onsets = AudioOnsets(*(np.array([0.2]),) * 4, np.zeros(0), np.zeros(0))
    match = SyncResult(Measure.of(0.0, 1.0), np.array([[0, 0]]), np.zeros(1), np.zeros(1), float("nan"), 1.0)
    read = side.event_sides(audio, SR, onsets, events, match, anchor_window_s=0.03)
    assert [s.anchor for s in read] == ["onset", "energy rise"]
    assert abs(read[1].audio_time - 0.5) < 0.005 and read[1].visual_side == "right"
    assert read[1].cue.side is None and "opposite sides" in read[1].cue.reason
    assert side.event_cues(audio, SR, np.array([read[1].audio_time]))[0].side == "right"  # at an onset it decides


def test_a_weak_cue_gives_no_side_below_min_evidence():
    audio = _click_pair(0, 1.06)  # 0.5 dB louder left, no delay: ILD evidence about 0.25
    weak = side.event_cues(audio, SR, np.array([0.5]))[0]
    assert weak.side == "left"
    strict = side.event_cues(audio, SR, np.array([0.5]), side.CueConfig(min_evidence=0.5))[0]
    assert strict.side is None and "too weak" in strict.reason
    assert side.event_cues(_click_pair(0, 2.0), SR, np.array([0.5]), side.CueConfig(min_evidence=0.5))[0].side == "left"
