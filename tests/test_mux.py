"""Muxing a generated track onto a user's video: decoded as players decode it (the ffmpeg command-line tool), the track
is aligned with the video within 1 ms whatever time the video starts at (0, 0.2 s, a variable-rate clip), the video
packets stay byte-identical, and the video's own audio is kept, replaced or mixed in as asked."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from helpers import damaged_ts, prores_mov, with_subtitles

from avflow.data.media import mux_audio, read_audio
from avflow.errors import MediaError, MediaWarning

TOLERANCE_S = 1e-3


@pytest.fixture(scope="module")
def ffmpeg() -> str:
    """The ffmpeg command-line tool (Debian's package; `make test` installs it). Missing: a failure under CI=true,
    else a skip."""
    found = shutil.which("ffmpeg"), shutil.which("ffprobe")
    if None in found:
        message = "ffmpeg / ffprobe not found (apt-get install ffmpeg; `make test` installs it as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return found[0]


def make_video(path: Path, frame_starts_s: list[float], audio: np.ndarray | None = None, rate: int = 48000,
               layout: str = "stereo") -> Path:  # fmt: skip
    """h264 mp4 whose frame k starts at frame_starts_s[k] (time base 1/90000), optionally with an AAC track (C, N) of
    `layout` from time 0."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=30)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        video.options = {"preset": "veryfast", "bf": "2", "g": "8"}
        video.codec_context.time_base = Fraction(1, 90000)
        track = out.add_stream("aac", rate=rate, layout=layout) if audio is not None else None
        for k, start in enumerate(frame_starts_s):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), (9 * k) % 250, np.uint8), format="rgb24")
            frame.pts, frame.time_base = round(start * 90000), Fraction(1, 90000)
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        if track is not None:
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio, np.float32), format="fltp", layout=layout)
            frame.sample_rate, frame.pts, frame.time_base = rate, 0, Fraction(1, rate)
            for packet in [*track.encode(frame), *track.encode(None)]:
                out.mux(packet)
    return path


def cfr(start: float, frames: int = 36, fps: float = 30.0) -> list[float]:
    return [start + k / fps for k in range(frames)]


def vfr(start: float) -> list[float]:
    """Frame durations of 1/30, 1/12 and 1/20 s in turn: a variable-frame-rate clip."""
    starts, t = [], start
    for k in range(24):
        starts.append(t)
        t += (1 / 30, 1 / 12, 1 / 20)[k % 3]
    return starts


def bursts(seconds: float, rate: int, channels: int, seed: int = 0) -> np.ndarray:
    """(C, N) silence with short noise bursts at irregular times: one cross-correlation peak at the true lag."""
    rng = np.random.default_rng(seed)
    audio = np.zeros((channels, round(seconds * rate)), np.float32)
    for at in (0.05, 0.31, 0.52, 0.9):
        i = round(at * rate)
        audio[:, i : i + rate // 100] = rng.uniform(-0.5, 0.5, (channels, rate // 100))
    return audio


def probe_starts(path: Path) -> dict[str, float]:
    """Start time of the first video and audio stream, as ffprobe reports them (seconds)."""
    done = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,start_time", "-of", "json",
                           str(path)], capture_output=True, text=True, check=True)  # fmt: skip
    starts = {}
    for stream in json.loads(done.stdout)["streams"]:
        starts.setdefault(stream["codec_type"], float(stream["start_time"]))
    return starts


def ffmpeg_decode(ffmpeg: str, path: Path, rate: int) -> np.ndarray:
    """The first audio track decoded by the ffmpeg tool, mixed to mono: sample j is presented at its start + j/rate."""
    done = subprocess.run([ffmpeg, "-v", "error", "-i", str(path), "-map", "0:a:0", "-ac", "1", "-f", "f32le", "-"],
                          capture_output=True, check=True)  # fmt: skip
    return np.frombuffer(done.stdout, np.float32)


def lag_of(decoded: np.ndarray, reference: np.ndarray) -> int:
    """Samples by which `reference` appears delayed in `decoded` (cross-correlation peak)."""
    n = len(decoded) + len(reference)
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(decoded, size) * np.conj(np.fft.rfft(reference, size)), size)
    lag = int(np.argmax(np.abs(corr)))
    return lag if lag < size - len(reference) else lag - size


def packets(path: Path, kind: str, index: int = 0) -> list[tuple[int | None, int | None, bytes]]:
    with av.open(str(path)) as container:
        stream = getattr(container.streams, kind)[index]
        return [(p.pts, p.dts, bytes(p)) for p in container.demux(stream) if p.size]


@pytest.mark.parametrize(
    ("name", "frames", "rate", "channels"),
    [
        ("start 0 s", cfr(0.0), 16000, 1),
        ("start 0.2 s", cfr(0.2), 16000, 1),
        ("start 0.2 s, 44.1 kHz stereo", cfr(0.2), 44100, 2),
        ("variable frame rate, start 0.1 s", vfr(0.1), 16000, 1),
    ],
)
def test_decoded_track_is_aligned_with_the_video_within_1ms(ffmpeg, tmp_path, name, frames, rate, channels):
    source = make_video(tmp_path / "in.mp4", frames)
    generated = bursts(1.2, rate, channels)
    out = mux_audio(source, generated, rate, tmp_path / "out.mp4")
    assert packets(out, "video") == packets(source, "video")  # video packets byte-identical, same timestamps
    starts = probe_starts(out)
    video_start = starts["video"]
    assert abs(video_start - frames[0]) < 1e-4
    decoded = ffmpeg_decode(ffmpeg, out, rate)
    lag = lag_of(decoded, generated.mean(0))  # samples before generated sample 0 in what is presented
    error = starts["audio"] + lag / rate - video_start  # when generated sample 0 is presented, minus the first frame
    print(f"{name}: track starts {1000 * (starts['audio'] - video_start):+.3f} ms from the first video frame, "
          f"generated sample 0 is presented sample {lag}: {1000 * error:+.3f} ms")  # fmt: skip
    assert abs(error) <= TOLERANCE_S, f"{name}: off by {1000 * error:.3f} ms"
    # no encoder priming presented: the track starts with the first frame, and with sample 0 of the generated audio
    assert abs(starts["audio"] - video_start) <= TOLERANCE_S and 0 <= lag <= TOLERANCE_S * rate
    # PyAV reads it back with sample 0 at the first frame too
    back, _ = read_audio(out, sample_rate=rate, channels=1)
    assert abs(lag_of(back[0].numpy(), generated.mean(0))) <= TOLERANCE_S * rate


def test_existing_audio_kept_replaced_or_mixed(ffmpeg, tmp_path):
    original = np.random.default_rng(1).uniform(-0.1, 0.1, (2, 48000 * 2)).astype(np.float32)
    source = make_video(tmp_path / "in.mp4", cfr(0.0, frames=45), audio=original)
    generated = bursts(1.5, 16000, 1)

    kept = mux_audio(source, generated, 16000, tmp_path / "keep.mp4", existing_audio="keep")
    with av.open(str(kept)) as container:
        assert [(s.rate, s.channels) for s in container.streams.audio] == [(16000, 1), (48000, 2)]
        assert [bool(s.disposition & av.stream.Disposition.default) for s in container.streams.audio] == [True, False]
    assert packets(kept, "audio", 1) == packets(source, "audio")  # the original track, unchanged
    assert packets(kept, "video") == packets(source, "video")

    replaced = mux_audio(source, generated, 16000, tmp_path / "replace.mp4", existing_audio="replace")
    with av.open(str(replaced)) as container:
        assert [(s.rate, s.channels) for s in container.streams.audio] == [(16000, 1)]

    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(24000) / 16000)).astype(np.float32)[None]  # (1, N)
    with pytest.warns(MediaWarning, match="its audio goes on 0.50 s past the video's end"):  # 2 s of it, 1.5 s video
        mixed = mux_audio(source, tone, 16000, tmp_path / "mix.mp4", existing_audio="mix")
    with av.open(str(mixed)) as container:  # at the source's rate, the higher one
        assert [(s.rate, s.channels) for s in container.streams.audio] == [(48000, 2)]
    got, _ = read_audio(mixed, sample_rate=16000)
    reference, _ = read_audio(source, sample_rate=16000)
    n = min(got.shape[1], reference.shape[1], tone.shape[1])
    got, reference, tone = got[:, :n].numpy(), reference[:, :n].numpy(), tone[:, :n]

    def rms(x):
        return float(np.sqrt((x**2).mean()))

    # both are in it: the mix is far closer to their sum than to either one (AAC's own error aside: at 48 kHz the
    # encoder codes much of the white-noise source as noise, 0.011 RMS of its 0.032)
    assert rms(got - (reference + tone)) < 0.5 * min(rms(got - reference), rms(got - tone))
    with pytest.raises(MediaError, match="must be one of keep, replace, mix"):
        mux_audio(source, generated, 16000, tmp_path / "x.mp4", existing_audio="drop")
    assert not (tmp_path / "x.mp4").exists()


def test_mix_keeps_the_other_tracks_and_the_first_track_s_language(tmp_path):
    """A video with an English and a French track, `--audio mix`: the French track was dropped and the mixed track
    lost its language. The sum takes the first track's language and title; the other follows unchanged (not
    default), as `describe` says."""
    from avflow.data.audio_tracks import describe

    source = tmp_path / "two.mp4"
    with av.open(str(source), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        tracks = []
        for language, title in (("eng", "English"), ("fra", "Français")):
            track = out.add_stream("aac", rate=48000, layout="mono")
            track.metadata.update({"language": language, "title": title})
            tracks.append(track)
        for k in range(50):
            out.mux(video.encode(av.VideoFrame.from_ndarray(np.full((32, 32, 3), 5 * k, np.uint8), format="rgb24")))
        out.mux(video.encode(None))
        for i, track in enumerate(tracks):
            sound = bursts(2.0, 48000, 1, seed=i)
            frame = av.AudioFrame.from_ndarray(sound, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 48000, 0
            out.mux([*track.encode(frame), *track.encode(None)])
    mixed = mux_audio(source, bursts(2.0, 16000, 1, seed=5), 16000, tmp_path / "mix.mp4", existing_audio="mix")
    with av.open(str(mixed)) as container:
        audio = container.streams.audio
        assert [(s.metadata.get("language"), bool(s.disposition & av.stream.Disposition.default)) for s in audio] == [
            ("eng", True), ("fra", False)]  # fmt: skip
        assert audio[0].metadata.get("title", audio[0].metadata.get("name")) == "English"
    assert packets(mixed, "audio", 1) == packets(source, "audio", 1)  # the French track, unchanged
    assert packets(mixed, "audio", 0) != packets(source, "audio", 0)  # the English one holds the new sound too
    assert describe("mix", 2) == "its first audio track mixed in, its other audio track kept as track 2 (--audio mix)"


def test_mix_keeps_the_source_after_a_shorter_new_track_and_its_top_octaves(tmp_path):
    """`--audio mix` with a new track shorter than the video (v2a of its first seconds) keeps the video's own sound
    after the new track ends (it was cut to the new track's length, then silence), and a 48 kHz source keeps what
    lies above a 16 kHz track's 8 kHz band (it was resampled down to the new track's rate)."""
    t = np.arange(48000 * 3) / 48000
    original = np.repeat(0.2 * np.sin(2 * np.pi * 12000 * t)[None], 2, axis=0).astype(np.float32)  # 12 kHz, 3 s
    source = make_video(tmp_path / "in.mp4", cfr(0.0, frames=90), audio=original)
    generated = np.zeros((2, 8000), np.float32)  # 0.5 s of the model's 16 kHz
    generated[:, ::1600] = 0.5
    mixed = mux_audio(source, generated, 16000, tmp_path / "mix.mp4", existing_audio="mix")
    got, rate = read_audio(mixed)
    assert rate == 48000
    late = got[:, round(1.5 * rate) : round(2.5 * rate)].numpy()  # long after the new track's end
    rms = np.sqrt((late**2).mean(axis=1))
    assert (rms > 0.1).all(), rms  # the 12 kHz tone (RMS 0.14) goes on
    spectrum = np.abs(np.fft.rfft(late[0]))
    freqs = np.fft.rfftfreq(late.shape[1], 1 / rate)
    assert spectrum[np.abs(freqs - 12000) < 50].max() > 0.5 * spectrum.max()


def test_mix_with_a_surround_source_downmixes_it(tmp_path):
    """A 5.1 track (cameras, films) is mixed down to stereo with its layout before the new track is added: its
    centre, where dialogue sits, is heard in both ears, and nothing fails after the work."""
    t = np.arange(48000 * 2) / 48000
    surround = np.zeros((6, t.size), np.float32)
    surround[2] = 0.3 * np.sin(2 * np.pi * 300 * t)  # front centre only (5.1: FL FR FC LFE BL BR)
    source = make_video(tmp_path / "in.mp4", cfr(0.0, frames=45), audio=surround, layout="5.1")
    generated = np.zeros((2, 24000), np.float32)
    generated[0, ::4000] = 0.5  # clicks on the left only
    with pytest.warns(MediaWarning, match="goes on 0.50 s past the video's end"):
        mixed = mux_audio(source, generated, 16000, tmp_path / "mix.mp4", existing_audio="mix")
    with av.open(str(mixed)) as container:
        assert [(s.rate, s.channels) for s in container.streams.audio] == [(48000, 2)]
    got, _ = read_audio(mixed)
    tone = got[:, 2000:-2000].numpy()
    rms = np.sqrt((tone**2).mean(axis=1))  # (2,) the centre's tone, in both ears alike
    assert rms.min() > 0.1 and abs(rms[0] - rms[1]) < 0.1 * rms.max(), rms


def test_a_video_an_mp4_cannot_hold_is_refused_before_any_work(tmp_path):
    """VP8 (WebM) cannot be copied into an mp4 unchanged: a one-line error naming the codec, from the check the
    commands run before generating, and from mux_audio itself; nothing is written."""
    from avflow.data.mux import check_copyable

    webm = tmp_path / "in.webm"
    with av.open(str(webm), "w") as out:
        video = out.add_stream("libvpx", rate=10)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        for k in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 20 * k, np.uint8), format="rgb24")
            frame.pts = k
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
    with pytest.raises(MediaError, match=r"in\.webm: its vp8 video cannot be copied unchanged into an \.mp4 file"):
        check_copyable(webm, tmp_path / "out.mp4")
    with pytest.raises(MediaError, match="vp8"):
        mux_audio(webm, np.zeros((2, 16000), np.float32), 16000, tmp_path / "out.mp4")
    assert not (tmp_path / "out.mp4").exists()
    check_copyable(make_video(tmp_path / "h264.mp4", cfr(0.0, frames=10)), tmp_path / "out.mp4")  # h264: fine


@pytest.mark.parametrize("container", ["mp4", "webm", "mkv"])
def test_av1_is_copied_unchanged(tmp_path, container):
    """AV1 (a YouTube download, an Android screen recording, a camera's new exports) is read by libdav1d, a decoder
    no encoder shares a name with: it was refused as "its libdav1d video cannot be copied unchanged into an .mp4"
    and now goes into the mp4 packet for packet, whatever container it came in."""
    from avflow.data.mux import check_copyable

    if "libsvtav1" not in av.codecs_available:
        pytest.skip("this PyAV build has no AV1 encoder to make the test file")
    source = tmp_path / f"in.{container}"
    with av.open(str(source), "w") as out:
        video = out.add_stream("libsvtav1", rate=16, options={"preset": "11"})
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        for k in range(24):
            frame = np.zeros((64, 64, 3), np.uint8)
            frame[:, (4 * k) % 56 : (4 * k) % 56 + 8] = 255  # a moving bar
            out.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(video.encode(None))
    check_copyable(source, tmp_path / "out.mp4")
    mux_audio(source, np.zeros((2, 24000), np.float32), 16000, tmp_path / "out.mp4")
    with av.open(str(tmp_path / "out.mp4")) as written:
        assert written.streams.video[0].codec_context.codec.id == av.codec.Codec("av1", "r").id
        assert written.streams.video[0].codec_tag == "av01"
    assert [p[2] for p in packets(tmp_path / "out.mp4", "video")] == [p[2] for p in packets(source, "video")]


def test_an_mkv_cut_short_is_read_and_copied_whole(ffmpeg, tmp_path):
    """A recorder that stops abruptly (OBS writes MKV so that a crash leaves a playable file) leaves an MKV without
    its index, where no seek works and a failed one leaves the demuxer at the end: every command failed with
    "[Errno 1] Operation not permitted". The frames it holds are counted, read (whole, from a start, in windows)
    and copied packet for packet. (Made by ffmpeg, as recorders do: with an AAC track, its seeks fail.)"""
    from avflow.data.media import iter_video_windows, probe, read_video

    whole, cut = tmp_path / "whole.mkv", tmp_path / "cut.mkv"
    subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=30", "-f", "lavfi", "-i",
                    "sine=f=440:sample_rate=48000", "-t", "8", "-c:v", "libx264", "-preset", "ultrafast", "-c:a",
                    "aac", "-shortest", str(whole)], check=True)  # fmt: skip

    def seeks(path: Path) -> bool:
        with av.open(str(path)) as container:
            try:
                container.seek(0, stream=container.streams.video[0], backward=True)
            except av.FFmpegError:
                return False
        return True

    for tenths in (3, 4, 5, 6):  # where the cut falls in a cluster decides whether the demuxer can seek
        cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * tenths // 10])  # the index at the end is gone
        if not seeks(cut):
            break
    assert not seeks(cut)
    with av.open(str(cut)) as container:
        held = [bytes(p) for p in container.demux(container.streams.video[0]) if p.size]
    with av.open(str(whole)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert 30 < len(held) < len(frames)
    info = probe(cut)
    assert info.n_frames == len(held) and abs(info.duration - len(held) / 30) <= 1e-3  # matroska: ms timestamps
    got = read_video(cut)
    assert len(got.frames) == len(held) and np.array_equal(got.frames.numpy(), np.stack(frames[: len(held)]))
    later = read_video(cut, start=0.5, duration=0.5)
    assert torch.equal(later.frames, got.frames[15:30])
    windows = list(iter_video_windows(cut, window_s=0.4))
    assert torch.equal(torch.cat([w.frames for w in windows]), got.frames)
    out = mux_audio(cut, np.zeros((1, 16000), np.float32), 16000, tmp_path / "out.mp4")
    assert [p[2] for p in packets(out, "video")] == held


def test_keep_loses_nothing_an_mp4_can_hold(tmp_path):
    """`--audio keep` copies the kept track from its first sample (here 0.5 s before the first frame, which a seek to
    the first frame dropped), the file's and the tracks' tags (title, language, track title), the cover art and the
    display rotation."""
    src, rate = tmp_path / "rich.mp4", 48000
    with av.open(str(src), "w") as out:
        out.metadata["title"] = "my holiday"
        video = out.add_stream("libx264", rate=30)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        video.codec_context.time_base = Fraction(1, 90000)
        video.metadata["language"] = "eng"
        if hasattr(video, "set_display_rotation"):
            video.set_display_rotation(90)
        track = out.add_stream("aac", rate=rate, layout="stereo")
        track.metadata.update({"language": "fra", "title": "commentary"})
        cover = out.add_stream("png")
        cover.width, cover.height, cover.pix_fmt = 16, 16, "rgb24"
        cover.disposition = av.stream.Disposition.attached_pic
        for k, start in enumerate(cfr(0.5)):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 7 * k, np.uint8), format="rgb24")
            frame.pts, frame.time_base = round(start * 90000), Fraction(1, 90000)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        frame = av.AudioFrame.from_ndarray(bursts(2.0, rate, 2), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = rate, 0, Fraction(1, rate)
        out.mux([*track.encode(frame), *track.encode(None)])
        out.mux([*cover.encode(av.VideoFrame.from_ndarray(np.full((16, 16, 3), 200, np.uint8), "rgb24")),
                 *cover.encode(None)])  # fmt: skip

    def described(path: Path) -> tuple[dict, list, int, bytes]:
        with av.open(str(path)) as c:
            tags = {k: v for k, v in c.metadata.items() if k == "title"}
            streams = [(s.type, s.codec_context.name, int(s.disposition), {k: v for k, v in s.metadata.items()
                        if k in ("language", "name")}) for s in c.streams]  # fmt: skip
            kept = c.streams.audio[-1]
            samples = sum(f.samples for f in c.decode(kept))
        with av.open(str(path)) as c:
            picture = next(bytes(p) for p in c.demux(c.streams.video[-1]) if p.size)
        return tags, streams, samples, picture

    out = mux_audio(src, np.zeros((2, rate), np.float32), rate, tmp_path / "out.mp4", existing_audio="keep")
    tags, streams, samples, picture = described(src)
    assert described(out) == (tags, [streams[0], ("audio", "aac", 1, {"language": "und"}), (*streams[1][:2], 0,
                              streams[1][3]), streams[2]], samples, picture)  # fmt: skip
    assert tags == {"title": "my holiday"} and samples >= 2 * rate and streams[1][3]["name"] == "commentary"
    from avflow.data.media import probe

    assert probe(out).quarter_turns == probe(src).quarter_turns


def test_pcm_from_an_avi_is_kept_with_a_stated_layout(tmp_path, monkeypatch):
    """PCM read from an AVI has no channel order ("2 channels"), which an mp4 cannot describe: the kept copy is given
    the usual layout of its channel count (the mux failed at its very end, a traceback after all the work), and a
    count with no usual layout is refused before any work."""
    from avflow.data import mux
    from avflow.data.mux import check_copyable

    def avi(path: Path, layout: str) -> Path:
        with av.open(str(path), "w") as out:
            video = out.add_stream("libx264", rate=16)
            video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
            track = out.add_stream("pcm_s16le", rate=16000, layout=layout)
            for k in range(24):
                frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 9 * k, np.uint8), format="rgb24")
                frame.pts, frame.time_base = k, Fraction(1, 16)
                out.mux(video.encode(frame))
            out.mux(video.encode(None))
            channels = len(av.AudioLayout(layout).channels)
            sound = (np.random.default_rng(0).standard_normal((1, 16000 * channels)) * 3000).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(sound, format="s16", layout=layout)
            frame.sample_rate, frame.pts = 16000, 0
            out.mux([*track.encode(frame), *track.encode(None)])
        return path

    stereo = avi(tmp_path / "stereo.avi", "stereo")
    with av.open(str(stereo)) as c:
        assert c.streams.audio[0].codec_context.layout.name == "2 channels"  # what the AVI tells
    out = mux_audio(stereo, np.zeros((2, 16000), np.float32), 16000, tmp_path / "out.mp4", existing_audio="keep")
    with av.open(str(out)) as c:
        kept = c.streams.audio[1]
        assert (kept.codec_context.name, kept.codec_context.layout.name) == ("pcm_s16le", "stereo")
        assert sum(f.samples for f in c.decode(kept)) == 16000
    monkeypatch.delitem(mux.ORDERED_LAYOUTS, 2)  # as for a channel count with no usual layout
    with pytest.raises(MediaError, match="its pcm_s16le audio cannot be copied unchanged into an .mp4 file; use"):
        check_copyable(stereo, tmp_path / "o.mp4", "keep")
    check_copyable(stereo, tmp_path / "o.mp4", "replace")


def test_subtitles_are_copied_or_named_as_left_out(tmp_path, capsys):
    """An mp4's subtitles are copied with their language and text; SRT subtitles from an mkv, which an mp4 cannot
    hold, are named by `left_out` and said in the command's last line rather than dropped silently."""
    from avflow.cli import main
    from avflow.data.mux import left_out

    mp4 = with_subtitles(tmp_path / "subs.mp4", "mov_text", b"hello there")
    out = mux_audio(mp4, np.zeros((2, 32000), np.float32), 16000, tmp_path / "out.mp4")
    with av.open(str(out)) as c:
        (subs,) = c.streams.subtitles
        assert subs.metadata.get("language") == "deu"
        assert [bytes(p)[2:] for p in c.demux(subs) if p.size > 2] == [b"hello there"]
    assert left_out(mp4, tmp_path / "o.mp4") == []
    mkv = with_subtitles(tmp_path / "subs.mkv", "subrip", b"hallo")
    assert left_out(mkv, tmp_path / "o.mp4") == ["srt subtitles"]
    from avflow.data.media import write_audio

    mono = write_audio(tmp_path / "mono.wav", bursts(2.0, 16000, 1), 16000)
    spoken = tmp_path / "spoken.mp4"
    assert main(["binaural", str(mkv), "--mono", str(mono), "--mode", "spatialise", "-o", str(spoken)]) == 0
    assert "the video had no audio; its srt subtitles left out (the output's container cannot hold them)" in (
        capsys.readouterr().out)  # fmt: skip
    with av.open(str(spoken)) as c:
        assert not c.streams.subtitles


def test_an_mkv_s_attachments_are_named_as_left_out(tmp_path):
    """An MKV's attached fonts (for its styled subtitles), which no mp4 or mov holds, were dropped without a word:
    `left_out` names each, as the commands' last line says."""
    from avflow.data.audio_tracks import describe
    from avflow.data.mux import left_out

    mkv = tmp_path / "styled.mkv"
    with av.open(str(mkv), "w") as out:
        out.add_attachment("Subtitles-Regular.ttf", "application/x-truetype-font", b"\x00\x01\x00\x00" + bytes(60))
        video = out.add_stream("libx264", rate=16)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        for k in range(16):
            out.mux(video.encode(av.VideoFrame.from_ndarray(np.full((32, 32, 3), 9 * k, np.uint8), format="rgb24")))
        out.mux(video.encode(None))
    names = left_out(mkv, tmp_path / "o.mp4")
    assert names == ["attachment Subtitles-Regular.ttf"] == left_out(mkv, tmp_path / "o.mov")
    out = mux_audio(mkv, np.zeros((1, 16000), np.float32), 16000, tmp_path / "o.mp4")
    assert [p[2] for p in packets(out, "video")] == [p[2] for p in packets(mkv, "video")]
    assert describe("keep", 0, names).endswith("its attachment Subtitles-Regular.ttf left out (the output's "
                                               "container cannot hold them)")  # fmt: skip


def two_angles(path: Path, timecode: str | None = None) -> Path:
    """1 s at 10 fps with two h264 video tracks (two camera angles); with `timecode`, a timecode track for the first."""
    with av.open(str(path), "w") as out:
        tracks = [out.add_stream("libx264", rate=10) for _ in range(2)]
        for track in tracks:
            track.width, track.height, track.pix_fmt = 32, 32, "yuv420p"
        if timecode:
            tracks[0].metadata["timecode"] = timecode
        for k in range(10):
            for angle, track in enumerate(tracks):
                frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 20 * k + 50 * angle, np.uint8), format="rgb24")
                frame.pts = k
                out.mux(track.encode(frame))
        for track in tracks:
            out.mux(track.encode(None))
    return path


def with_data_track(path: Path) -> Path:
    """An MPEG-TS (a drone's or a dashcam's) with an h264 video and a data track of 10 packets (KLV-like telemetry)."""
    with av.open(str(path), "w", format="mpegts") as out:
        video = out.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        data = out.add_data_stream()
        for k in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 20 * k, np.uint8), format="rgb24")
            frame.pts = k
            out.mux(video.encode(frame))
            packet = av.Packet(b"TELEMETRY" + bytes([k]) * 7)
            packet.stream, packet.time_base = data, Fraction(1, 1000)
            packet.pts = packet.dts = 100 * k
            out.mux(packet)
        out.mux(video.encode(None))
    return path


def stream_packets(path: Path, kind: str, nth: int = 0) -> list[tuple[bytes, Fraction]]:
    """(bytes, presentation time) of the packets of the nth stream of a kind ("video", "data")."""
    with av.open(str(path)) as container:
        stream = [s for s in container.streams if s.type == kind][nth]
        return [(bytes(p), p.pts * stream.time_base) for p in container.demux(stream) if p.size]


def test_further_video_tracks_and_the_timecode_are_kept(tmp_path):
    """A second camera angle was dropped without a word: it is copied unchanged after the new audio (not the default
    track); a timecode track is kept once (the muxer writes it from the first video's tag), not doubled."""
    from avflow.data.mux import left_out

    source = two_angles(tmp_path / "angles.mp4", timecode="01:00:00:00")
    with av.open(str(source)) as c:
        (timecode,) = [s.metadata["timecode"] for s in c.streams.data]
    out = mux_audio(source, np.zeros((2, 16000), np.float32), 16000, tmp_path / "out.mp4")
    with av.open(str(out)) as c:
        assert [s.type for s in c.streams if s.type != "data"] == ["video", "audio", "video"]
        assert not c.streams.video[1].disposition & av.stream.Disposition.default
        if int(av.__version__.split(".")[0]) >= 18:  # before, the muxer wrote no timecode track from the tag
            assert [s.metadata.get("timecode") for s in c.streams.data] == [timecode]
    assert stream_packets(out, "video", 1) == stream_packets(source, "video", 1)
    assert stream_packets(out, "video", 0) == stream_packets(source, "video", 0)
    assert left_out(source, tmp_path / "o.mp4") == []


def test_data_tracks_are_copied_where_the_container_holds_them_else_named(tmp_path):
    """Telemetry in an MPEG-TS: an mp4 cannot hold a data track of no known kind, so `left_out` names it for the
    command's last line; a mov holds it, and every packet comes through with its bytes and time (the mov muxer dropped
    the last one, which had no duration)."""
    from avflow.data.mux import left_out

    source = with_data_track(tmp_path / "drone.ts")
    assert left_out(source, tmp_path / "o.mp4") == ["bin_data data track"]
    assert left_out(source, tmp_path / "o.mov") == []
    mp4 = mux_audio(source, np.zeros((2, 16000), np.float32), 16000, tmp_path / "out.mp4")
    with av.open(str(mp4)) as c:
        assert [s.type for s in c.streams] == ["video", "audio"]
    mov = mux_audio(source, np.zeros((2, 16000), np.float32), 16000, tmp_path / "out.mov")
    assert stream_packets(mov, "data") == stream_packets(source, "data")
    assert len(stream_packets(source, "data")) == 10


def test_a_prores_mov_is_written_to_a_mov_and_the_mp4_error_says_so(tmp_path, capsys):
    """ProRes with PCM (an editor's export) cannot be copied into an mp4: the error says a .mov holds it; the commands
    take `-o NAME.mov` (every container the muxer writes), where its video and audio packets come through unchanged."""
    from avflow.cli import main
    from avflow.commands.options import VIDEO_SUFFIXES
    from avflow.data.mux import MUX_FORMATS

    assert set(VIDEO_SUFFIXES) == set(MUX_FORMATS)
    source = prores_mov(tmp_path / "edit.mov")
    assert main(["binaural", str(source), "--mode", "spatialise", "-o", str(tmp_path / "b.mp4")]) == 2
    assert "its prores video cannot be copied unchanged into an .mp4 file; write a .mov, which holds it" in (
        capsys.readouterr().err)  # fmt: skip
    assert main(["binaural", str(source), "--mode", "spatialise", "-o", str(tmp_path / "b.mov")]) == 0
    with av.open(str(tmp_path / "b.mov")) as c:
        assert [(s.type, s.codec_context.name) for s in c.streams] == [
            ("video", "prores"), ("audio", "aac"), ("audio", "pcm_s16le")]  # fmt: skip
    assert stream_packets(tmp_path / "b.mov", "video") == stream_packets(source, "video")
    assert stream_packets(tmp_path / "b.mov", "audio", 1) == stream_packets(source, "audio")


def test_an_output_named_for_the_user_is_a_mov_where_only_a_mov_holds_the_video(tmp_path, monkeypatch, capsys):
    """With no -o, binaural and generate v2a name their output: .mov for a ProRes export (the mp4 they named failed),
    .mp4 for the rest."""
    from avflow.cli import main
    from avflow.data.mux import holding_suffix

    monkeypatch.chdir(tmp_path)
    prores = prores_mov(tmp_path / "edit.mov")
    h264 = make_video(tmp_path / "clip.mp4", cfr(0.0, frames=30), audio=bursts(1.0, 48000, 2))
    assert (holding_suffix(prores), holding_suffix(h264), holding_suffix(tmp_path / "missing.mp4")) == (
        ".mov", ".mp4", ".mp4")  # fmt: skip
    assert main(["binaural", str(prores), "--mode", "spatialise"]) == 0
    assert main(["binaural", str(h264), "--mode", "spatialise"]) == 0
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == ["clip_binaural.mp4", "edit_binaural.mov"]
    assert "wrote outputs/edit_binaural.mov" in capsys.readouterr().out


def test_chapters_are_copied_and_their_track_is_not_called_left_out(tmp_path):
    """A film's chapters (an mp4 keeps them in a text track the demuxer reads itself) were lost; they are copied with
    their times and titles, and their track is not named as a data track left out."""
    from avflow.data.mux import left_out

    source = make_video(tmp_path / "film.mp4", cfr(0.0, frames=60))
    chaptered = tmp_path / "chaptered.mp4"
    with av.open(str(source)) as src, av.open(str(chaptered), "w") as out:
        video = out.add_stream_from_template(src.streams.video[0])
        out.set_chapters([{"id": 1, "start": 0, "end": 1000, "time_base": Fraction(1, 1000),
                           "metadata": {"title": "Intro"}},
                          {"id": 2, "start": 1000, "end": 2000, "time_base": Fraction(1, 1000),
                           "metadata": {"title": "Main"}}])  # fmt: skip
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = video
                out.mux(packet)

    def chapters(path: Path) -> list[tuple[float, str]]:
        with av.open(str(path)) as c:
            return [(float(ch["start"] * ch["time_base"]), ch["metadata"].get("title")) for ch in c.chapters()]

    assert chapters(chaptered) == [(0.0, "Intro"), (1.0, "Main")]
    assert left_out(chaptered, tmp_path / "o.mp4") == []
    for suffix in (".mp4", ".mov"):
        out = mux_audio(chaptered, np.zeros((2, 16000), np.float32), 16000, tmp_path / f"out{suffix}")
        assert chapters(out) == chapters(chaptered), suffix


@pytest.mark.parametrize("tag", ["hvc1", "hev1"])
def test_the_video_s_codec_tag_is_kept_where_the_container_takes_it(tmp_path, tag):
    """A phone's HEVC is tagged 'hvc1', which Apple's players need: the mp4 muxer wrote 'hev1' over it (the packets
    unchanged, the file no longer playing in QuickTime or on the phone). A tag the container does not take (an AVI's
    'MJPG' into an mp4) is left to the muxer, as before."""
    source = tmp_path / f"{tag}.mp4"
    with av.open(str(source), "w") as out:
        video = out.add_stream("libx265", rate=16)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        video.options = {"x265-params": "log-level=error"}
        video.codec_context.codec_tag = tag
        for k in range(16):
            out.mux(video.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), 9 * k, np.uint8), "rgb24")))
        out.mux(video.encode(None))

    def video_tag(path: Path) -> str:
        with av.open(str(path)) as c:
            return c.streams.video[0].codec_context.codec_tag

    assert video_tag(source) == tag
    for suffix in (".mp4", ".mov"):
        out = mux_audio(source, np.zeros((2, 16000), np.float32), 16000, tmp_path / f"out{suffix}")
        assert video_tag(out) == tag, suffix
        assert stream_packets(out, "video") == stream_packets(source, "video")
    avi = tmp_path / "cam.avi"
    with av.open(str(avi), "w") as out:
        video = out.add_stream("mjpeg", rate=16)
        video.width, video.height, video.pix_fmt = 64, 48, "yuvj420p"
        for k in range(16):
            out.mux(video.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), 9 * k, np.uint8), "rgb24")))
        out.mux(video.encode(None))
    assert video_tag(avi) == "MJPG"
    out = mux_audio(avi, np.zeros((2, 16000), np.float32), 16000, tmp_path / "cam.mp4")
    assert video_tag(out) != "MJPG" and stream_packets(out, "video") == stream_packets(avi, "video")


def test_a_phone_s_metadata_keys_are_kept(tmp_path):
    """An iPhone keeps where a video was shot in `com.apple.quicktime.location.ISO6709`, a QuickTime `mdta` key the
    muxer writes only when asked: it was dropped (with the make, model and software keys); a file without such keys
    is written as before."""
    source = make_video(tmp_path / "plain.mp4", cfr(0.0, frames=30))
    phone = tmp_path / "IMG_0001.mov"
    keys = {"com.apple.quicktime.location.ISO6709": "+48.8584+002.2945+035.000/", "com.apple.quicktime.make": "Apple",
            "title": "tour"}  # fmt: skip
    with av.open(str(source)) as src, av.open(str(phone), "w", options={"movflags": "use_metadata_tags"}) as out:
        out.metadata.update(keys)
        video = out.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = video
                out.mux(packet)
    for suffix in (".mp4", ".mov"):
        out = mux_audio(phone, np.zeros((2, 16000), np.float32), 16000, tmp_path / f"out{suffix}")
        with av.open(str(out)) as c:
            assert {k: c.metadata.get(k) for k in keys} == keys, suffix
    out = mux_audio(source, np.zeros((2, 16000), np.float32), 16000, tmp_path / "plain_out.mp4")
    with av.open(str(out)) as c:
        assert not any("." in key for key in c.metadata)


def test_damaged_packets_the_muxer_refuses_are_skipped_and_said(tmp_path, capsys):
    """A broken recording's AAC packets with a mangled header: the mp4 muxer refused them, a traceback after all the
    work. They are skipped (as players skip them) and said: a MediaWarning, a note line from the command, or
    `notes` for the web UI; every other packet is written."""
    from avflow.cli import main
    from avflow.errors import MediaWarning

    source = damaged_ts(tmp_path / "capture.ts")
    silence = np.zeros((2, 32000), np.float32)
    with pytest.warns(MediaWarning, match=r"capture\.ts: 2 damaged packets of its aac audio track skipped"):
        out = mux_audio(source, silence, 16000, tmp_path / "out.mp4")
    assert len(stream_packets(out, "audio", 1)) == len(stream_packets(source, "audio")) - 2
    assert len(stream_packets(out, "video")) == len(stream_packets(source, "video"))  # (Annex B -> length-prefixed)
    notes: list[str] = []
    mux_audio(source, silence, 16000, tmp_path / "out2.mp4", notes=notes)
    assert notes == ["2 damaged packets of its aac audio track skipped (the muxer refused them; players skip them "
                     "too)"]  # fmt: skip
    assert main(["binaural", str(source), "--mode", "spatialise", "-o", str(tmp_path / "b.mp4")]) == 0
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("spatialise:")]
    assert err == [f"avflow binaural: note: {source}: {notes[0]}"]  # the note once (beside the progress bar)


def test_mix_goes_on_past_the_video_s_end_where_its_audio_does(tmp_path):
    """`--audio mix` onto a 1 s video whose own audio lasts 2.5 s: the sum was cut at the video's end with nothing
    said (`--audio keep` keeps all of it, and the help promised the longer of the two). The mixed track lasts as long
    as the video's audio, which goes on whole after the video ends, and a note says so."""
    t = np.arange(round(2.5 * 48000)) / 48000
    original = np.repeat(0.3 * np.sin(2 * np.pi * 440 * t)[None], 2, axis=0).astype(np.float32)
    source = make_video(tmp_path / "in.mp4", cfr(0.0, frames=30), audio=original)  # 1 s of video
    generated = bursts(1.0, 16000, 1)
    with pytest.warns(MediaWarning, match=r"in\.mp4: its audio goes on 1\.50 s past the video's end, and so does"):
        mixed = mux_audio(source, generated, 16000, tmp_path / "mix.mp4", existing_audio="mix")
    got, rate = read_audio(mixed)
    assert rate == 48000 and abs(got.shape[1] / rate - 2.5) <= 1e-3, got.shape[1] / rate
    late = got[:, round(1.2 * rate) : round(2.4 * rate)].numpy()  # after the video's end: the source alone
    rms = np.sqrt((late**2).mean(axis=1))
    assert (abs(rms - 0.3 / np.sqrt(2)) < 0.02).all(), rms
    notes: list[str] = []
    short = make_video(tmp_path / "short.mp4", cfr(0.0, frames=30), audio=original[:, : round(1.05 * 48000)])
    mux_audio(short, generated, 16000, tmp_path / "mix2.mp4", existing_audio="mix", notes=notes)
    assert notes == []  # an audio track that ends within 0.1 s of the video: the usual, not said
    assert abs(read_audio(tmp_path / "mix2.mp4")[0].shape[1] / 48000 - 1.05) <= 1e-3  # and not cut either


def faststart_mp4(path: Path, frames: int = 50) -> Path:
    """mp4 with its index at the front (`+faststart`: phones, web exports), 25 fps h264 with B-frames (noise sliding
    sideways: bytes enough that a cut falls among the frames, motion enough for B-frames), and 2 s of AAC."""
    noise = np.random.default_rng(0).integers(0, 256, (48, 128, 3), np.uint8)
    with av.open(str(path), "w", options={"movflags": "+faststart"}) as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        video.options = {"g": "12", "bf": "2"}
        track = out.add_stream("aac", rate=48000, layout="mono")
        for k in range(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(noise[:, 2 * k % 64 :][:, :64]), format="rgb24")
            frame.pts = k
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        frame = av.AudioFrame.from_ndarray(bursts(2.0, 48000, 1), format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 48000, 0, Fraction(1, 48000)
        out.mux([*track.encode(frame), *track.encode(None)])
    return path


def decoded_frames(ffmpeg: str, path: Path) -> list[str]:
    """The checksums of the video frames the ffmpeg tool shows, in order."""
    done = subprocess.run([ffmpeg, "-v", "error", "-i", str(path), "-map", "0:v:0", "-f", "framemd5", "-"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return [line.split(",")[-1].strip() for line in done.stdout.splitlines() if not line.startswith("#")]


def stream_seconds(path: Path) -> list[float]:
    """Each stream's duration as ffprobe reports it (from the edit list: what players present)."""
    done = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=duration", "-of", "json", str(path)],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return [float(stream["duration"]) for stream in json.loads(done.stdout)["streams"]]


@pytest.mark.parametrize("where", ["P-frame", "B-frame", "audio"])
def test_an_mp4_cut_short_is_copied_as_far_as_it_holds_whole_frames(ffmpeg, tmp_path, where):
    """An mp4 with its index at the front, cut short: the readers hold the samples whose bytes are all in the file,
    up to the first one missing, and the new track is that long; but the part of a sample at the cut was copied (cut
    in a frame: the output's video one frame longer than its new track, its header 2.08 s for 1.92), and, cut in a
    B-frame, the frames decoded before it but shown after it were presented too. The packets copied are the whole
    ones; those frames stay for the frames before them that reference them, unshown (the edit list ends where the
    frames held do): players show the frames the readers hold, and the video and the new track end together."""
    from avflow.data.media import probe

    whole, cut = faststart_mp4(tmp_path / "whole.mp4"), tmp_path / "cut.mp4"
    with av.open(str(whole)) as c:
        full = [(p.pts, p.pos, bytes(p), p.is_keyframe) for p in c.demux(c.streams.video[0]) if p.size]
    with av.open(str(whole)) as c:
        sound = [(p.pos, p.size) for p in c.demux(c.streams.audio[0]) if p.size]
    later = [(pts, pos, len(data), key, before) for (pts, pos, data, key), (before, *_) in zip(full[20:], full[19:])]
    cuts = {"P-frame": next(pos + size // 2 for pts, pos, size, key, before in later if pts > before and not key),
            "B-frame": next(pos + size // 2 for pts, pos, size, key, before in later if pts < before),
            "audio": sound[40][0] + sound[40][1] // 2}  # fmt: skip
    size = cuts[where]
    cut.write_bytes(whole.read_bytes()[:size])
    with pytest.warns(MediaWarning, match="cut short"):
        shown = probe(cut).n_frames
    out = mux_audio(cut, np.zeros((1, 48000), np.float32), 16000, tmp_path / "out.mp4", existing_audio="keep")
    intact = [(pts, data) for pts, pos, data, _ in full if pos + len(data) <= size]
    assert [(pts, data) for pts, _, data in packets(out, "video")] == intact  # the whole packets, all of them
    kept = packets(out, "audio", 1)
    assert kept == packets(whole, "audio")[: len(kept)]  # the kept track: its whole packets
    assert where != "B-frame" or max(pts for pts, _ in intact) >= shown  # a frame shown after the missing one, held
    assert decoded_frames(ffmpeg, out) == decoded_frames(ffmpeg, whole)[:shown]
    video_s, new_s, _ = stream_seconds(out)
    assert abs(video_s - shown / 25) <= TOLERANCE_S and abs(new_s - shown / 25) <= TOLERANCE_S, (video_s, new_s)
    assert abs(probe(out).duration - shown / 25) <= TOLERANCE_S  # avflow reads it as players show it, fed back in


def test_a_track_delayed_by_the_video_s_start_presents_exactly_the_video_s_span(tmp_path):
    """A video whose streams start at 5 s (`-output_ts_offset 5`): ffprobe says its new track lasts 64 ms (the AAC
    priming) longer than at 0 s. The file presents exactly the video's span from the first real sample: an empty
    edit of 5 s, then the media from past the priming for the video's 1.2 s; FFmpeg's demuxer reports a delayed
    track's duration without its edit list (its bound counts the empty edit), and decodes the same samples as for a
    track at 0 s."""
    from avflow.data.mp4_edits import _boxes, _child, _movie

    def edits(path: Path, track: int) -> list[tuple[int, int]]:
        with open(path, "rb") as file:
            moov = _movie(file)[1]
        trak = [box for box in _boxes(moov, 8, len(moov)) if box[0] == b"trak"][track]
        elst = _child(moov, _child(moov, trak, b"edts"), b"elst")
        count = int.from_bytes(moov[elst[2] + 4 : elst[2] + 8], "big")
        return [tuple(int(x) for x in np.frombuffer(moov, ">i4", 2, elst[2] + 8 + 12 * k)) for k in range(count)]

    generated = bursts(1.2, 16000, 1)
    at_5 = mux_audio(make_video(tmp_path / "at5.mp4", cfr(5.0)), generated, 16000, tmp_path / "out5.mp4")
    at_0 = mux_audio(make_video(tmp_path / "at0.mp4", cfr(0.0)), generated, 16000, tmp_path / "out0.mp4")
    assert edits(at_5, 1) == [(5000, -1), (1200, 1024)] and edits(at_0, 1) == [(1200, 1024)]
    with av.open(str(at_5)) as c5, av.open(str(at_0)) as c0:
        assert sum(f.samples for f in c5.decode(audio=0)) == sum(f.samples for f in c0.decode(audio=0))


def test_shorten_track_ends_a_track_earlier_also_without_an_edit_list(ffmpeg, tmp_path):
    """`shorten_track` on a video without an edit list (an mp4 need not have one for a track presented whole from 0;
    FFmpeg writes one, so here its `edts` is made a `free` box, which readers skip): it is given one, and players show
    0.4 s less of it; the movie is as long as its longest track."""
    from avflow.data.mp4_edits import shorten_track

    source = tmp_path / "plain.mp4"
    with av.open(str(source), "w", options={"movie_timescale": "1000"}) as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        video.options = {"bf": "0"}
        for k in range(50):
            out.mux(video.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), 5 * k, np.uint8), format="rgb24")))
        out.mux(video.encode(None))
    source.write_bytes(source.read_bytes().replace(b"edts", b"free"))
    before = decoded_frames(ffmpeg, source)
    assert len(before) == 50 and stream_seconds(source) == [2.0]
    with open(source, "r+b") as file:
        assert shorten_track(file, 0, Fraction(2, 5)) == Fraction(2, 5)
    assert decoded_frames(ffmpeg, source) == before[:40]
    assert stream_seconds(source) == [1.6]
    with av.open(str(source)) as container:
        assert container.duration == 1_600_000
