"""`avflow binaural`, `avflow foley --binaural` and the UI's binaural tab: no track over 0 dBFS and a turned-down one
said (one helper for all), `--audio mix` refused wherever the binaural sound is the video's own audio (CLI and UI, one
check), one monotone progress count over a cue model's two stages, and progress (so the UI's cancel) in spatialise
mode, its track unchanged (tiny media and random weights: nothing here needs a trained model)."""

from __future__ import annotations

import argparse
import os
import threading

import numpy as np
import pytest
import soundfile as sf
import torch
from test_binaural import SR, moving_square, tiny_codecs, tiny_model
from test_interaural_cues import tiny_cue_model

from avflow.data.media import write_audio, write_video
from avflow.errors import ConfigError, Note
from avflow.pipelines import binaural as binaural_pipeline
from avflow.pipelines.binaural import BinauralPipeline, binaural_track


def _frames(t: int = 20) -> np.ndarray:
    return np.repeat(np.repeat(moving_square(t=t, h=16, w=32), 2, axis=1), 2, axis=2)  # (t, 32, 64, 3), 16 fps


def _loud(seconds: float, seed: int = 0) -> np.ndarray:
    """(1, S) loud noise at 16 kHz, clipped at 0.98 (many samples at its peak): its binaural render (the near ear's
    head-shadow boost, a level difference between the ears) peaks over full scale."""
    noise = np.random.default_rng(seed).standard_normal((1, int(seconds * SR))) * 2
    return np.clip(noise, -0.98, 0.98).astype(np.float32)


def _video(tmp_path, name: str = "in.mp4", t: int = 20, audio: np.ndarray | None = None):
    own = np.random.default_rng(1).standard_normal((1, t * 1000)).astype(np.float32) * 0.05 if audio is None else audio
    return write_video(tmp_path / name, _frames(t), 16, audio=own, sample_rate=SR)


# ------------------------------------------------------------------------------------------------ 1: 0 dBFS


def test_foley_binaural_writes_no_sample_over_full_scale_and_says_it_turned_the_track_down(tmp_path):
    """`avflow foley --binaural` wrote its spatialised track as rendered: a float WAV peaking at 1.5 (+3.5 dBFS),
    clipped in the AAC. Now the peak is brought to 0.99 by the helper `avflow binaural` uses, and a note says so."""
    from avflow.commands.foley import process

    video = _video(tmp_path)
    loud = _loud(1.25)

    class Loud:  # a foley model whose sound is loud
        def generate_video(self, video, prompt, negative_prompt, *, duration, seed, progress):
            return argparse.Namespace(audio=torch.from_numpy(loud[0]), sample_rate=SR, duration=1.25)

    args = argparse.Namespace(prompt=None, negative_prompt=None, duration=None, seed=0, binaural=True, audio="replace")
    out, wav = tmp_path / "out.mp4", tmp_path / "out.wav"
    said = r"in.mp4: the binaural track was scaled by -\d+\.\d dB to keep the peak under 0 dBFS"
    with pytest.warns(Note, match=said):
        process(Loud(), args, video, out, wav)
    written, _ = sf.read(wav, dtype="float32")
    assert written.shape[1] == 2 and 0.98 < np.abs(written).max() <= 0.99 + 1e-6


def test_the_peak_helper_turns_down_only_a_track_over_its_ceiling():
    from avflow.pipelines.spatialise import gain_note, under_full_scale

    quiet = np.array([[0.5, -0.2], [0.1, 0.3]], np.float32)
    same, gain = under_full_scale(quiet)
    assert same is quiet and gain == 1.0 and gain_note(gain) == ""
    scaled, gain = under_full_scale(quiet * 3)
    assert np.abs(scaled).max() == pytest.approx(0.99) and gain == pytest.approx(0.99 / 1.5)
    assert scaled.dtype == np.float32 and gain_note(gain) == "scaled by -3.6 dB to keep the peak under 0 dBFS"


# ------------------------------------------------------------------------------------------------ 2: comb filter


def test_mix_with_the_video_itself_as_mono_is_refused_in_one_line(tmp_path, capsys):
    """`--mono VIDEO --audio mix` spatialised the video's own audio and mixed it with itself (the refusal looked only
    at a missing --mono): refused as the same file (any path to it), one line, nothing written."""
    from avflow.cli import main

    src = _video(tmp_path)
    alias = tmp_path / "alias.mp4"
    os.link(src, alias)  # another name for the same file
    out = tmp_path / "o.mp4"
    for mono in (src, alias):
        assert main(["binaural", str(src), "--mono", str(mono), "-o", str(out), "--mode", "spatialise",
                     "--audio", "mix"]) == 2  # fmt: skip
        err = capsys.readouterr().err.strip()
        assert "--audio mix would add the video's sound to its own spatialised copy" in err and "\n" not in err
        assert not out.exists()
    help_text = main_help(capsys)
    assert "a copy of that audio in another file given as --mono makes the same comb filter" in help_text


def main_help(capsys) -> str:
    """`avflow binaural --help` as one line of words."""
    from avflow.cli import main

    assert main(["binaural", "--help"]) == 0
    return " ".join(capsys.readouterr().out.split())


def test_the_ui_refuses_mix_with_the_video_s_own_spatialised_sound_before_any_work(tmp_path, monkeypatch):
    """The UI's binaural tab had no such refusal at all: `existing_audio="mix"` in spatialise mode wrote the comb
    filter. Now the CLI's check, one line, before the track is made."""
    from avflow.ui.services import UISettings, generate_binaural

    monkeypatch.setattr(binaural_pipeline, "binaural_track", lambda *a, **k: pytest.fail("the track was made"))
    settings = UISettings(steps=1, output_dir=tmp_path / "ui")
    with pytest.raises(ConfigError, match="mix would add the video's sound to its own spatialised copy") as err:
        generate_binaural(_video(tmp_path), settings, mode="spatialise", existing_audio="mix")
    assert "\n" not in str(err.value) and not list(settings.output_dir.glob("*/*"))


def test_the_mix_check_refuses_the_video_s_own_sound_in_either_mode(tmp_path):
    from avflow.pipelines.binaural import check_mix

    src, other = _video(tmp_path), _video(tmp_path, "other.mp4")
    refused = [("spatialise", None), ("spatialise", src), ("model", src)]
    allowed = [("model", None), ("spatialise", other), ("model", other)]
    for mode, mono in refused:
        with pytest.raises(ConfigError, match="comb filter"):
            check_mix(src, mono, mode=mode, existing_audio="mix", has_audio=True)
    for mode, mono in allowed:
        check_mix(src, mono, mode=mode, existing_audio="mix", has_audio=True)
    for mode, mono in refused:  # keep, replace, or nothing of its own to mix: nothing to refuse
        check_mix(src, mono, mode=mode, existing_audio="keep", has_audio=True)
        check_mix(src, mono, mode=mode, existing_audio="mix", has_audio=False)


# ------------------------------------------------------------------------------------------------ 3: said


def test_a_loud_track_turned_down_is_said_and_the_model_s_mix_is_the_mono_times_that_gain(tmp_path, monkeypatch):
    """A loud input was turned down by the peak guard without a word: in model mode (L+R)/2 is then the mono times
    the gain, not the mono. The track says its gain (the whole track times it); the UI's summary says it."""
    from avflow.ui.services import UISettings, generate_binaural

    src = _video(tmp_path)
    mono = write_audio(tmp_path / "loud.wav", _loud(1.25), SR)

    def make():
        pipeline = BinauralPipeline(tiny_model(), tiny_codecs().audio)
        return binaural_track(src, mode="model", mono=mono, steps=2, pipeline=pipeline)

    track = make()
    monkeypatch.setattr(binaural_pipeline, "under_full_scale", lambda audio: (audio, 1.0))
    raw = make().audio  # as generated
    assert track.gain == pytest.approx(0.99 / np.abs(raw).max()) and track.gain < 1
    np.testing.assert_allclose(track.audio, raw * track.gain, rtol=1e-6, atol=1e-7)
    monkeypatch.undo()
    loud_own = _video(tmp_path, "loud.mp4", t=20, audio=_loud(1.25))
    result = generate_binaural(loud_own, UISettings(steps=1, output_dir=tmp_path / "ui"), mode="spatialise")
    assert "spatialise, scaled by -" in result.summary and "to keep the peak under 0 dBFS" in result.summary


def test_the_cli_line_says_the_gain(tmp_path, capsys):
    from avflow.cli import main

    src = _video(tmp_path)
    mono = write_audio(tmp_path / "loud.wav", _loud(1.25), SR)
    assert main(["binaural", str(src), "--mono", str(mono), "-o", str(tmp_path / "o.mp4"), "--mode",
                 "spatialise"]) == 0  # fmt: skip
    line = capsys.readouterr().out
    assert "stereo 16 kHz, scaled by -" in line and " dB to keep the peak under 0 dBFS; " in line, line
    assert "scaled down as a whole to keep its peak under it" in main_help(capsys)


# ------------------------------------------------------------------------------------------------ 4: two stages


def test_a_cue_model_s_two_stages_are_one_monotone_count_of_their_real_steps(tmp_path, monkeypatch):
    """The v2a sound (5 steps here) and the placing (2) were counted as two equal stages: (5, 10), then (3, 4), a bar
    going backwards. Now one count of 7."""

    def v2a(video, n, seed, joint=None, progress=None):
        for step in range(1, 6):
            progress(step, 5)
        return np.random.default_rng(0).standard_normal(n).astype(np.float32) * 0.1

    monkeypatch.setattr(binaural_pipeline, "v2a_mono", v2a)
    heard = []
    binaural_track(_video(tmp_path), mode="model", steps=2, pipeline=BinauralPipeline(tiny_cue_model()),
                   progress=lambda *a: heard.append(a))  # fmt: skip
    assert heard == [(k, 7) for k in range(1, 8)]


# ------------------------------------------------------------------------------------------------ 5: spatialise


def test_spatialise_mode_reports_progress_and_its_track_is_unchanged(tmp_path, monkeypatch):
    """Spatialising reported nothing until the track was made (48 s of silence on a minute of 720p). Now each window
    of the video read, then the placing, counts; the frames and the track are the same as read in one call."""
    from avflow.data.media import video_frames
    from avflow.pipelines.binaural import read_mono
    from avflow.pipelines.spatialise import spatialise

    monkeypatch.setattr(binaural_pipeline, "READ_WINDOW_S", 0.25, raising=False)
    src = _video(tmp_path, t=20)  # 1.25 s: 5 windows, then the placing
    heard = []
    track = binaural_track(src, mode="spatialise", progress=lambda *a: heard.append(a))
    assert heard == [(k, 6) for k in range(1, 7)]
    from avflow.pipelines.binaural import read_frames
    from avflow.pipelines.spatialise import under_full_scale

    frames, fps, duration = video_frames(src)
    windowed = read_frames(src)
    assert np.array_equal(windowed[0], frames) and windowed[1:] == (fps, duration)
    n = int(round(duration * SR))
    expected, _ = under_full_scale(spatialise(read_mono(src, n, SR), SR, frames, fps))
    assert np.array_equal(track.audio, expected)


def test_the_ui_cancels_spatialising_between_windows(tmp_path, monkeypatch):
    """A closed tab could not stop the spatialiser: its progress heard only (0, 1) before and (1, 1) after."""
    from avflow.ui import services
    from avflow.ui.services import UISettings, generate_binaural

    monkeypatch.setattr(binaural_pipeline, "READ_WINDOW_S", 0.25, raising=False)
    settings = UISettings(steps=1, output_dir=tmp_path / "ui")
    gone, heard = threading.Event(), []

    def progress(done: int, total: int) -> None:
        heard.append((done, total))
        if done:  # the page went away while the first window was read
            gone.set()

    with pytest.raises(services.Cancelled, match="cancelled at step 2 of 6"):
        generate_binaural(_video(tmp_path), settings, mode="spatialise",
                          progress=services.cancellable(progress, gone.is_set))  # fmt: skip
    assert heard == [(0, 1), (1, 6)] and not list(settings.output_dir.glob("*/*"))


def test_the_cli_shows_the_spatialiser_s_progress(tmp_path, monkeypatch, capsys):
    from avflow.cli import main

    monkeypatch.setattr(binaural_pipeline, "READ_WINDOW_S", 0.25, raising=False)
    assert main(["binaural", str(_video(tmp_path)), "-o", str(tmp_path / "o.mp4"), "--mode", "spatialise"]) == 0
    err = capsys.readouterr().err
    assert "spatialise: 100%" in err and "6/6" in err, err
