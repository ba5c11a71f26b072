"""Media I/O on tiny files the tests write with PyAV: exact times at any frame rate, sizes, windows, audio round
trips, remuxing with a new AAC track, and one-line errors for bad inputs."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch

from avflow.cli import main as cli_main
from avflow.data.media import (
    iter_video_windows,
    mux_audio,
    probe,
    read_audio,
    read_video,
    write_audio,
    write_video,
)
from avflow.data.video import video_span
from avflow.errors import MediaError, MediaWarning

RATES = {"16": Fraction(16), "23.976": Fraction(24000, 1001), "30": Fraction(30)}
LEVEL = 5  # frame k is a flat grey of level LEVEL * k, so a decoded frame tells its index
SR = 16000
VFR_MS = [0, 30, 50, 120, 200, 210, 300, 420, 500, 640]  # variable-rate frame starts


def level_of(frames: torch.Tensor) -> list[int]:
    """Source frame index of each (H, W, 3) frame, read from its centre."""
    h, w = frames.shape[1:3]
    return [round(v / LEVEL) for v in frames[:, h // 2, w // 2].float().mean(-1).tolist()]


def make_video(
    path: Path,
    rate: Fraction,
    pts: list[int],
    time_base: Fraction,
    size: tuple[int, int] = (32, 32),
    audio_s: float | None = None,
) -> Path:
    """h264 mp4 with one flat frame per pts (frame k has level LEVEL * k); optional stereo AAC noise track."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=rate)
        video.height, video.width = size
        video.pix_fmt = "yuv420p"
        video.options = {"preset": "veryfast", "crf": "10", "g": "10", "bf": "2"}  # B-frames, a keyframe every 10
        video.codec_context.time_base = time_base
        audio = out.add_stream("aac", rate=SR, layout="stereo") if audio_s is not None else None
        for k, p in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(np.full((*size, 3), LEVEL * k, np.uint8), format="rgb24")
            frame.pts, frame.time_base = p, time_base
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        if audio is not None:
            samples = np.random.default_rng(0).uniform(-0.3, 0.3, (2, round(audio_s * SR))).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="stereo")
            frame.sample_rate, frame.pts, frame.time_base = SR, 0, Fraction(1, SR)
            for packet in [*audio.encode(frame), *audio.encode()]:
                out.mux(packet)
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    """1.5 s CFR videos at 16, 23.976 and 30 fps (the 23.976 one with audio), plus a variable-rate one."""
    root = tmp_path_factory.mktemp("media")
    out = {}
    for name, rate in RATES.items():
        n = math.ceil(Fraction(3, 2) * rate)
        out[name] = make_video(
            root / f"v{name}.mp4", rate, list(range(n)), 1 / rate, audio_s=1.5 if name == "23.976" else None
        )
    out["vfr"] = make_video(root / "vfr.mp4", Fraction(30), VFR_MS, Fraction(1, 1000))
    out["wide"] = make_video(root / "wide.mp4", Fraction(10), list(range(4)), Fraction(1, 10), size=(32, 48))
    return out


def shown_at(times: list[float], t: float) -> int:
    """Index of the source frame on screen at time t (the last one starting at or before t)."""
    return max(i for i, s in enumerate(times) if s <= t + 1e-9)


# ------------------------------------------------------------------------------------------------ video


@pytest.mark.parametrize("name", list(RATES))
def test_native_frames_have_pts_times(videos, name):
    rate = RATES[name]
    n = math.ceil(Fraction(3, 2) * rate)
    info = probe(videos[name])
    assert (info.n_frames, info.width, info.height, info.has_video) == (n, 32, 32, True)
    assert info.fps == pytest.approx(float(rate), rel=1e-9)
    assert info.duration == pytest.approx(float(n / rate), abs=1e-9)
    got = read_video(videos[name])
    assert got.frames.shape == (n, 32, 32, 3) and got.frames.dtype == torch.uint8
    torch.testing.assert_close(got.times, torch.tensor([float(k / rate) for k in range(n)], dtype=torch.float64))
    assert level_of(got.frames) == list(range(n))


@pytest.mark.parametrize("name", list(RATES))
@pytest.mark.parametrize("fps", [10.0, 25.0, 30.0])
def test_requested_fps_picks_frame_shown_at_each_time(videos, name, fps):
    rate = RATES[name]
    n_src = math.ceil(Fraction(3, 2) * rate)
    source_times = [float(k / rate) for k in range(n_src)]
    duration = float(n_src / rate)
    got = read_video(videos[name], fps=fps)
    n = math.ceil(duration * fps - 1e-9)
    assert got.frames.shape[0] == n and got.fps == fps
    torch.testing.assert_close(got.times, torch.arange(n, dtype=torch.float64) / fps)
    assert level_of(got.frames) == [shown_at(source_times, k / fps) for k in range(n)]


def test_variable_frame_rate(videos):
    info = probe(videos["vfr"])
    assert info.n_frames == len(VFR_MS)
    assert info.duration > VFR_MS[-1] / 1000  # ends after the last frame starts, whatever the header says
    native = read_video(videos["vfr"])
    torch.testing.assert_close(native.times, torch.tensor(VFR_MS, dtype=torch.float64) / 1000)
    assert level_of(native.frames) == list(range(len(VFR_MS)))
    got = read_video(videos["vfr"], fps=20)
    assert level_of(got.frames) == [shown_at([t / 1000 for t in VFR_MS], t) for t in got.times.tolist()]
    assert got.times[-1] <= info.duration


def test_mpeg_ts_is_read(tmp_path):
    """MPEG-TS (camcorders' .mts / .m2ts) has no index: a seek by the stream's timestamps finds no frame, so the
    reader falls back to the file's start instead of calling the file empty."""
    path = tmp_path / "v.ts"
    with av.open(str(path), "w", format="mpegts") as out:
        video = out.add_stream("libx264", rate=30)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        for k in range(45):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), LEVEL * k, np.uint8), format="rgb24")
            frame.pts = k
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    got = read_video(path)
    assert level_of(got.frames) == list(range(45))
    later = read_video(path, start=0.5, duration=0.5)  # a window after the start: seeks, falls back, skips ahead
    assert level_of(later.frames) == list(range(15, 30))


def test_info_shows_the_pixel_aspect_of_anamorphic_video(tmp_path, capsys):
    """DV, DVDs and some cameras store non-square pixels (720x480 shown as 853x480): `avflow info` printed the
    stored size only."""
    path = tmp_path / "dv.mp4"
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 72, 48, "yuv420p"
        video.codec_context.sample_aspect_ratio = Fraction(32, 27)
        for k in range(10):
            out.mux(video.encode(av.VideoFrame.from_ndarray(np.full((48, 72, 3), 20 * k, np.uint8), format="rgb24")))
        out.mux(video.encode(None))
    assert cli_main(["info", str(path)]) == 0
    assert "72x48  25.000 fps (25)  10 frames  pixels 32:27, shown 85x48" in capsys.readouterr().out


def test_a_rotated_video_is_read_as_players_show_it(tmp_path):
    """Phones store portrait video as landscape frames with a display rotation: probe gives the shown size and the
    frames come turned (here 90 degrees counterclockwise: the stored left half, white, is shown at the bottom)."""
    path = tmp_path / "phone.mp4"
    stored = np.zeros((32, 48, 3), np.uint8)  # (H, W): landscape as stored
    stored[:, :24] = 255
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 48, 32, "yuv420p"
        if not hasattr(video, "set_display_rotation"):
            pytest.skip("this PyAV cannot write a display rotation")
        video.set_display_rotation(90)
        for k in range(10):
            frame = av.VideoFrame.from_ndarray(stored, format="rgb24")
            frame.pts = k
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    info = probe(path)
    assert (info.width, info.height, info.quarter_turns) == (32, 48, 1)
    frames = read_video(path).frames  # (T, 48, 32, 3)
    assert frames.shape == (10, 48, 32, 3)
    rows = frames[0].float().mean(dim=(1, 2))  # (48,) brightness per shown row
    assert rows[:20].max() < 40 and rows[28:].min() > 215, rows


def test_frames_an_edit_list_hides_are_not_counted(tmp_path):
    """A clip trimmed without re-encoding keeps the frames from the keyframe before its cut, hidden by the mp4's edit
    list: they were counted as shown, so 40 frames at 25 fps read as 50 at 31.25 fps, and every measure that timed
    the native frames by that rate (the binaural spatialiser, `avflow eval`) put them at the wrong times."""
    path = tmp_path / "trimmed.mp4"
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        video.options = {"g": "50"}
        for k in range(-10, 40):  # 10 frames before time 0: the muxer hides them with an edit list
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), LEVEL * (k + 10), np.uint8), format="rgb24")
            frame.pts, frame.time_base = k, Fraction(1, 25)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    with av.open(str(path)) as c:
        assert c.streams.video[0].frames == 50  # the header counts the hidden ones
    info = probe(path)
    assert (info.n_frames, info.fps, info.duration) == (40, 25.0, 1.6)
    clip = read_video(path)
    assert clip.frames.shape[0] == 40 and clip.fps == 25.0 and level_of(clip.frames)[0] == 10
    assert abs(float(clip.times[-1]) - 39 / 25) < 1e-6


def faststart_mp4(path: Path, frames: int, audio_s: float | None) -> Path:
    """mp4 with its index at the front (`+faststart`: phones, web exports), 25 fps h264 with B-frames (noise sliding
    sideways: bytes enough that a cut falls among the frames, motion enough for B-frames) or, with frames 0, mono AAC
    only."""
    noise = np.random.default_rng(0).integers(0, 256, (48, 128, 3), np.uint8)
    with av.open(str(path), "w", options={"movflags": "+faststart"}) as out:
        if frames:
            video = out.add_stream("libx264", rate=25)
            video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
            video.options = {"g": "12", "bf": "2"}
        track = out.add_stream("aac", rate=SR, layout="mono") if audio_s else None
        for k in range(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(noise[:, 2 * k % 64 :][:, :64]), format="rgb24")
            frame.pts = k
            out.mux(video.encode(frame))
        if frames:
            out.mux(video.encode(None))
        if track is not None:
            frame = av.AudioFrame.from_ndarray(sine(440, audio_s, SR, 1).numpy(), format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = SR, 0, Fraction(1, SR)
            out.mux([*track.encode(frame), *track.encode(None)])
    return path


@pytest.mark.parametrize("where", ["half", "B-frame"])
def test_an_mp4_cut_short_is_as_long_as_what_it_holds(tmp_path, where):
    """An mp4 with its index at the front whose data was cut short (a copy or a download that stopped) was as long
    as its header says: `avflow info` gave 2 s and 50 frames for the 1 s it holds, reading repeated the last frame
    held to the end, and foley wrote a 2 s track for it. It is as long as the frames it holds whole (its index gives
    each one's place and size), up to the first one missing: cut in a B-frame, the frame decoded before it but shown
    after it is held and not counted."""
    whole, cut = faststart_mp4(tmp_path / "whole.mp4", 50, 2.0), tmp_path / "cut.mp4"
    with av.open(str(whole)) as c:
        full = [(p.pts, p.pos, bytes(p)) for p in c.demux(c.streams.video[0]) if p.size]
    reordered = (pos + len(data) // 2 for (pts, pos, data), (before, _, _) in zip(full[20:], full[19:]) if pts < before)
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2 if where == "half" else next(reordered)])
    with pytest.warns(MediaWarning, match=r"cut\.mp4: cut short: holds [01]\.\d\d s of the 2\.00 s its header states"):
        info = probe(cut)
    with av.open(str(cut)) as c:
        assert c.streams.video[0].frames == 50  # the header counts them all
        held = [p for p in c.demux(c.streams.video[0]) if p.size]  # the last one: the part of a frame
        complete = {p.pts for p, (_, _, same) in zip(held, full) if bytes(p) == same}
    shown = next(k for k, (pts, _, _) in enumerate(sorted(full)) if pts not in complete)  # before the first missing
    assert 10 < shown < 40 and info.n_frames == shown and (info.fps, info.duration) == (25.0, shown / 25)
    assert where == "half" or max(complete) > sorted(full)[shown][0]  # a frame shown after the missing one is held
    assert video_span(cut) == (0, Fraction(shown, 25))
    assert torch.equal(read_video(cut).frames, read_video(whole).frames[:shown])
    assert len(read_video(cut, fps=10).frames) == math.ceil(shown / 2.5)
    assert sum(len(w.frames) for w in iter_video_windows(cut, window_s=0.4)) == shown
    out = mux_audio(cut, sine(440, 2.0, SR), SR, tmp_path / "foley.mp4", existing_audio="replace")
    assert abs(track_seconds(out, "audio") - shown / 25) <= 1024 / SR  # the new track: as long as the video held


def test_an_m4a_cut_short_is_as_long_as_what_it_holds(tmp_path):
    """AAC in an mp4 (.m4a) cut short likewise: as long as the samples it holds whole, which is what reads."""
    whole, cut = faststart_mp4(tmp_path / "whole.m4a", 0, 4.0), tmp_path / "cut.m4a"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.warns(MediaWarning, match=r"cut short: holds \d\.\d\d s of the 4\.00 s its header states"):
        info = probe(cut)
    audio, _ = read_audio(cut)
    assert 1.0 < info.duration < 3.0 and abs(info.duration - audio.shape[1] / SR) <= 1024 / SR


def test_start_and_duration(videos):
    full = read_video(videos["30"], fps=10)
    part = read_video(videos["30"], fps=10, start=0.5, duration=0.5)
    torch.testing.assert_close(part.times, 0.5 + torch.arange(5, dtype=torch.float64) / 10)
    assert torch.equal(part.frames, full.frames[5:10])
    late = read_video(videos["30"], start=1.0)  # native frames from 1 s to the end
    assert level_of(late.frames) == list(range(30, 45))


@pytest.mark.parametrize("name", ["16", "23.976", "vfr"])
@pytest.mark.parametrize("fps", [None, 12.0])
def test_windows_cover_the_file_exactly_once(videos, name, fps):
    whole = read_video(videos[name], fps=fps)
    windows = list(iter_video_windows(videos[name], window_s=0.25, overlap_s=0.0, fps=fps))
    assert len(windows) > 1
    assert torch.equal(torch.cat([w.times for w in windows]), whole.times)
    assert torch.equal(torch.cat([w.frames for w in windows]), whole.frames)


def test_overlapping_windows(videos):
    windows = list(iter_video_windows(videos["30"], window_s=0.5, overlap_s=0.2, fps=10))
    starts = [w.times[0].item() for w in windows]
    assert starts == pytest.approx([0.0, 0.3, 0.6, 0.9, 1.2])
    assert [len(w.times) for w in windows] == [5, 5, 5, 5, 3]
    torch.testing.assert_close(windows[1].times[:2], windows[0].times[3:])
    assert torch.equal(windows[1].frames[:2], windows[0].frames[3:])


def test_sizes_for_every_mode(videos):
    path = videos["wide"]  # 48 wide, 32 high
    assert read_video(path, size=(16, 40), mode="resize").frames.shape[1:] == (16, 40, 3)
    assert read_video(path, size=16, mode="resize").frames.shape[1:] == (16, 24, 3)  # short side, aspect kept
    crop = read_video(path, size=(32, 32), mode="crop").frames
    assert crop.shape[1:] == (32, 32, 3)
    assert torch.equal(crop, read_video(path).frames[:, :, 8:40])  # centre cut, no scaling needed
    assert read_video(path, size=16, mode="crop").frames.shape[1:] == (16, 16, 3)
    box = read_video(path, size=(32, 32), mode="letterbox").frames  # content 21 x 32, black bars above and below
    assert box.shape[1:] == (32, 32, 3)
    assert box[1:, :5].max() == 0 and box[1:, -5:].max() == 0
    assert (box[1:, 6:26].float() - LEVEL * torch.arange(1, 4).view(3, 1, 1, 1)).abs().max() <= 3


def test_large_frames_are_resized_a_few_at_a_time_to_the_same_pixels(tmp_path, monkeypatch):
    """Sixteen 4K frames resized at once held 1.6 GB in float (a 12 s 4K clip's v2a peaked at 4.9 GB): a resize call
    takes at most RESIZE_BATCH_BYTES of source frames, and gives the pixels of one call over all of them."""
    from avflow.data import video

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (12, 96, 128, 3), dtype=np.uint8)
    path = write_video(tmp_path / "v.mp4", frames, 16)
    batches: list[int] = []
    resize = video.resize_frames
    monkeypatch.setattr(video, "resize_frames", lambda f, *a: batches.append(f.shape[0]) or resize(f, *a))
    monkeypatch.setattr(video, "RESIZE_BATCH", 100)
    whole = read_video(path, size=(24, 32)).frames
    assert batches == [12]
    batches.clear()
    monkeypatch.setattr(video, "RESIZE_BATCH_BYTES", 3 * 96 * 128 * 3)  # three frames
    few = read_video(path, size=(24, 32)).frames
    assert batches == [3, 3, 3, 3] and torch.equal(few, whole)


# ------------------------------------------------------------------------------------------------ audio


def sine(freq: float, seconds: float, sr: int, channels: int = 2) -> torch.Tensor:
    t = torch.arange(round(seconds * sr), dtype=torch.float64) / sr
    rows = [torch.sin(2 * math.pi * freq * (c + 1) * t) * 0.5 for c in range(channels)]
    return torch.stack(rows).float()  # (C, N); channel c at (c + 1) * freq


def test_audio_write_read_round_trip(tmp_path):
    audio = sine(440, 0.5, 16000)
    write_audio(tmp_path / "a.wav", audio, 16000)
    got, sr = read_audio(tmp_path / "a.wav")
    assert sr == 16000 and torch.equal(got, audio)  # float wav is exact
    info = probe(tmp_path / "a.wav")
    assert (info.has_video, info.has_audio, info.audio_sample_rate, info.audio_channels) == (False, True, 16000, 2)
    assert info.duration == pytest.approx(0.5)
    write_audio(tmp_path / "a.flac", audio, 16000)
    got, sr = read_audio(tmp_path / "a.flac")
    assert sr == 16000 and sf.info(str(tmp_path / "a.flac")).subtype == "PCM_24"
    torch.testing.assert_close(got, audio, atol=2e-7, rtol=0)
    with pytest.raises(MediaError, match=r"a\.mp3"):
        write_audio(tmp_path / "a.mp3", audio, 16000)


def test_audio_resampling_and_channels(tmp_path):
    write_audio(tmp_path / "a.wav", sine(300, 1.0, 44100), 44100)
    got, sr = read_audio(tmp_path / "a.wav", sample_rate=16000)
    assert sr == 16000 and got.shape == (2, 16000)
    torch.testing.assert_close(got[:, 200:-200], sine(300, 1.0, 16000)[:, 200:-200], atol=2e-3, rtol=0)
    mono, _ = read_audio(tmp_path / "a.wav", channels=1)
    torch.testing.assert_close(mono, sine(300, 1.0, 44100).mean(0, keepdim=True))
    write_audio(tmp_path / "m.wav", sine(300, 1.0, 8000, channels=1), 8000)
    stereo, sr = read_audio(tmp_path / "m.wav", sample_rate=16000, channels=2)
    assert stereo.shape == (2, 16000) and torch.equal(stereo[0], stereo[1])


def test_audio_of_more_channels_is_mixed_down_with_its_layout(tmp_path):
    """Six channels (5.1: FL FR FC LFE BL BR) read as stereo keep the centre in both sides, not just FL and FR."""
    six = torch.zeros(6, 16000)
    six[2] = sine(500, 1.0, 16000, channels=1)[0]  # centre only
    sf.write(str(tmp_path / "six.wav"), six.T.numpy(), 16000, subtype="FLOAT")
    stereo, sr = read_audio(tmp_path / "six.wav", channels=2)
    assert sr == 16000 and stereo.shape == (2, 16000)
    rms = stereo.pow(2).mean(1).sqrt()  # (2,)
    assert rms.min() > 0.15 and torch.allclose(stereo[0], stereo[1], atol=1e-4), rms
    assert read_audio(tmp_path / "six.wav")[0].shape == (6, 16000)  # channels not asked: all of them


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_audio_with_nan_or_inf_is_a_one_line_error(tmp_path, bad):
    audio = sine(300, 0.5, 16000)
    audio[0, 100] = bad
    write_audio(tmp_path / "bad.wav", audio, 16000)
    with pytest.raises(MediaError, match=r"bad\.wav: the audio holds NaN or infinite samples"):
        read_audio(tmp_path / "bad.wav")


def write_pcm_mov(path: Path, audio: np.ndarray, sr: int) -> Path:
    """A .mov holding (C, N) float32 PCM (read by PyAV, not soundfile), whatever the samples are."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_f32le", rate=sr, layout="stereo" if audio.shape[0] == 2 else "mono")
        for start in range(0, audio.shape[1], 4096):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio[:, start : start + 4096]).reshape(1, -1),
                                               format="flt", layout=stream.layout.name)  # fmt: skip
            frame.sample_rate, frame.pts, frame.time_base = sr, start, Fraction(1, sr)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.mark.parametrize(("kind", "rate", "out_rate", "seconds"), [
    ("wav", 44100, 16000, 0.73), ("wav", 16000, None, 0.5), ("mov", 48000, 16000, 1.1), ("mov", 22050, 44100, 0.9),
    ("video", SR, 22050, 0.9), ("wav", 16000, 8000, 5.0),
])  # fmt: skip
def test_first_seconds_of_audio_are_the_whole_reads_samples(videos, tmp_path, kind, rate, out_rate, seconds):
    """`read_audio(seconds=...)` gives exactly the first samples of the whole file's read (resampled the same way;
    the whole file where it is shorter), for soundfile and PyAV formats and the audio of a video."""
    noise = np.random.default_rng(3).uniform(-0.4, 0.4, (2, 2 * rate)).astype(np.float32)  # 2 s
    if kind == "wav":
        path = tmp_path / "a.wav"
        sf.write(str(path), noise.T, rate, subtype="FLOAT")
    elif kind == "mov":
        path = write_pcm_mov(tmp_path / "a.mov", noise, rate)
    else:
        path = videos["23.976"]
    whole, sr = read_audio(path, sample_rate=out_rate, channels=1)
    first, first_sr = read_audio(path, sample_rate=out_rate, channels=1, seconds=seconds)
    assert first_sr == sr and first.shape[1] == min(round(seconds * sr), whole.shape[1])
    assert torch.equal(first, whole[:, : first.shape[1]])


@pytest.mark.parametrize("kind", ["wav", "mov"])
def test_first_seconds_of_audio_leave_the_rest_unread(tmp_path, kind):
    """Only the first seconds are decoded: samples after them that a whole read refuses (infinite) are never seen."""
    rate = 16000
    audio = np.random.default_rng(4).uniform(-0.4, 0.4, (2, 10 * rate)).astype(np.float32)
    audio[:, 8 * rate :] = np.inf
    path = tmp_path / f"late.{kind}"
    if kind == "wav":
        sf.write(str(path), audio.T, rate, subtype="FLOAT")
    else:
        write_pcm_mov(path, audio, rate)
    with pytest.raises(MediaError, match="NaN or infinite"):
        read_audio(path)
    first, _ = read_audio(path, sample_rate=8000, seconds=2.0)
    assert first.shape == (2, 16000) and torch.isfinite(first).all()
    with pytest.raises(MediaError, match="seconds must be > 0"):
        read_audio(path, seconds=0)


def with_cover(path: Path, video: bool) -> Path:
    """A file whose first stream is cover art (a one-picture png stream, as music files carry), then 1 s of stereo
    audio (mp3 in an .mp3, else AAC) and, with `video`, 1 s of h264 at 16 fps whose frame k has level LEVEL * k."""
    with av.open(str(path), "w") as out:
        cover = out.add_stream("png")
        cover.width, cover.height, cover.pix_fmt = 16, 16, "rgb24"
        cover.disposition = av.stream.Disposition.attached_pic
        track = out.add_stream("libmp3lame" if path.suffix == ".mp3" else "aac", rate=SR, layout="stereo")
        if video:
            stream = out.add_stream("libx264", rate=16)
            stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
            for k in range(16):
                frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), LEVEL * k, np.uint8), format="rgb24")
                frame.pts, frame.time_base = k, Fraction(1, 16)
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
        sound = np.random.default_rng(0).uniform(-0.3, 0.3, (2, SR)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(sound, format="fltp", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = SR, 0, Fraction(1, SR)
        out.mux([*track.encode(frame), *track.encode(None)])
        out.mux([*cover.encode(av.VideoFrame.from_ndarray(np.full((16, 16, 3), 200, np.uint8), "rgb24")),
                 *cover.encode(None)])  # fmt: skip
    return path


def test_cover_art_is_not_the_video(tmp_path, capsys):
    """A music file's album picture is a one-picture "video" stream: it made every command fail with "[Errno 1]
    Operation not permitted" (probe seeking in it). A file with only cover art is audio; in a video file with cover
    art first, the video is the one that moves."""
    from avflow.pipelines.inputs import check_audio_input, check_video_input

    song = with_cover(tmp_path / "song.mp3", video=False)
    info = probe(song)
    assert (info.has_video, info.has_audio, info.n_frames) == (False, True, 0) and abs(info.duration - 1.0) < 0.05
    assert check_audio_input(song).has_audio and read_audio(song)[0].shape[0] == 2
    with pytest.raises(MediaError, match="no video stream"):
        check_video_input(song)
    assert cli_main(["info", str(song)]) == 0
    assert "16x16  cover art" in capsys.readouterr().out
    clip = with_cover(tmp_path / "clip.mp4", video=True)
    info = probe(clip)
    assert (info.has_video, info.n_frames, info.width, info.fps) == (True, 16, 32, 16.0)
    assert level_of(read_video(clip).frames) == list(range(16))
    out = mux_audio(clip, np.zeros((2, SR), np.float32), SR, tmp_path / "out.mp4")
    with av.open(str(out)) as c:  # the moving video is the main track; the cover is kept after the audio
        assert [(s.type, s.codec_context.name) for s in c.streams] == [
            ("video", "h264"), ("audio", "aac"), ("audio", "aac"), ("video", "png")]  # fmt: skip


def test_audio_from_video(videos):
    audio, sr = read_audio(videos["23.976"])
    assert sr == SR and audio.shape[0] == 2
    assert abs(audio.shape[1] - 1.5 * SR) <= 1024  # within one AAC frame
    mono, sr = read_audio(videos["23.976"], sample_rate=8000, channels=1)
    assert sr == 8000 and mono.shape == (1, round(audio.shape[1] / 2))


# ------------------------------------------------------------------------------------------------ writing / muxing


def packets(path: Path) -> list[tuple[Fraction, Fraction, bytes]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [
            (Fraction(p.pts) * stream.time_base, Fraction(p.dts) * stream.time_base, bytes(p))
            for p in container.demux(stream)
            if p.size
        ]


def track_seconds(path: Path, kind: str) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0] if kind == "audio" else container.streams.video[0]
        return float(stream.duration * stream.time_base)


@pytest.mark.parametrize(
    ("name", "channels", "seconds", "sr"),
    [("23.976", 2, 0.7, 16000), ("16", 1, 3.0, 16000), ("30", 2, 1.5, 22050), ("vfr", 1, 0.2, 16000)],
)
def test_mux_keeps_video_packets_and_fits_audio(videos, tmp_path, name, channels, seconds, sr):
    audio = sine(440, seconds, sr, channels)
    out = mux_audio(videos[name], audio, sr, tmp_path / "muxed.mp4", existing_audio="replace")
    assert packets(out) == packets(videos[name])  # same bytes, same pts and dts, same order
    video_s = probe(videos[name]).duration
    with av.open(str(out)) as container:
        assert len(container.streams.audio) == 1 and len(container.streams.video) == 1
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "aac" and stream.codec_context.channels == channels
        frame_s = 1024 / stream.codec_context.sample_rate
    assert abs(track_seconds(out, "audio") - video_s) <= frame_s
    got, got_sr = read_audio(out, sample_rate=sr)
    assert abs(got.shape[1] - video_s * sr) <= 1024 * sr / got_sr
    if seconds < video_s - 0.2:  # padded with silence after the given audio
        tail = got[:, round((seconds + 0.1) * sr) :]
        assert tail.abs().max() < 1e-3 and got[:, : round(seconds * sr) // 2].abs().max() > 0.3


def test_write_video_round_trip(tmp_path):
    rate = Fraction(24000, 1001)
    frames = torch.stack([torch.full((16, 24, 3), LEVEL * k, dtype=torch.uint8) for k in range(20)])
    path = write_video(tmp_path / "w.mp4", frames, 23.976, sine(440, 2.0, SR, 1), SR)
    info = probe(path)
    assert (info.n_frames, info.height, info.width, info.audio_channels) == (20, 16, 24, 1)
    assert info.fps == pytest.approx(float(rate)) and info.duration == pytest.approx(float(20 / rate))
    got = read_video(path)
    assert level_of(got.frames) == list(range(20))
    torch.testing.assert_close(got.times, torch.tensor([float(k / rate) for k in range(20)], dtype=torch.float64))
    assert abs(track_seconds(path, "audio") - info.duration) <= 1024 / SR


WRITE_MOVING_BARS = """
import hashlib, sys
import numpy as np
from avflow.data.mux import write_video
t = np.arange(24)[:, None, None]
y, x = np.mgrid[:48, :64]
frames = np.clip(100 + 80 * np.sin(x[None] / 6.0 + t / 3.0) + 2 * y[None], 0, 255).astype(np.uint8)
junk = [np.random.default_rng(0).random(1 << 18) for _ in range(20)]  # the heap holds other data
del junk
print(hashlib.sha256(write_video(sys.argv[1], frames[..., None].repeat(3, -1), 16).read_bytes()).hexdigest())
"""


def glibc() -> bool:
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (AttributeError, ValueError, OSError):
        return False


@pytest.mark.skipif(not glibc(), reason="glibc's malloc tunables")
def test_write_video_gives_the_same_bytes_whatever_the_heap_held(tmp_path):
    """x264's macroblock tree read memory it never wrote: glibc filling fresh blocks with other bytes changed the
    encoded video (the `avflow` command's heap setting did the same from run to run)."""
    digests = set()
    for perturb in (0, 170):
        tunables = f"glibc.malloc.mmap_max=0:glibc.malloc.perturb={perturb}"
        env = {**os.environ, "GLIBC_TUNABLES": tunables}
        out = subprocess.run([sys.executable, "-c", WRITE_MOVING_BARS, str(tmp_path / f"p{perturb}.mp4")], env=env,
                             capture_output=True, text=True, check=True)  # fmt: skip
        digests.add(out.stdout.strip())
    assert len(digests) == 1, digests


def test_stereo_aac_is_written_at_128_kbps_per_channel(tmp_path):
    """Binaural output keeps its interaural cues (FFmpeg's default of 128 kb/s for stereo moved them)."""
    from avflow.data.mux import AAC_BITS_PER_CHANNEL

    frames = torch.zeros(8, 16, 16, 3, dtype=torch.uint8)
    rng = np.random.default_rng(0)
    noise = torch.from_numpy(rng.standard_normal((2, 48000)).astype(np.float32) * 0.3)  # 1 s at 48 kHz
    path = write_video(tmp_path / "s.mp4", frames, 8, noise, 48000)
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.channels == 2
        assert stream.bit_rate > 1.5 * 128_000 and AAC_BITS_PER_CHANNEL == 128_000, stream.bit_rate


# ------------------------------------------------------------------------------------------------ errors


def one_line_error(fn, *args, match: str, **kwargs) -> str:
    with pytest.raises(MediaError, match=match) as err:
        fn(*args, **kwargs)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_bad_inputs_give_one_line_errors(videos, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    for fn in (probe, read_video, read_audio):
        assert str(text) in one_line_error(fn, text, match="cannot read as media")
    missing = tmp_path / "missing.mp4"
    for fn in (probe, read_video, read_audio):
        assert str(missing) in one_line_error(fn, missing, match="file not found")
    one_line_error(mux_audio, missing, sine(440, 1, SR), SR, tmp_path / "o.mp4", match="file not found")

    write_audio(tmp_path / "only.wav", sine(440, 0.5, SR), SR)
    one_line_error(read_video, tmp_path / "only.wav", match="no video stream")
    one_line_error(mux_audio, tmp_path / "only.wav", sine(440, 1, SR), SR, tmp_path / "o.mp4", match="no video stream")
    one_line_error(read_audio, videos["30"], match="no audio stream")

    for bad in (0.0, -1.0):
        one_line_error(read_video, videos["30"], duration=bad, match="duration must be > 0")
    one_line_error(read_video, videos["30"], start=5.0, match="past the end")
    sf.write(str(tmp_path / "empty.wav"), np.zeros((0, 2), np.float32), SR)
    one_line_error(read_audio, tmp_path / "empty.wav", match="zero audio duration")


def test_video_without_frames(videos, tmp_path):
    # an mp4 whose video track holds one undecodable packet: the stream exists but yields no frames
    broken = tmp_path / "broken.mp4"
    with av.open(str(videos["30"])) as source, av.open(str(broken), "w") as out:
        stream = out.add_stream_from_template(source.streams.video[0])
        packet = av.Packet(b"\x00\x00\x00\x09not h264!")
        packet.pts, packet.dts, packet.duration, packet.time_base = 0, 0, 512, source.streams.video[0].time_base
        packet.stream = stream
        out.mux(packet)
    assert probe(broken).n_frames == 1
    assert str(broken) in one_line_error(read_video, broken, match="no frames could be decoded")
    # an mp4 with an audio track and an empty video track: the muxer drops the empty track
    empty = tmp_path / "empty.mp4"
    with av.open(str(empty), "w") as out:
        video = out.add_stream("libx264", rate=30)
        video.width = video.height = 32
        audio = out.add_stream("aac", rate=SR, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 4096), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = SR, 0, Fraction(1, SR)
        for packet in [*audio.encode(frame), *audio.encode()]:
            out.mux(packet)
    one_line_error(read_video, empty, match="no video stream|no frames")


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_output_read_by_a_pipe_that_closes_stops_quietly(videos):
    """`avflow info clip.mp4 | head -1`: the reader goes away first; the command stops with no error line (it
    printed "avflow info: error: [Errno 32] Broken pipe") and the status of a command stopped by SIGPIPE."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    try:
        done = subprocess.run([sys.executable, "-m", "avflow.cli", "info", str(videos["23.976"])], stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=120)  # fmt: skip
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (141, "")


def test_cli_info(videos, tmp_path, capsys):
    assert cli_main(["info", str(videos["23.976"])]) == 0
    out = capsys.readouterr().out
    assert "32x32" in out and "23.976 fps" in out and "16000 Hz" in out and "2 channel" in out and "1.5" in out
    assert "stream 0: video" in out and "stream 1: audio" in out
    bad = tmp_path / "bad.mp4"
    bad.write_text("nope")
    assert cli_main(["info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.mp4" in err and "cannot read as media" in err and len(err.strip().splitlines()) == 1
