"""`avflow generate` / `avflow demo` and the joint pipeline (default model v2) with a tiny RANDOM model folder.

The folder is built here (`helpers.write_tiny_default_model`: binaural left/right joint model, tiny world codecs and
their checksum), so nothing depends on the shipped weights except the tests marked `needs_shipped_v2`. Nothing here
judges generation quality: the weights are random. What is checked: every task end to end, exact durations, the
given media kept as they are, windows of the model's length for long inputs (and their clean conditions), one-line
errors, nothing cut short.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from helpers import (
    WeightReads,
    listing,
    moving_square,
    prores_mov,
    shipped_default_model_is_v2,
    write_tiny_default_model,
)
from safetensors.torch import load_file

from avflow.cli import main
from avflow.data.media import probe, read_audio, read_video, write_audio, write_video
from avflow.errors import AvflowError, ConfigError, MediaError, WeightsError
from avflow.pipelines import default_model
from avflow.pipelines.default_model import WEIGHT_FILES, load_default_model, read_default_config

REPO = Path(__file__).resolve().parents[1]
SR, FPS, SIZE = 16000, 16, 32  # the tiny model's clip format
CLIP_MEASURES = ("sync_offset_ms", "side_agreement", "follows_object", "phys_residual_px")  # GeneratedClip.metrics()
needs_shipped_v2 = pytest.mark.skipif(
    not shipped_default_model_is_v2(),
    reason="the shipped default model is still v1: runs once the v2 weights are in avflow/assets/default_model",
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return write_tiny_default_model(tmp_path_factory.mktemp("tiny_v2"))


@pytest.fixture(scope="module")
def pipe(model_dir):
    return load_default_model(model_dir)


@pytest.fixture
def shipped(model_dir, monkeypatch) -> Path:
    """The tiny folder in place of the shipped one (for `avflow demo`, which always uses the shipped model)."""
    monkeypatch.setattr(default_model, "default_model_dir", lambda: model_dir)
    return model_dir


def stereo_clicks(seconds: float, rate: int = SR) -> np.ndarray:
    """(2, N) float32: a decaying click every 0.3 s, louder on the left, with a little noise."""
    n = round(seconds * rate)
    audio = np.random.default_rng(1).standard_normal((2, n)).astype(np.float32) * 0.01
    for t in np.arange(0.1, seconds, 0.3):
        i = int(t * rate)
        burst = (0.5 * np.exp(-np.arange(400) / 60) * np.sin(np.arange(400) * 0.7)).astype(np.float32)[: n - i]
        audio[0, i : i + burst.size] += burst
        audio[1, i : i + burst.size] += 0.3 * burst
    return audio


def clip_file(path: Path, seconds: float, *, audio_rate: int | None = SR, fps: float = FPS, size: int = 64) -> Path:
    """An mp4 with a bouncing square (and clicks at `audio_rate`, or no audio)."""
    frames = moving_square(t=round(seconds * fps), h=size, w=size)
    audio = stereo_clicks(seconds, audio_rate) if audio_rate else None
    return write_video(path, frames, fps, audio, audio_rate)


def video_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.video[0]) if p.size]


# ------------------------------------------------------------------------------------------------------------------
# the model folder


def test_the_tiny_folder_is_the_export_format(model_dir):
    config = read_default_config(model_dir)
    assert config.joint.audio_streams == ("left", "right") and config.duration == 2.0
    for name in WEIGHT_FILES:
        assert (model_dir / name).is_file()
    state = load_file(model_dir / "joint.safetensors")
    assert {v.dtype for v in state.values()} == {torch.float16}


def test_codecs_of_another_training_are_a_one_line_error(tmp_path, capsys):
    other = write_tiny_default_model(tmp_path / "other", checksum="0" * 64)
    with pytest.raises(WeightsError, match="trained with world codecs 000000000000") as err:
        load_default_model(other)
    assert "\n" not in str(err.value)
    assert main(["generate", "a ball", "--model", str(other), "-o", str(tmp_path / "o.mp4"), "--steps", "1"]) == 2
    message = capsys.readouterr().err.strip()
    assert "trained with world codecs" in message and "\n" not in message
    assert not (tmp_path / "o.mp4").exists()


def test_a_model_path_that_is_not_a_model_folder_says_what_it_is(tmp_path, model_dir, capsys):
    (tmp_path / "empty").mkdir()
    a_file = tmp_path / "config.json"
    shutil.copy(model_dir / "config.json", a_file)
    cases = {"nothing": "not found", "empty": "no config.json here; a model folder holds config.json and joint",
             "config.json": "is a file; give the model's folder"}  # fmt: skip
    for name, message in cases.items():
        assert main(["generate", "a ball", "--model", str(tmp_path / name), "-o", str(tmp_path / "o.mp4")]) == 2
        err = capsys.readouterr().err.strip()
        assert f"{tmp_path / name}: {message}" in err and "\n" not in err, err
    other = shutil.copytree(model_dir, tmp_path / "mine")  # weights that do not fit its config: its model, not ours
    config = json.loads((other / "config.json").read_text())
    config["joint"]["video"]["num_layers"] += 1
    (other / "config.json").write_text(json.dumps(config))
    assert main(["generate", "a ball", "--model", str(other), "-o", str(tmp_path / "o.mp4")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{other}: cannot load its model: " in err and "default" not in err, err


def test_a_first_format_folder_is_a_one_line_error(tmp_path, model_dir):
    old = tmp_path / "v1"
    shutil.copytree(model_dir, old)
    config = json.loads((old / "config.json").read_text())
    (old / "config.json").write_text(json.dumps({**config, "video_ae": {"channels": 16}, "audio_vae": {}}))
    with pytest.raises(WeightsError, match="first format") as err:
        read_default_config(old)
    assert "\n" not in str(err.value)
    mono = {**config, "joint": {**config["joint"], "audio_streams": ["audio"]}}
    (old / "config.json").write_text(json.dumps(mono))
    with pytest.raises(ConfigError, match="binaural"):
        read_default_config(old)


def test_per_stream_guidance_in_the_folder_is_read_and_checked(tmp_path, model_dir):
    folder = tmp_path / "per_stream"
    shutil.copytree(model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    sampling = {**config["sampling"], "stream_cfg_strength": {"video": 4.5}}
    (folder / "config.json").write_text(json.dumps({**config, "sampling": sampling}))
    assert read_default_config(folder).sampling.stream_cfg_strength == {"video": 4.5}
    sampling["stream_cfg_strength"] = {"audio": 4.5}
    (folder / "config.json").write_text(json.dumps({**config, "sampling": sampling}))
    with pytest.raises(ConfigError, match="sampling: stream_cfg_strength names audio, not a stream") as err:
        read_default_config(folder)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------------------------------
# every task through `avflow generate`


def test_t2av_writes_the_clip_its_spectrogram_and_defined_measures(model_dir, tmp_path, capsys):
    out, png = tmp_path / "clip.mp4", tmp_path / "clip.png"
    assert main(["generate", "a red rubber ball bounces on the left", "--model", str(model_dir), "--duration", "1",
                 "--seed", "3", "-o", str(out), "--spectrogram", str(png), "--metrics"]) == 0  # fmt: skip
    info = probe(out)
    assert info.has_video and info.n_frames == 16 and (info.width, info.height) == (SIZE, SIZE)
    assert info.has_audio and info.audio_channels == 2 and info.audio_sample_rate == SR
    audio, sr = read_audio(out)
    assert abs(audio.shape[1] / sr - 1.0) < 0.05 and float(audio.abs().max()) > 0
    captured = capsys.readouterr()
    assert f"wrote {out}" in captured.out and str(png) in captured.out
    assert "generate" in captured.err and "2/2" in captured.err  # the progress bar: the model's 2 steps
    lines = [line for line in captured.out.splitlines() if line.startswith("  ")]
    assert {line.split()[0] for line in lines} >= set(CLIP_MEASURES)
    assert "nan" not in captured.out.lower()  # every measure is a value or `undefined: why`
    from PIL import Image

    assert Image.open(png).size[1] == 2 * 196  # a left and a right panel


def test_same_seed_same_clip_and_exact_lengths(pipe):
    two = pipe.sampling.override(steps=2)
    a = pipe.generate("a blue ball rolls to the right", seed=1, sampling=two, duration=0.5)
    b = pipe.generate("a blue ball rolls to the right", seed=1, sampling=two, duration=0.5)
    c = pipe.generate("a blue ball rolls to the right", seed=2, sampling=two, duration=0.5)
    assert torch.equal(a.frames, b.frames) and torch.equal(a.audio, b.audio)
    assert not torch.equal(a.audio, c.audio)
    video_only = pipe.generate("a blue ball rolls to the right", seed=1, duration=0.5,
                               sampling=two.with_stream_cfg({"video": 1.0}))  # fmt: skip
    assert not torch.equal(a.frames, video_only.frames)  # its own guidance for the video stream
    with pytest.raises(ConfigError, match="names audio, not a stream"):
        pipe.generate("a ball", sampling=two.with_stream_cfg({"audio": 2.0}))
    assert a.frames.dtype == torch.uint8 and a.frames.shape == (8, SIZE, SIZE, 3)
    assert a.audio.dtype == torch.float32 and a.audio.shape == (2, 8000) and a.duration == 0.5
    odd = pipe.generate("a ball", sampling=two.override(steps=1), duration=1.1)  # 17.6 frames: to the nearest frame
    assert odd.frames.shape[0] == 18 and odd.audio.shape == (2, 18000) and odd.windows == 1


def test_a2v_keeps_the_whole_sound_of_a_long_input(model_dir, pipe, tmp_path, capsys):
    """5 s of audio with a 2 s model: three windows, every sample kept, a video for all of it."""
    sound = write_audio(tmp_path / "sound.wav", stereo_clicks(5.0), SR)
    clip = pipe.generate("a ball", task="a2v", audio_path=sound, sampling=pipe.sampling.override(steps=1))
    assert torch.equal(clip.audio, read_audio(sound)[0])  # the given audio, exactly
    assert clip.frames.shape[0] == 80 and clip.duration == 5.0 and clip.windows == 3
    odd = write_audio(tmp_path / "odd.wav", stereo_clicks(3.3), SR)
    clip = pipe.generate("a ball", task="a2v", audio_path=odd, sampling=pipe.sampling.override(steps=1))
    assert clip.audio.shape == (2, 52800) and clip.frames.shape[0] == math.ceil(3.3 * FPS)  # frames cover the end
    out = tmp_path / "a2v.mp4"
    assert main(["generate", "a ball", "--task", "a2v", "--audio-file", str(sound), "--model", str(model_dir),
                 "--steps", "1", "-o", str(out)]) == 0  # fmt: skip
    assert "3 windows of 2 s" in capsys.readouterr().out
    info = probe(out)
    assert info.n_frames == 80 and info.audio_channels == 2 and abs(info.duration - 5.0) < 0.07


def test_v2a_writes_onto_the_whole_given_video(model_dir, pipe, tmp_path, capsys):
    """A 5 s 64x64 video with its own 48 kHz audio: its packets unchanged, a new 16 kHz track of all 5 s."""
    video = clip_file(tmp_path / "in.mp4", 5.0, audio_rate=48000)
    out = tmp_path / "out.mp4"
    assert main(["generate", "a ball", "--task", "v2a", "--video", str(video), "--model", str(model_dir), "--steps",
                 "1", "-o", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "kept as track 2 (--audio keep)" in printed and "3 windows" in printed
    with av.open(str(out)) as c:
        assert [(s.rate, s.channels) for s in c.streams.audio] == [(SR, 2), (48000, 2)]
    assert video_packets(out) == video_packets(video)
    new, _ = read_audio(out)  # the first (new) track
    assert abs(new.shape[1] / SR - probe(video).duration) < 0.07
    assert main(["generate", "a ball", "--task", "v2a", "--video", str(video), "--model", str(model_dir), "--steps",
                 "1", "-o", str(out), "--audio", "replace", "-y"]) == 0  # fmt: skip
    with av.open(str(out)) as c:
        assert len(c.streams.audio) == 1
    clip = pipe.generate("a ball", task="v2a", video_path=video, sampling=pipe.sampling.override(steps=1))
    assert torch.equal(clip.frames, read_video(video, fps=FPS, size=(SIZE, SIZE)).frames)  # the given frames
    assert clip.audio.shape == (2, round(probe(video).duration * SR)) and clip.windows == 3


def test_v2a_on_a_prores_export_is_written_to_a_mov_unless_told_otherwise(model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    prores = prores_mov(tmp_path / "edit.mov")
    base = ["generate", "a ball", "--task", "v2a", "--video", str(prores), "--model", str(model_dir), "--steps", "1"]
    assert main(base) == 0
    assert "wrote outputs/generated.mov" in capsys.readouterr().out
    with av.open("outputs/generated.mov") as c:
        assert [s.codec_context.name for s in c.streams] == ["prores", "aac", "pcm_s16le"]
    assert main([*base, "-o", "out.mp4"]) == 2  # asked for an mp4: what to do instead
    assert "write a .mov, which holds it" in capsys.readouterr().err and not (tmp_path / "out.mp4").exists()


def test_continue_extends_the_clip_by_the_duration(model_dir, pipe, tmp_path):
    given = clip_file(tmp_path / "given.mp4", 3.0)
    out = tmp_path / "longer.mp4"
    assert main(["generate", "then it rolls away", "--task", "continue", "--video", str(given), "--duration", "2.5",
                 "--model", str(model_dir), "--steps", "1", "-o", str(out)]) == 0  # fmt: skip
    info = probe(out)
    assert info.n_frames == 48 + 40 and (info.width, info.height) == (SIZE, SIZE) and info.audio_channels == 2
    clip = pipe.generate("then it rolls away", task="continue", video_path=given, duration=2.5,
                         sampling=pipe.sampling.override(steps=1))  # fmt: skip
    frames = read_video(given, fps=FPS, size=(SIZE, SIZE)).frames
    audio = read_audio(given, sample_rate=SR, channels=2)[0][:, : 48 * 1000]
    assert clip.frames.shape[0] == 88 and clip.audio.shape == (2, 88000) and clip.duration == 5.5
    assert torch.equal(clip.frames[:48], frames) and torch.equal(clip.audio[:, :48000], audio)  # the given clip


def test_continue_never_crossfades_into_the_given_clip(pipe, tmp_path):
    """Every frame and sample of the clip as the model read it comes out unchanged, however the windows fall: 30
    frames (not whole latent frames), and a last window moved back over the given clip's end; the windows are still
    crossfaded with each other."""
    given = clip_file(tmp_path / "given.mp4", 30 / FPS)
    frames = read_video(given, fps=FPS, size=(SIZE, SIZE)).frames
    audio = read_audio(given, sample_rate=SR, channels=2)[0][:, :30000]
    assert frames.shape[0] == 30 and audio.shape[1] == 30000
    one_step = pipe.sampling.override(steps=1)
    for added in (1.0, 2.0, 2.25):  # one window; two, the second moved back; two
        clip = pipe.generate("a ball", task="continue", video_path=given, duration=added, sampling=one_step)
        assert torch.equal(clip.frames[:30], frames) and torch.equal(clip.audio[:, :30000], audio), added
        assert clip.frames.shape[0] == 30 + round(added * FPS) and not torch.equal(clip.frames[30], frames[-1])


# ------------------------------------------------------------------------------------------------------------------
# windows: the continuation mechanism between them


def test_windows_hold_the_previous_windows_latents_as_clean_conditions(pipe, monkeypatch):
    """5 s t2av with a 2 s model: windows at latent frames 0, 6, 12 (overlap 2); each later window gets t = 1 on
    exactly its overlap frames (video, and the 8 audio latents per video latent frame of both ears), with the earlier
    window's final latents there, and keeps them bit-identical."""
    from avflow.pipelines import generate

    calls = []
    real = generate.sample_with

    def spy(config, model, noise, cond, **options):
        result = real(config, model, noise, cond, **options)
        calls.append((options["clean"], options["t_start"], result.streams))
        return result

    monkeypatch.setattr(generate, "sample_with", spy)
    clip = pipe.generate("a ball", duration=5.0, sampling=pipe.sampling.override(steps=1))
    per_frame = lambda t, n: t.expand(1, n)[0].tolist()  # noqa: E731  (one time (1,) when all frames share it)
    assert clip.windows == 3 and clip.frames.shape[0] == 80 and clip.audio.shape == (2, 80000)
    starts = [0, 6, 12]
    for k, (clean, t_start, out) in enumerate(calls):
        assert out["video"].shape[2] == 8 and out["left"].shape[1] == 64  # every window has the trained length
        n = 0 if k == 0 else starts[k - 1] + 8 - starts[k]  # frames shared with the window before
        assert per_frame(t_start["video"], 8) == [1.0] * n + [0.0] * (8 - n)
        for ear in ("left", "right"):
            assert per_frame(t_start[ear], 64) == [1.0] * (8 * n) + [0.0] * (64 - 8 * n)
        if k:
            _, _, before = calls[k - 1]
            offset = starts[k] - starts[k - 1]
            for held in (clean, out):  # given to the sampler, and kept by it
                assert torch.equal(held["video"][:, :, :n], before["video"][:, :, offset : offset + n])
                for ear in ("left", "right"):
                    assert torch.equal(held[ear][:, : n * 8], before[ear][:, offset * 8 : (offset + n) * 8])


def test_given_streams_are_clean_in_every_window(pipe, tmp_path, monkeypatch):
    """a2v: the audio is a clean condition everywhere (the encoded input); continue: the given latent frames."""
    from avflow.pipelines import generate

    calls = []
    real = generate.sample_with
    monkeypatch.setattr(generate, "sample_with", lambda *a, **o: calls.append(o["t_start"]) or real(*a, **o))
    sound = write_audio(tmp_path / "sound.wav", stereo_clicks(3.0), SR)
    pipe.generate("a ball", task="a2v", audio_path=sound, sampling=pipe.sampling.override(steps=1))
    assert len(calls) == 2 and all(t["left"].tolist() == [1.0] and t["video"].flatten()[-1] == 0 for t in calls)
    calls.clear()
    given = clip_file(tmp_path / "given.mp4", 1.5)  # 24 frames: 6 whole latent frames given
    pipe.generate("a ball", task="continue", video_path=given, duration=1.0, sampling=pipe.sampling.override(steps=1))
    (t,) = calls  # 10 latent frames in all: one window of 8, frames 2..9
    assert t["video"][0].tolist() == [1.0] * 4 + [0.0] * 4 and t["left"][0].tolist() == [1.0] * 32 + [0.0] * 32


def test_plan_and_crossfade():
    from avflow.pipelines.joint_windows import crossfade_into, plan_windows

    assert plan_windows(8, 8, 2) == [0] and plan_windows(5, 8, 2) == [0]
    assert plan_windows(20, 8, 2) == [0, 6, 12] and plan_windows(21, 8, 2) == [0, 6, 12, 13]
    assert plan_windows(32, 8, 2, first_unknown=20) == [18, 24] and plan_windows(10, 8, 2, first_unknown=6) == [2]
    assert plan_windows(10, 8, 2, first_unknown=10) == []
    for total in range(1, 40):  # every frame to generate is in a window, every window after the first has context
        starts = plan_windows(total, 8, 2, first_unknown=3)
        covered = {f for s in starts for f in range(s, min(s + 8, total))}
        assert covered >= set(range(3, total)) and all(b - a <= 6 for a, b in zip(starts, starts[1:]))
    out = torch.zeros(10)
    filled = crossfade_into(out, 0, 0, torch.ones(6), fade=2)
    filled = crossfade_into(out, filled, 2, torch.full((8,), 4.0), fade=2)
    assert filled == 10
    torch.testing.assert_close(out, torch.tensor([1, 1, 1, 1, 2, 3, 4, 4, 4, 4.0]))  # kept, blended, new
    given = torch.zeros(10)  # the first 5 items are the user's: never blended, whatever the overlap
    filled = crossfade_into(given, 5, 3, torch.ones(6), fade=2, keep=5)
    assert filled == 9 and given.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 0]
    filled = crossfade_into(given, filled, 4, torch.full((6,), 4.0), fade=5, keep=5)  # over the user's and a piece's
    torch.testing.assert_close(given, torch.tensor([0, 0, 0, 0, 0, 1.6, 2.2, 2.8, 3.4, 4]))


# ------------------------------------------------------------------------------------------------------------------
# never cut short; one-line errors before any weights are read


def test_inputs_are_never_cut_silently(model_dir, tmp_path, monkeypatch, capsys):
    """Too long to take whole, or shorter than --duration asks: a one-line error naming the limit, before any
    weights are read, and nothing written. An input within the limits is used whole (the tests above)."""
    long_sound = write_audio(tmp_path / "long.wav", np.zeros((1, 61 * SR), np.float32), SR)
    video = clip_file(tmp_path / "in.mp4", 2.0)
    out = str(tmp_path / "o.mp4")
    base = ["--model", str(model_dir), "-o", out]
    cases = {
        "a2v over the limit": (["--task", "a2v", "--audio-file", str(long_sound)], "at most 60 s"),
        "a2v shorter than asked": (["--task", "a2v", "--audio-file", str(video), "--duration", "3"],
                                   "shorter than the asked duration of 3 s"),  # fmt: skip
        "v2a shorter than asked": (["--task", "v2a", "--video", str(video), "--duration", "2.5"],
                                   "shorter than the asked duration of 2.5 s"),  # fmt: skip
        "continue without audio": (["--task", "continue", "--video", str(clip_file(tmp_path / "mute.mp4", 1.0,
                                    audio_rate=None))], "has no audio track"),  # fmt: skip
        "continue without video": (["--task", "continue"], "--task continue needs --video"),
    }
    reads = WeightReads(monkeypatch)
    before = listing(tmp_path)
    for name, (argv, message) in cases.items():
        assert main(["generate", "a ball", *argv, *base]) == 2, name
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, (name, err)
    assert reads.calls == [] and listing(tmp_path) == before


def clip_with_longer_audio(path: Path, video_s: float, audio_s: float) -> Path:
    """A .mov whose stereo PCM runs past its video (64x64 h264 at FPS): as a recording stopped late on one stream."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        track = out.add_stream("pcm_s16le", rate=SR, layout="stereo")
        for frame in moving_square(t=round(video_s * FPS), h=64, w=64):
            out.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(video.encode(None))
        sound = (stereo_clicks(audio_s) * 20000).astype(np.int16).T.reshape(1, -1)  # interleaved
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(sound), format="s16", layout="stereo")
        frame.sample_rate, frame.pts = SR, 0
        out.mux([*track.encode(frame), *track.encode(None)])
    return path


def test_continue_says_how_much_audio_past_the_video_it_leaves_out(model_dir, pipe, tmp_path, capsys):
    """The continuation starts after the clip's last frame: audio running on past it is not used, and a note says
    how much (timestamp rounding, up to SPAN_SLACK_S, says nothing)."""
    longer = clip_with_longer_audio(tmp_path / "longer.mov", 1.5, 2.5)
    assert abs(probe(longer).duration - 1.5) < 0.01
    with pytest.warns(UserWarning, match=r"longer\.mov: its audio runs 1\.00 s past its video's end; that part is "
                                         r"not used"):  # fmt: skip
        clip = pipe.generate("a ball", task="continue", video_path=longer, duration=1.0,
                             sampling=pipe.sampling.override(steps=1))  # fmt: skip
    assert clip.duration == 2.5 and clip.frames.shape[0] == 40
    out = tmp_path / "o.mp4"
    assert main(["generate", "a ball", "--task", "continue", "--video", str(longer), "--model", str(model_dir),
                 "--steps", "1", "-o", str(out), "--duration", "1"]) == 0  # fmt: skip
    assert "avflow generate: note: " in capsys.readouterr().err
    even = clip_with_longer_audio(tmp_path / "even.mov", 1.5, 1.52)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pipe.generate("a ball", task="continue", video_path=even, sampling=pipe.sampling.override(steps=1))


def test_sampling_that_diverges_is_a_one_line_error_before_anything_is_written(model_dir, pipe, tmp_path, capsys):
    """A guidance strength far too large makes non-finite latents: refused at the first window, not written as a
    black video (NaN cast to uint8) nor handed to the audio encoder."""
    with pytest.raises(ConfigError, match=r"sampling diverged \(non-finite values in .*\) with cfg_strength 1e\+20; "
                                          r"use a smaller --cfg / --stream-cfg"):  # fmt: skip
        pipe.generate("a ball", duration=1.0, sampling=pipe.sampling.override(steps=1, cfg_strength=1e20))
    out = tmp_path / "o.mp4"
    for flags in (["--cfg", "1e20"], ["--stream-cfg", "video=1e30"]):
        assert main(["generate", "a ball", "--model", str(model_dir), "--steps", "2", "--duration", "1", "-o",
                     str(out), *flags]) == 2, flags  # fmt: skip
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("avflow generate: error: sampling diverged") and not out.exists(), err
    assert "video 1e+30" in err


def test_the_pipeline_refuses_what_it_would_have_to_cut(pipe, tmp_path):
    long_sound = write_audio(tmp_path / "long.wav", np.zeros((1, 61 * SR), np.float32), SR)
    with pytest.raises(ConfigError, match="at most 60 s"):
        pipe.generate("a ball", task="a2v", audio_path=long_sound)
    clip = pipe.generate("a ball", task="a2v", audio_path=long_sound, duration=2.0,
                         sampling=pipe.sampling.override(steps=1))  # fmt: skip
    assert clip.duration == 2.0  # only what was asked for
    with pytest.raises(AvflowError, match="prompt"):
        pipe.generate("")
    with pytest.raises(AvflowError, match="duration"):
        pipe.generate("a ball", duration=0)
    with pytest.raises(AvflowError, match="task continue needs a video"):
        pipe.generate("a ball", task="continue")
    # files under the commands' minimum are refused from Python too (they ran on a 0.2 s input before)
    short_sound = write_audio(tmp_path / "short.wav", np.zeros((1, SR // 5), np.float32), SR)
    with pytest.raises(MediaError, match=r"short.wav: audio is too short \(0.200 s\); at least 0.5 s"):
        pipe.generate("a ball", task="a2v", audio_path=short_sound)
    short_clip = clip_file(tmp_path / "short.mp4", 0.25)
    for task in ("v2a", "continue"):
        with pytest.raises(MediaError, match="short.mp4: video is too short"):
            pipe.generate("a ball", task=task, video_path=short_clip)
    with pytest.raises(MediaError, match="long.wav: no video stream"):
        pipe.generate("a ball", task="v2a", video_path=long_sound)


def test_a_prompt_longer_than_the_model_reads_is_refused_not_cut(pipe):
    most = pipe.config.joint.text_len  # the tiny model's text encoder reads a token per word
    long, cut = " ".join(["ball"] * (most + 3)), " ".join(["ball"] * most)
    with pytest.raises(AvflowError, match=f"{most + 3} tokens long and this model reads at most {most}"):
        pipe.generate(long)
    one_step = pipe.sampling.override(steps=1)
    got = pipe.generate(long, cut_prompt=True, sampling=one_step)  # asked for: its first `most` tokens
    assert torch.equal(got.frames, pipe.generate(cut, sampling=one_step).frames)


def test_a_prompt_too_long_is_refused_before_any_weights_are_read(model_dir, tmp_path, monkeypatch, capsys):
    """The commands count the prompt's tokens with the text encoder's tokenizer alone: the tiny folder's (a token
    per word, 16 at most) and the shipped model's MiniLM (64 at most, [CLS] and [SEP] counted)."""
    reads = WeightReads(monkeypatch)
    long, out = " ".join(["ball"] * 20), str(tmp_path / "o.mp4")
    cases = {"generate": (["generate", long, "--model", str(model_dir), "-o", out], 16, None),
             "shipped": (["generate", " ".join(["ball"] * 70), "-o", out], 64, None),  # MiniLM: 72 tokens
             "demo": (["demo", "--prompt", long, "--out-dir", str(tmp_path)], 16, model_dir)}  # fmt: skip
    for name, (argv, most, folder) in cases.items():
        if folder is not None:  # `avflow demo` always uses the shipped model: the tiny folder in its place
            monkeypatch.setattr(default_model, "default_model_dir", lambda folder=folder: folder)
        assert main(argv) == 2, name
        err = capsys.readouterr().err.strip()
        assert f"tokens long and this model reads at most {most}" in err and "\n" not in err, (name, err)
    from avflow.pipelines.generate import prompt_tokens

    assert prompt_tokens("a red ball", "tiny") == 3 and prompt_tokens("a red ball", "minilm") == 5
    assert reads.calls == [] and listing(tmp_path) == {}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "   "], "the prompt is empty: describe the scene"),
        (["generate", " ".join(["ball"] * 20)], "20 tokens long and this model reads at most 16"),  # tiny model: 16
        (["generate", "a ball", "--duration", "0"], "--duration"),
        (["generate", "a ball", "--duration", "-1"], "--duration"),
        (["generate", "a ball", "--task", "a2v"], "--audio-file"),
        (["generate", "a ball", "--task", "v2a", "--video", "/nonexistent/x.mp4"], "x.mp4"),
        (["generate", "a ball", "--task", "continue", "--video", "/nonexistent/x.mp4"], "x.mp4"),
        (["generate", "a ball", "--cfg", "0"], "cfg_strength must be a finite number > 0"),
        (["generate", "a ball", "--cfg", "nan"], "cfg_strength must be a finite number > 0"),
        (["generate", "a ball", "--steps", "0"], "steps must be an integer >= 1"),
        (["generate", "a ball", "--stream-cfg", "video"], "--stream-cfg takes STREAM=W"),
        (["generate", "a ball", "--stream-cfg", "audio=4"], "names audio, not a stream this model samples"),
        (["generate", "a ball", "--stream-cfg", "video=0"], "stream_cfg_strength.video must be a finite number > 0"),
        (["demo", "--cfg", "-1"], "cfg_strength must be a finite number > 0"),
        (["binaural", "/nonexistent/x.mp4", "-o", "y.mp4", "--cfg", "inf"], "x.mp4: file not found"),  # checked first
    ],
)
def test_bad_inputs_are_one_line_errors(argv, message, shipped, capsys):
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_a2v_audio_with_nan_samples_is_refused_before_the_model_loads_and_read_once(model_dir, tmp_path, monkeypatch,
                                                                                   capsys):  # fmt: skip
    """The a2v input is decoded in the checks (its used span, at most 60 s): NaN or infinite samples are a one-line
    error before any weights are read; a good one is passed on to the model, not decoded again."""
    from avflow.data import media

    bad = stereo_clicks(2.0)
    bad[0, 5000:5010] = np.nan
    nan_file = write_audio(tmp_path / "nan.wav", bad, SR)
    out = tmp_path / "o.mp4"
    reads = WeightReads(monkeypatch)
    assert main(["generate", "a ball", "--task", "a2v", "--audio-file", str(nan_file), "--model", str(model_dir),
                 "-o", str(out)]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert "nan.wav: the audio holds NaN or infinite samples" in err and "\n" not in err
    assert reads.calls == [] and not out.exists()
    monkeypatch.undo()
    decoded, real = [], media.read_audio
    monkeypatch.setattr(media, "read_audio", lambda *a, **o: decoded.append(a[0]) or real(*a, **o))
    good = write_audio(tmp_path / "good.wav", stereo_clicks(2.0), SR)
    assert main(["generate", "a ball", "--task", "a2v", "--audio-file", str(good), "--model", str(model_dir),
                 "--steps", "1", "-o", str(out)]) == 0  # fmt: skip
    assert decoded == [good]


def test_unreadable_media_is_one_line_error(tmp_path, shipped, capsys):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    assert main(["generate", "a ball", "--task", "a2v", "--audio-file", str(bad)]) != 0
    err = capsys.readouterr().err.strip()
    assert "bad.wav" in err and len(err.splitlines()) == 1


# ------------------------------------------------------------------------------------------------------------------
# demo, measures, spectrograms


def test_demo_prints_each_measure_or_why_not(shipped, tmp_path, capsys):
    assert main(["demo", "--out-dir", str(tmp_path), "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "prompt: a red ball bounces twice on the left" in out and "metrics:" in out
    measures = out.split("metrics:")[1].splitlines()[1:-1]
    assert {line.split()[0] for line in measures} >= set(CLIP_MEASURES) and "nan" not in out.lower()
    assert all("undefined: " in line or any(c.isdigit() for c in line) for line in measures)
    assert (tmp_path / "demo.mp4").is_file() and (tmp_path / "demo_spectrogram.png").is_file()


def test_a_clips_measures_are_defined_or_say_why():
    """GeneratedClip.metrics() are `clip_av_metrics`' Measures: a blank video or silent audio gets no score but the
    reason, and `avflow demo` / `generate --metrics` print that reason."""
    from avflow.commands.demo import metric_line
    from avflow.pipelines.clip import GeneratedClip

    def clip(frames: np.ndarray, audio: np.ndarray) -> GeneratedClip:
        return GeneratedClip(frames=torch.from_numpy(frames), audio=torch.from_numpy(audio), sample_rate=SR, fps=FPS,
                             prompt="a ball")  # fmt: skip

    noise = np.random.default_rng(0).standard_normal((2, 32000)).astype(np.float32) * 0.01
    blank = clip(np.zeros((32, 32, 32, 3), np.uint8), noise).metrics()
    assert set(blank) >= set(CLIP_MEASURES)
    counts = {"n_onsets", "n_visual_events"}  # detections, not scores: the frames show 0 events
    assert all(not m.defined and m.value is None and "blank video" in m.reason
               for k, m in blank.items() if k not in counts)  # fmt: skip
    assert blank["n_visual_events"].value == 0
    assert "undefined: blank video" in metric_line("sync_offset_ms", blank["sync_offset_ms"])
    silent = clip(moving_square(t=32, h=32, w=32), np.zeros((2, 32000), np.float32)).metrics()
    assert all(silent[k].reason == "silent audio" for k in ("sync_offset_ms", "side_agreement", "follows_object"))
    assert silent["phys_residual_px"].defined  # the square is tracked; only the audio measures need sound


def test_spectrogram_has_axes_and_a_fixed_db_scale(tmp_path):
    """A 2 kHz tone: its brightest row sits at 2 kHz on the drawn axis; ten times quieter looks darker (the
    scale is fixed in dBFS, not stretched to each clip's peak)."""
    from PIL import Image

    from avflow.data.spectrogram import DB_RANGE, MARGIN, PLOT_SIZE, save_spectrogram

    t = np.arange(SR) / SR
    tone = np.sin(2 * np.pi * 2000 * t).astype(np.float32)
    pictures = {}
    for amplitude in (0.5, 0.05):
        path = save_spectrogram(np.stack([amplitude * tone, amplitude * tone]), tmp_path / f"{amplitude}.png", SR)
        pictures[amplitude] = np.asarray(Image.open(path).convert("L"), dtype=float)
    (width, height), left, top = PLOT_SIZE, MARGIN["left"], MARGIN["top"]
    plot = pictures[0.5][top : top + height, left : left + width]
    row = int(plot.mean(axis=1).argmax())
    assert abs((height - 1 - row) / (height - 1) * SR / 2 - 2000) < 100  # the frequency axis: 0 at the bottom
    quiet = pictures[0.05][top : top + height, left : left + width]
    assert quiet.mean(axis=1).max() < plot.mean(axis=1).max() - 20
    assert pictures[0.5].shape == (2 * (top + height + MARGIN["bottom"]), left + width + MARGIN["right"])
    assert pictures[0.5][: top + height, :left].min() < 100  # frequency labels are drawn left of the plot
    assert DB_RANGE[1] == 0.0


# ------------------------------------------------------------------------------------------------------------------
# the shipped model (after the v2 weights are in avflow/assets/default_model)


@needs_shipped_v2
def test_shipped_weights_are_small_safetensors():
    folder = default_model.default_model_dir()
    for name in WEIGHT_FILES:
        assert (folder / name).is_file(), name
    assert (folder / "joint.safetensors").stat().st_size <= 15 * 2**20
    assets = folder.parent
    assert sum(p.stat().st_size for p in assets.rglob("*") if p.is_file()) <= 25 * 2**20
    load_default_model()  # its codecs are the ones it was trained with


@pytest.mark.slow
@needs_shipped_v2
def test_make_demo_from_fresh_clone(tmp_path):
    """git clone of this repository, then `make demo` (creates .venv, installs packages, generates)."""
    if shutil.which("git") is None or shutil.which("make") is None:
        pytest.fail("git and make are needed for this test")
    clone = tmp_path / "avflow"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
    start = time.perf_counter()
    done = subprocess.run(["make", "demo"], cwd=clone, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-2000:]
    assert "metrics:" in done.stdout and "sync_offset_ms" in done.stdout and "nan" not in done.stdout.lower()
    info = probe(clone / "outputs" / "demo.mp4")
    assert info.has_video and info.has_audio and info.audio_channels == 2
    assert (clone / "outputs" / "demo_spectrogram.png").is_file()
    audio, sr = read_audio(clone / "outputs" / "demo.mp4")
    assert np.isfinite(audio.numpy()).all() and abs(audio.shape[1] / sr - info.duration) < 0.05
    print(f"make demo from a fresh clone (cold, with installation): {elapsed:.0f} s")


def test_an_input_over_the_limit_says_what_to_do_for_its_task(tmp_path, monkeypatch, capsys):
    """v2a uses a video's first --duration seconds; a continuation reads all of the clip and --duration is what it
    adds, so there the advice is to cut the clip."""
    frames = np.zeros((123, 16, 16, 3), np.uint8)  # 61.5 s at 2 fps
    sound = np.zeros((1, 8000 * 62), np.float32)
    long = write_video(tmp_path / "long.mp4", frames, 2, sound, 8000)
    reads = WeightReads(monkeypatch)
    advice = {"v2a": "give a duration (--duration) to use its first seconds",
              "continue": "cut it to its last seconds first (a continuation reads all of the clip"}  # fmt: skip
    for task, message in advice.items():
        assert main(["generate", "a", "--task", task, "--video", str(long), "-o", str(tmp_path / "o.mp4")]) == 2
        err = capsys.readouterr().err.strip()
        assert "is 61.5 s long; at most 60 s are generated at once" in err and message in err and "\n" not in err
    assert reads.calls == []


# ------------------------------------------------------------------------------------------------------------------
# a training run of the joint model (a fine-tune of a model folder by `avflow train`) given as --model


def tiny_latent_cache(path: Path, model_dir: Path, rows: int = 4, checksum: str | None = None) -> Path:
    """A latent cache as scripts/train_default_v2.py writes one, for the tiny folder's codecs (2 s clips of noise
    encoded; random text states), recording the codecs' checksum (or `checksum`) in its metadata."""
    from avflow.codecs.world import load_world_codecs
    from avflow.weights import save_safetensors

    config, codecs = read_default_config(model_dir), load_world_codecs(model_dir / "codecs")
    g = torch.Generator().manual_seed(0)
    frames = round(config.duration * config.fps)
    video = torch.rand(rows, 3, frames, config.height, config.width, generator=g) * 2 - 1
    samples = codecs.audio.latent_length(round(config.duration * SR)) * codecs.audio.samples_per_latent
    with torch.no_grad():
        latents = codecs.audio.encode(0.1 * torch.randn(rows, 2, samples, generator=g))
        tensors = {"streams.video": codecs.video.encode(video), "streams.left": latents["left"],
                   "streams.right": latents["right"],
                   "cond.text": torch.randn(rows, config.joint.text_len, config.joint.text_dim, generator=g),
                   "cond.text_mask": torch.arange(config.joint.text_len).expand(rows, -1) < 5}  # fmt: skip
    return save_safetensors(tensors, path, metadata={"codecs_checksum": checksum or codecs.checksum})


def fine_tune(model_dir: Path, run: Path, cache: Path, steps: int = 2) -> Path:
    """`avflow train` of the default model's later-cycle recipe from the folder's weights, tiny settings."""
    from avflow.config import to_dict

    joint = json.dumps(to_dict(read_default_config(model_dir).joint))
    overrides = [f"out_dir={run}", f"init.weights={model_dir / 'joint.safetensors'}", f"model.args={joint}",
                 f"data.train.args.file={cache}", f"data.val.args.file={cache}", f"train.steps={steps}",
                 "train.batch_size=2", "schedule.warmup_steps=1", "optim.lr=1e-2", f"checkpoint.every={steps}",
                 "log.val_every=0"]  # fmt: skip
    assert main(["train", str(REPO / "configs" / "default_joint_v2_stage3.yaml"), *overrides]) == 0
    return run


def test_a_training_run_generates_with_its_ema_and_the_settings_it_started_from(model_dir, tmp_path, capsys):
    """`--model RUN` of a fine-tune: the run's network with its EMA export (the weights `avflow.weights.run_weights`
    gives, what an exported folder of it would hold) and the clip format, sampling and codecs of the folder its
    init.weights came from; the codecs checksum read from the run's training cache. Said in one note."""
    from avflow.codecs.world import load_world_codecs

    run = fine_tune(model_dir, tmp_path / "run", tiny_latent_cache(tmp_path / "cache.safetensors", model_dir))
    capsys.readouterr()
    config, base = read_default_config(run), read_default_config(model_dir)
    assert config.joint == base.joint and config.sampling == base.sampling and config.duration == base.duration
    assert config.codecs_checksum == load_world_codecs(model_dir / "codecs").checksum
    exported = shutil.copytree(model_dir, tmp_path / "exported")  # the run exported as a model folder by hand
    shutil.copy(run / "ema_0.05.safetensors", exported / "joint.safetensors")
    tuned, by_hand, start = load_default_model(run), load_default_model(exported), load_default_model(model_dir)
    mine, theirs, before = (p.model.state_dict() for p in (tuned, by_hand, start))
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    assert not all(torch.equal(mine[k], before[k]) for k in before)  # trained: not the folder it started from

    out = tmp_path / "clip.mp4"
    argv = ["generate", "a ball", "--model", str(run), "--duration", "1", "--steps", "1", "-o", str(out)]
    assert main(argv) == 0 and probe(out).n_frames == FPS
    err = capsys.readouterr().err
    assert f"note: {run}: its EMA export ema_0.05.safetensors, with the clip format, sampling and codecs of " in err

    checkpoint = run / "checkpoints" / "step_00000002.pt"  # a run resumed and stopped after its export: the
    later = (run / "ema_0.05.safetensors").stat().st_mtime + 10  # newer checkpoint's EMA (here the same step's)
    os.utime(checkpoint, (later, later))
    with pytest.warns(UserWarning, match=r"checkpoints/step_00000002\.pt \(its EMA \(sigma_rel 0\.05\)\)"):
        from_checkpoint = load_default_model(run).model.state_dict()
    assert all(torch.equal(from_checkpoint[k], mine[k]) for k in mine)
    for export in run.glob("ema_*.safetensors"):  # a run without an EMA exports model.safetensors only
        export.unlink()
    os.utime(checkpoint, (later - 20, later - 20))
    with pytest.warns(UserWarning, match=r"its model\.safetensors \(no EMA export\)"):
        raw = load_default_model(run).model.state_dict()
    trained = load_file(run / "model.safetensors")
    assert all(torch.equal(raw[k], trained[k].float()) for k in trained)


def test_a_training_run_that_cannot_generate_says_why(model_dir, tmp_path, capsys):
    cache = tiny_latent_cache(tmp_path / "other_codecs.safetensors", model_dir)
    run = fine_tune(model_dir, tmp_path / "other", cache)  # training refuses data of other codecs: replaced after
    tiny_latent_cache(cache, model_dir, checksum="0" * 64)
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(run / "config.yaml", empty / "config.yaml")
    binaural = tmp_path / "binaural"
    binaural.mkdir()
    (binaural / "config.yaml").write_text("model: {name: binaural_flow, args: {}}\n")
    capsys.readouterr()
    cases = {run: "trained with world codecs 000000000000", empty: "a training run without weights yet",
             binaural: "a training run of the 'binaural_flow' model"}  # fmt: skip
    for folder, message in cases.items():
        assert main(["generate", "a ball", "--model", str(folder), "-o", str(tmp_path / "o.mp4")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err
    assert not (tmp_path / "o.mp4").exists()
