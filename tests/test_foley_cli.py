"""`avflow foley` / t2a / i2a end to end with tiny random weights in official formats: from a temporary weight cache,
from a model config .json of one's own, and with a fine-tuned network (`--weights`) straight out of `avflow train`;
arguments checked before any weights are read; outputs never written unasked, never replaced unasked."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from helpers import (
    TINY_FOLEY_MODEL,
    WeightReads,
    fixtures_root,
    install_tiny_foley,
    listing,
    prores_mov,
    sweep_video_frames,
    tiny_foley_raw_files,
    with_subtitles,
    write_tiny_model_config,
)

from avflow import hub
from avflow.cli import main
from avflow.data.media import write_video
from avflow.models.mmaudio_config import SAMPLING
from avflow.pipelines.foley import FoleyPipeline
from avflow.pipelines.foley_frames import iter_window_frames
from avflow.pipelines.foley_variants import FoleySpec
from avflow.pipelines.foley_windows import plan_windows

MODEL = TINY_FOLEY_MODEL
REPO = Path(__file__).resolve().parents[1]
WINDOW, OVERLAP = 1.0, 0.25


@pytest.fixture(scope="module")
def raw_files(tmp_path_factory) -> tuple[Path, dict[str, tuple[str, str]], FoleySpec]:
    """Official-format files of a tiny model in a cache's raw/ folder: {stem: (file name, subkey)} and the spec."""
    raw = tmp_path_factory.mktemp("raw_source")
    files, spec = tiny_foley_raw_files(raw, fixtures_root())
    return raw, files, FoleySpec(**spec)


@pytest.fixture(scope="module")
def model_json(tmp_path_factory) -> Path:
    """A `--model` config .json of the tiny model beside its official-format files (no weight cache involved)."""
    folder = tmp_path_factory.mktemp("own_model")
    files, spec = tiny_foley_raw_files(folder, fixtures_root())
    return write_tiny_model_config(folder, files, spec)


@pytest.fixture
def cache(raw_files, tmp_path, monkeypatch) -> Path:
    """$AVFLOW_HOME with the tiny model registered and its raw files (with MD5s) in place."""
    source, files, spec = raw_files
    return install_tiny_foley(monkeypatch, tmp_path / "home", source, files, spec)


@pytest.fixture
def rate(raw_files) -> int:
    """The tiny model's sample rate (its network config, from the fixture's .json)."""
    return raw_files[2].network_config.sample_rate


def make_video(path: Path, fps: float, seconds: float, size=(32, 48)) -> Path:
    return write_video(path, sweep_video_frames(fps, seconds, size), fps)


def video_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.video[0]) if p.size]


def audio_track(path: Path) -> tuple[int, int, int, float]:
    """(sample rate, channels, decoded samples, video duration) of an mp4."""
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        rate, channels = stream.rate, stream.channels
        samples = sum(f.samples for f in c.decode(stream))
    from avflow.data.media import probe

    return rate, channels, samples, probe(path).duration


CLI_FAST = ["--model", MODEL, "--steps", "2", "--window", str(WINDOW), "--overlap", str(OVERLAP), "--device", "cpu"]


def fast(model: Path | str) -> list[str]:
    return ["--model", str(model), *CLI_FAST[2:]]


@pytest.mark.parametrize("fps", [16.0, 23.976, 30.0])
def test_foley_cli_any_frame_rate(cache, rate, tmp_path, fps, capsys):
    video = make_video(tmp_path / "in.mp4", fps, 1.7)
    out, wav = tmp_path / "out.mp4", tmp_path / "out.wav"
    assert main(["foley", str(video), "-o", str(out), "--wav", str(wav), "--prompt", "steps", *CLI_FAST]) == 0
    captured = capsys.readouterr()
    assert f"wrote {out}" in captured.out and "the video had no audio" in captured.out
    assert "window 2/" in captured.err and "foley" in captured.err  # the progress bar over steps and windows
    assert video_packets(out) == video_packets(video)
    track_rate, channels, samples, duration = audio_track(out)
    assert (track_rate, channels) == (rate, 1)
    assert abs(samples - duration * rate) <= 1024  # within one AAC frame
    info = sf.info(str(wav))
    assert info.samplerate == rate and info.channels == 1
    assert info.frames == round(duration * rate)
    data, _ = sf.read(str(wav))
    assert np.isfinite(data).all() and np.abs(data).max() > 0


class SmoothVocoder(torch.nn.Module):
    """Stand-in vocoder whose waveform is smooth within a window (the mean mel, smoothed over 8 frames, interpolated),
    so any discontinuity comes from how windows are joined (random BigVGAN output is white-noise-like)."""

    def __init__(self, hop_length: int):
        super().__init__()
        self.hop_length = hop_length

    def forward(self, mel: torch.Tensor) -> torch.Tensor:  # (B, n_mels, T) -> (B, 1, T * hop)
        x = mel.mean(dim=1, keepdim=True)  # (B, 1, T)
        x = F.avg_pool1d(F.pad(x, (4, 3), mode="replicate"), 8, stride=1)  # smooth over 8 mel frames
        x = F.interpolate(x, scale_factor=self.hop_length, mode="linear", align_corners=False)
        return (0.1 * x).clamp(-1, 1)


def _seam_jumps(pipe, video: Path, overlap: float) -> tuple[float, float, list]:
    """(largest jump near a window border, 99th percentile of jumps elsewhere, trace) for windows of 1 s."""
    pipe.overlap_s, pipe.trace = overlap, []
    result = pipe.generate_video(video, "a ball", seed=3)
    windows = plan_windows(result.duration, WINDOW, overlap, pipe.latent_rate)
    assert result.windows == len(windows) >= 3
    rate, per_latent = pipe.sample_rate, 2 * pipe.model.network.config.hop_length  # a latent is two mel frames
    assert len(result.audio) == round(result.duration * rate)
    jump = np.abs(np.diff(result.audio))
    borders = []
    for prev, w in zip(windows[:-1], windows[1:]):
        borders += [w.start * per_latent, prev.start * per_latent + round(prev.duration * rate)]
    near = np.zeros(len(jump), bool)
    for b in borders:
        near[max(0, b - 4) : b + 4] = True
    return float(jump[near].max()), float(np.percentile(jump[~near], 99)), pipe.trace


def test_windows_are_seamless_and_bounded(cache, tmp_path):
    video = make_video(tmp_path / "long.mp4", 25.0, 3.0)
    pipe = FoleyPipeline.load(MODEL, sampling=SAMPLING.override(steps=2), window_s=WINDOW)
    pipe.model.vocoder = SmoothVocoder(pipe.model.vocoder.hop_length)
    seam, inside, trace = _seam_jumps(pipe, video, OVERLAP)
    assert seam <= inside
    # Structure: every tensor the windowed path builds spans at most one window plus the overlap.
    names = {name for name, _ in trace}
    assert {"clip_frames", "sync_frames", "latents", "window_audio", "audio_tail", "kept_latents"} <= names
    assert max(span for _, span in trace) <= WINDOW + OVERLAP + 1e-6
    # Control: windows simply butted together (no overlap) do show jumps at the seams.
    seam, inside, _ = _seam_jumps(pipe, video, 0.0)
    assert seam > 3 * inside


def test_iter_window_frames_counts(tmp_path):
    video = make_video(tmp_path / "v.mp4", 23.976, 2.3)
    windows = plan_windows(2.3, WINDOW, OVERLAP, 31.25)
    got = list(iter_window_frames(video, windows))
    assert [wf.window.index for wf in got] == list(range(len(windows)))
    for wf in got:
        assert len(wf.clip) == int(8 * wf.window.duration + 1e-9) and wf.clip.shape[1:] == (3, 384, 384)
        assert len(wf.sync) == int(25 * wf.window.duration + 1e-9) and wf.sync.shape[1:] == (3, 224, 224)
    assert windows[-1].start_s + windows[-1].duration == pytest.approx(2.3, abs=1 / 31.25)


def test_large_frames_are_read_in_shorter_chunks_to_the_same_frames(tmp_path, monkeypatch):
    """Half a second of 4K60 RGB is 750 MB: chunks are cut to CHUNK_BYTES of source frames (at least one frame), and
    the encoders get the very same frames (targets go by timestamp)."""
    from avflow.data.media import probe
    from avflow.pipelines import foley_frames

    video = make_video(tmp_path / "v.mp4", 30.0, 1.3)  # 32 x 48 pixels: 4608 bytes a frame
    windows = plan_windows(1.3, WINDOW, OVERLAP, 31.25)
    info = probe(video)
    whole = list(iter_window_frames(video, windows))
    assert foley_frames.chunk_seconds(info, 0.5) == 0.5
    monkeypatch.setattr(foley_frames, "CHUNK_BYTES", 9216)  # two frames
    assert foley_frames.chunk_seconds(info, 0.5) == pytest.approx(2 / 30)
    monkeypatch.setattr(foley_frames, "CHUNK_BYTES", 1)
    assert foley_frames.chunk_seconds(info, 0.5) == pytest.approx(1 / 30)  # one frame at least
    for got, want in zip(iter_window_frames(video, windows, foley_frames.chunk_seconds(info, 0.5)), whole,
                         strict=True):
        assert torch.equal(got.clip, want.clip) and torch.equal(got.sync, want.sync)


def test_a_folder_of_camcorder_and_broadcast_files_is_read(tmp_path):
    """A camcorder's .MTS and a recorder's .ts (MPEG-TS) were not picked from a folder ("no videos"): every command
    that scans a folder or takes an upload reads one list of video suffixes, and FFmpeg reads these files."""
    from avflow.commands.foley import list_inputs
    from avflow.data.media import probe

    folder = tmp_path / "card"
    folder.mkdir()
    for name in ("00001.MTS", "show.ts"):
        with av.open(str(folder / name), "w", format="mpegts") as out:
            video = out.add_stream("libx264", rate=25)
            video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
            for k in range(25):
                out.mux(video.encode(av.VideoFrame.from_ndarray(np.full((32, 32, 3), 9 * k, np.uint8), "rgb24")))
            out.mux(video.encode(None))
    (folder / "notes.txt").write_text("not a video")
    assert [p.name for p in list_inputs(folder)] == ["00001.MTS", "show.ts"]
    assert probe(folder / "00001.MTS").n_frames == 25


def test_a_folder_scan_passes_over_hidden_files(cache, tmp_path, capsys):
    """A folder copied from a Mac to a shared drive holds `._clip.mp4` beside `clip.mp4` (its attributes, not a
    video): the batch counted it as a failed video and exited 1, `avflow eval` as a skipped clip. Hidden files and
    files in hidden folders are passed over, as file browsers and `ls` do."""
    from avflow.eval.report import find_clips

    folder = tmp_path / "from_a_mac"
    folder.mkdir()
    make_video(folder / "clip.mp4", 24.0, 1.0)
    (folder / "._clip.mp4").write_bytes(b"\x00\x05\x16\x07" + bytes(4092))  # AppleDouble
    (folder / ".thumbs").mkdir()
    make_video(folder / ".thumbs" / "clip.mp4", 24.0, 1.0)
    out = tmp_path / "out"
    assert main(["foley", str(folder), "-o", str(out), *CLI_FAST]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["clip.mp4"] and "._clip" not in capsys.readouterr().out
    assert list(find_clips(folder)) == ["clip"]


def test_batch_outputs_of_two_inputs_never_land_on_one_file(cache, tmp_path, capsys):
    """clip.mp4 and a ProRes clip.mov write clip.mp4 and clip.mov, but with --wav both would write clip.wav (the
    second over the first): that input is skipped and said; without --wav both are made."""
    folder = tmp_path / "videos"
    folder.mkdir()
    make_video(folder / "clip.mp4", 16.0, 1.0)
    prores_mov(folder / "clip.mov")
    out = tmp_path / "out"
    assert main(["foley", str(folder), "-o", str(out), "--wav", str(tmp_path / "wavs"), *CLI_FAST]) == 1
    assert f"another input also writes {tmp_path / 'wavs' / 'clip.wav'}" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["clip.mov"]  # the first in name order
    assert main(["foley", str(folder), "-o", str(tmp_path / "out2"), *CLI_FAST]) == 0
    assert sorted(p.name for p in (tmp_path / "out2").iterdir()) == ["clip.mov", "clip.mp4"]


def test_batch_skips_bad_files(cache, tmp_path, capsys):
    folder = tmp_path / "videos"
    folder.mkdir()
    make_video(folder / "a.mp4", 30.0, 0.8)
    make_video(folder / "b.mp4", 16.0, 0.6)
    (folder / "c.mp4").write_bytes(b"not a video at all" * 10)
    make_video(folder / "d.mp4", 25.0, 0.32)  # shorter than every command accepts
    with_subtitles(folder / "e.mkv", "subrip", b"hallo")  # its SRT subtitles cannot go into an mp4
    prores_mov(folder / "f.mov")  # an editor's export: only a .mov holds it
    out = tmp_path / "out"
    code = main(["foley", str(folder), "-o", str(out), "--wav", str(tmp_path / "wavs"), *CLI_FAST])
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4", "b.mp4", "e.mp4", "f.mov"]
    assert sorted(p.name for p in (tmp_path / "wavs").iterdir()) == ["a.wav", "b.wav", "e.wav", "f.wav"]  # --wav
    text = capsys.readouterr().out
    assert "4 of 6 videos done" in text and "c.mp4" in text and "too short" in text
    assert f"  {folder / 'e.mkv'}: its srt subtitles left out (the output's container cannot hold them)" in text
    files = tmp_path / "list.txt"
    files.write_text("videos/a.mp4\n# comment\n\n")
    assert main(["foley", str(files), "-o", str(tmp_path / "out2"), *CLI_FAST]) == 0
    assert [p.name for p in (tmp_path / "out2").iterdir()] == ["a.mp4"]  # no audio file unless asked
    before = listing(tmp_path)
    assert main(["foley", str(files), "-o", str(tmp_path / "out2"), *CLI_FAST]) == 2  # a.mp4 exists: refused
    assert "pass --overwrite (or -y)" in capsys.readouterr().err
    assert listing(tmp_path) == before
    assert main(["foley", str(files), "-o", str(tmp_path / "out2"), "-y", *CLI_FAST]) == 0
    pasted = tmp_path / "pasted.txt"  # Notepad's byte order mark, CRLF line ends, Explorer's "Copy as path" quotes
    pasted.write_bytes(b"\xef\xbb\xbf" + f'"{folder / "a.mp4"}"\r\n\'videos/b.mp4\'\r\n'.encode())
    assert main(["foley", str(pasted), "-o", str(tmp_path / "out4"), *CLI_FAST]) == 0
    assert sorted(p.name for p in (tmp_path / "out4").iterdir()) == ["a.mp4", "b.mp4"]
    latin = tmp_path / "latin.txt"
    latin.write_bytes("videos/caf\u00e9.mp4\n".encode("latin-1"))  # a list saved in Latin-1
    assert main(["foley", str(latin), "-o", str(tmp_path / "out3"), *CLI_FAST]) == 2
    assert capsys.readouterr().err.strip().endswith(f"{latin}: not a UTF-8 text file (a .txt list holds one video "
                                                    "path per line)")  # fmt: skip


def test_t2a_and_i2a(cache, rate, tmp_path):
    out = tmp_path / "t.wav"
    assert main(["t2a", "rain on a roof", "--duration", "1.3", "-o", str(out), *CLI_FAST]) == 0
    data, file_rate = sf.read(str(out))
    assert file_rate == rate and len(data) == round(1.3 * rate)
    from PIL import Image

    image = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "i.flac"
    assert main(["i2a", str(image), "--duration", "0.9", "-o", str(out), *CLI_FAST]) == 0
    data, file_rate = sf.read(str(out))
    assert file_rate == rate and len(data) == round(0.9 * rate)


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


def test_bad_inputs_are_one_line_errors(cache, tmp_path, capsys, monkeypatch):
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("hello")
    assert main(["foley", str(not_video), "-o", str(tmp_path / "o.mp4"), *CLI_FAST]) == 2
    assert "notes.mp4" in _error(capsys)
    short = make_video(tmp_path / "short.mp4", 25.0, 0.3)
    assert main(["foley", str(short), "-o", str(tmp_path / "o.mp4"), *CLI_FAST]) == 2
    assert "too short" in _error(capsys)
    good = make_video(tmp_path / "good.mp4", 25.0, 0.8)
    assert main(["foley", str(good), "-o", str(tmp_path / "o.mp4"), *CLI_FAST, "--model", "nonexistent"]) == 2
    assert "unknown model" in _error(capsys)
    assert main(["foley", str(good), "-o", str(tmp_path / "o.mp4"), *CLI_FAST, "--cfg", "0"]) == 2
    assert "cfg_strength must be a finite number > 0" in _error(capsys)
    # A converted file cut short is made again from the official one it came from; a corrupt official file is one
    # line, is removed from the cache (the next download replaces it), and nothing is written.
    converted = hub.fetch("tiny_net")
    assert converted == cache / "weights" / "tiny_net.safetensors"
    whole = converted.read_bytes()
    converted.write_bytes(whole[:3000])
    assert main(["foley", str(good), "-o", str(tmp_path / "repaired.mp4"), *CLI_FAST]) == 0
    assert converted.read_bytes() == whole
    capsys.readouterr()
    converted.unlink()
    # the published sum's check, then (none published) the reader's, then offline, where "again" cannot help
    for md5, offline in ((hub.ASSETS["tiny_net"].md5, ""), ("", ""), ("", "1")):
        (cache / "raw" / "tiny_net.pth").write_bytes(b"\x00garbage" * 50)
        monkey_asset = hub.ASSETS["tiny_net"]
        hub.ASSETS["tiny_net"] = replace(monkey_asset, md5=md5)
        monkeypatch.setenv("AVFLOW_OFFLINE", offline)
        try:
            assert main(["foley", str(good), "-o", str(tmp_path / "o.mp4"), *CLI_FAST]) == 2
            err = _error(capsys)
            assert "tiny_net.pth was not usable and is removed from the cache; run `avflow download" in err, err
            assert ("with network access, or with --from DIR" in err) == bool(offline), err
        finally:
            hub.ASSETS["tiny_net"] = monkey_asset
        assert not (cache / "raw" / "tiny_net.pth").exists()
    assert not (tmp_path / "o.mp4").exists()


def test_missing_weights_and_offline(cache, tmp_path, capsys, monkeypatch):
    good = make_video(tmp_path / "good.mp4", 25.0, 0.8)
    for f in (cache / "raw").iterdir():
        f.unlink()
    reads = WeightReads(monkeypatch)  # missing files are found without reading any
    assert main(["foley", str(good), "-o", str(tmp_path / "o.mp4"), *CLI_FAST]) == 2
    assert f"avflow download {MODEL}" in _error(capsys)
    monkeypatch.setenv("AVFLOW_OFFLINE", "1")
    assert main(["t2a", "x", "-o", str(tmp_path / "o.wav"), *CLI_FAST]) == 2
    err = _error(capsys)
    assert "offline" in err and f"avflow download {MODEL}" in err
    assert not (tmp_path / "o.mp4").exists() and not (tmp_path / "o.wav").exists()
    assert reads.calls == []


def test_plan_windows_cover_and_overlap():
    rate = 31.25
    for total in (0.5, 1.0, 1.01, 2.7, 13.3):
        ws = plan_windows(total, 1.0, 0.25, rate)
        assert ws[0].start == 0 and all(w.duration <= 1.0 + 1e-9 or len(ws) == 1 for w in ws)
        assert ws[-1].start_s + ws[-1].duration >= total - 1e-6
        for a, b in zip(ws[:-1], ws[1:]):
            assert a.start < b.start and b.start_s <= a.start_s + a.duration - 0.25 + 1e-6


# ------------------------------------------------------------------------------------------------------------------
# arguments and inputs are checked before any weights are read; refused and failed runs leave no trace


def bad_inputs(tmp: Path, model: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (argv, expected part of the one-line error) for every kind of bad input."""
    good = make_video(tmp / "good.mp4", 25.0, 0.8)
    short = make_video(tmp / "short.mp4", 25.0, 0.32)
    (tmp / "notes.mp4").write_text("hello")
    (tmp / "taken.mp4").write_bytes(b"an existing output")
    (tmp / "bad.json").write_text("{not json")
    (tmp / "extra.json").write_text(json.dumps({**json.loads(model.read_text()), "colour": "red"}))
    (tmp / "weights.txt").write_text("not weights")
    from PIL import Image

    image = tmp / "img.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    out = str(tmp / "o.mp4")
    f = ["--model", str(model), "--steps", "2", "--device", "cpu"]
    cases = {
        "missing video": (["foley", str(tmp / "none.mp4"), "-o", out, *f], "file not found"),
        "not a video": (["foley", str(tmp / "notes.mp4"), "-o", out, *f], "cannot read as media"),
        "too short": (["foley", str(short), "-o", out, *f], "too short (0.320 s); at least 0.5 s"),
        "zero duration": (["foley", str(good), "-o", out, "--duration", "0", *f], "--duration must be at least 0.5"),
        "output suffix": (["foley", str(good), "-o", str(tmp / "o.wav"), *f], "must be a .mp4, .m4v or .mov"),
        "output is input": (["foley", str(good), "-o", str(good), *f], "is an input file"),
        "output exists": (["foley", str(good), "-o", str(tmp / "taken.mp4"), *f], "exists; pass --overwrite (or -y)"),
        "wav suffix": (["foley", str(good), "-o", out, "--wav", str(tmp / "a.mp3"), *f], "must be a .wav or .flac"),
        "zero steps": (["foley", str(good), "-o", out, *f, "--steps", "0"], "steps must be an integer >= 1"),
        "zero cfg": (["foley", str(good), "-o", out, *f, "--cfg", "0"], "cfg_strength must be a finite number > 0"),
        "blank prompt": (["foley", str(good), "-o", out, "--prompt", " ", *f], "--prompt is empty"),
        "bad window": (["foley", str(good), "-o", out, "--window", "0.3", *f], "need window >= 0.64 s"),
        "missing weights": (["foley", str(good), "-o", out, *f, "--weights", str(tmp / "x.pth")], "file not found"),
        "not weights": (["foley", str(good), "-o", out, *f, "--weights", str(tmp / "weights.txt")], "expected a .pth"),
        "bad model json": (["foley", str(good), "-o", out, *f, "--model", str(tmp / "bad.json")], "not valid JSON"),
        "model json key": (["foley", str(good), "-o", out, *f, "--model", str(tmp / "extra.json")], "colour: unknown"),
        "unknown model": (["foley", str(good), "-o", out, *f, "--model", "huge_96k"], "unknown model 'huge_96k'"),
        "bad precision": (["foley", str(good), "-o", out, *f, "--precision", "fp16"], "invalid choice: 'fp16'"),
        "empty t2a prompt": (["t2a", "", "-o", str(tmp / "t.wav"), *f], "the prompt is empty"),
        "t2a duration": (["t2a", "rain", "-o", str(tmp / "t.wav"), "--duration", "-1", *f], "at least 0.5 s"),
        "t2a suffix": (["t2a", "rain", "-o", str(tmp / "t.mp3"), *f], "must be a .wav or .flac"),
        "i2a not an image": (["i2a", str(tmp / "notes.mp4"), "-o", str(tmp / "i.wav"), *f], "cannot read as an image"),
        "i2a duration": (["i2a", str(image), "-o", str(tmp / "i.wav"), "--duration", "0.2", *f], "at least 0.5 s"),
    }
    cases["compile bf16"] = (["foley", str(good), "-o", out, *f, "--compile", "--precision", "bf16"],
                             "--compile fuses the vocoder's float32 path")  # fmt: skip
    cases["compile no compiler"] = (["t2a", "rain", "-o", str(tmp / "c.wav"), *f, "--compile"],
                                    "--compile: $CXX (")  # fmt: skip
    if not torch.cuda.is_available():
        cases["no gpu"] = (["foley", str(good), "-o", out, *f, "--device", "cuda"], "no CUDA GPU is available here")
    return cases


def test_bad_inputs_fail_in_one_line_before_any_weights_are_read(model_json, tmp_path, monkeypatch, capsys):
    cases = bad_inputs(tmp_path, model_json)
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))  # --compile's check (read only with --compile)
    reads = WeightReads(monkeypatch)
    before = listing(tmp_path)
    for name, (argv, message) in cases.items():
        assert main(argv) == 2, name
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, (name, err)
    assert reads.calls == []
    assert listing(tmp_path) == before  # refused runs write nothing


def test_failed_runs_leave_the_folder_as_it_was(model_json, tmp_path, monkeypatch):
    import avflow.data.media
    import avflow.data.mux

    video = make_video(tmp_path / "in.mp4", 25.0, 0.8)
    before = listing(tmp_path)
    argv = ["foley", str(video), "-o", str(tmp_path / "new" / "out.mp4"), "--wav", str(tmp_path / "out.wav"),
            *fast(model_json)]  # fmt: skip

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:  # the wav fails after the mp4 was written: the mp4 goes again
        patch.setattr(avflow.data.media, "write_audio", disk_full)
        assert main(argv) == 1
    assert listing(tmp_path) == before

    def broken(*args, **kwargs):
        raise RuntimeError("encoder crashed")

    with monkeypatch.context() as patch, pytest.raises(RuntimeError, match="encoder crashed"):  # mid-way through muxing
        patch.setattr(avflow.data.mux, "_encode_aac", broken)
        main(argv)
    assert listing(tmp_path) == before


def test_existing_audio_kept_replaced_or_mixed(model_json, tmp_path, capsys):
    frames = sweep_video_frames(25.0, 1.2)
    noise = np.random.default_rng(0).uniform(-0.2, 0.2, (2, 48000)).astype(np.float32)
    video = write_video(tmp_path / "with_audio.mp4", frames, 25.0, noise, 48000)
    tracks = {}
    for policy in ("keep", "replace", "mix"):
        out = tmp_path / f"{policy}.mp4"
        assert main(["foley", str(video), "-o", str(out), "--audio", policy, *fast(model_json)]) == 0
        text = capsys.readouterr().out
        assert f"--audio {policy}" in text
        assert ("its audio track mixed in at 48000 Hz (--audio mix)" in text) == (policy == "mix")  # the sum's rate
        with av.open(str(out)) as c:
            tracks[policy] = [(s.rate, s.channels) for s in c.streams.audio]
        assert video_packets(out) == video_packets(video)
    rate = tracks["replace"][0][0]
    # mix: at the higher of the two rates (the source's 48 kHz keeps its top octaves)
    assert tracks == {"keep": [(rate, 1), (48000, 2)], "replace": [(rate, 1)], "mix": [(max(rate, 48000), 2)]}


# ------------------------------------------------------------------------------------------------------------------
# a model of one's own: a config .json, and a fine-tune from `avflow train` used with --weights


def test_own_model_config_without_the_weight_cache(model_json, rate, tmp_path, monkeypatch):
    monkeypatch.setenv("AVFLOW_HOME", str(tmp_path / "empty_cache"))
    out = tmp_path / "own.wav"
    assert main(["t2a", "rain on a roof", "--duration", "0.7", "-o", str(out), *fast(model_json)]) == 0
    data, file_rate = sf.read(str(out))
    assert file_rate == rate and len(data) == round(0.7 * rate) and np.abs(data).max() > 0
    # no weight read from or written to the cache; only Winograd's measured choices are kept there
    home = tmp_path / "empty_cache"
    assert sorted(p.name for p in home.iterdir()) == ["winograd_choices.json"]


def feature_cache(folder: Path, config, clips: int = 6) -> Path:
    """A feature cache whose streams fit the tiny network (random latents and conditions, as `avflow cache build`
    writes them)."""
    from avflow.data.cache import build_cache
    from avflow.data.datasets import ClipRecord

    shapes = {
        "audio": (config.latent_seq_len, config.latent_dim),
        "clip_f": (config.clip_seq_len, config.clip_dim),
        "sync_f": (config.sync_seq_len, config.sync_dim),
        "text_f": (config.text_seq_len, config.text_dim),
    }

    def extract(record) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(int(record.id[4:]))
        return {name: torch.randn(shape, generator=g) for name, shape in shapes.items()}

    build_cache(folder, [ClipRecord(f"clip{i}", caption=f"sound {i}") for i in range(clips)], extract, "tiny")
    return folder


def test_finetune_recipe_output_runs_through_foley(model_json, tmp_path, capsys):
    """`avflow train configs/mmaudio_finetune.yaml` (tiny settings) from the official-layout tiny network, its
    safetensors export and its official .pth export, each given to `avflow foley --weights`."""
    from dataclasses import asdict

    from avflow.models.mmaudio import build_mmaudio, load_official_state_dict
    from avflow.pipelines.foley_variants import load_model_config
    from avflow.train.mmaudio_recipe import export_official

    spec = load_model_config(model_json)
    cache = feature_cache(tmp_path / "cache", spec.network_config)
    run = tmp_path / "run"
    overrides = [
        f"out_dir={run}",
        f"model.args.init={spec.network}",  # the official-layout .pth
        f"model.args.overrides={json.dumps(asdict(spec.network_config))}",
        f"data.train.args.sources={json.dumps({str(cache): 1.0})}",
        "data.train.args.size=4",
        "data.num_workers=0",
        "train.steps=2",
        "train.batch_size=2",
        "train.device=cpu",
        "optim.lr=1e-2",
        "log.tensorboard=false",
        "log.progress=false",
        "checkpoint.every=2",
    ]
    assert main(["train", str(REPO / "configs" / "mmaudio_finetune.yaml"), *overrides]) == 0
    exported = run / "model.safetensors"  # the trainer's export: official keys
    network = load_official_state_dict(build_mmaudio(spec.network_config), exported)
    pth, _ = export_official(network, tmp_path / "finetuned")  # the official .pth layout

    video = make_video(tmp_path / "in.mp4", 24.0, 1.5)
    wavs = {}
    ema, step = run / "ema_0.05.safetensors", run / "checkpoints" / "step_00000002.pt"  # the last step's checkpoint
    runs = (("base", None), ("pth", pth), ("safetensors", exported), ("ema", ema), ("step", step), ("run", run))
    for name, weights in runs:
        wavs[name] = tmp_path / f"{name}.wav"
        extra = [] if weights is None else ["--weights", str(weights)]
        argv = ["foley", str(video), "-o", str(tmp_path / f"{name}.mp4"), "--wav", str(wavs[name]), "--prompt", "rain"]
        assert main([*argv, *fast(model_json), *extra]) == 0
        assert video_packets(tmp_path / f"{name}.mp4") == video_packets(video)
        if name == "step":  # the checkpoint gives its EMA, and says so
            assert "step_00000002.pt: a training checkpoint of avflow train at step 2: its EMA (sigma_rel 0.05)" in (
                capsys.readouterr().err
            )
    audio = {name: sf.read(str(path))[0] for name, path in wavs.items()}
    assert np.array_equal(audio["pth"], audio["safetensors"])  # the same fine-tuned network either way
    assert np.array_equal(audio["step"], audio["ema"])  # the checkpoint's EMA is the run's export at that step
    assert np.array_equal(audio["run"], audio["ema"])  # the run folder: its EMA export, its network's shape
    assert not np.array_equal(audio["ema"], audio["safetensors"])
    assert not np.allclose(audio["pth"], audio["base"], atol=1e-4)  # and not the network it started from
    assert np.isfinite(audio["pth"]).all() and np.abs(audio["pth"]).max() > 0


def test_network_weights_as_users_bring_them(model_json, tmp_path, capsys):
    """`--weights` of the same network saved as people save it: in fp16 or bf16 (as fp32 weights rounded the same
    way), by a torch.compile'd or DDP-wrapped model (key prefixes), inside a training checkpoint of MMAudio's
    trainer (the network, said in a note)."""
    from avflow.pipelines.foley_variants import load_model_config

    spec = load_model_config(model_json)
    network = torch.load(spec.network, weights_only=True)  # the tiny official-layout .pth
    files = {
        "plain": network,
        "compiled": {f"_orig_mod.{k}": v for k, v in network.items()},
        "ddp_compiled": {f"module._orig_mod.{k}": v for k, v in network.items()},
        "mmaudio_ckpt": {
            "it": 7,
            "weights": network,
            "optimizer": {"state": {}, "param_groups": []},
            "scheduler": {"last_epoch": 7},
            "ema": None,
        },  # fmt: skip
    }
    for dtype in (torch.float16, torch.bfloat16):
        name = str(dtype).removeprefix("torch.")
        files[name] = {k: v.to(dtype) if v.is_floating_point() else v for k, v in network.items()}
        files[f"{name}_in_fp32"] = {k: v.float() for k, v in files[name].items()}
    audio = {}
    for name, state in files.items():
        torch.save(state, tmp_path / f"{name}.pth")
        out = tmp_path / f"{name}.wav"
        argv = ["t2a", "rain", "--duration", "0.7", "-o", str(out), *fast(model_json), "--weights"]
        assert main([*argv, str(tmp_path / f"{name}.pth")]) == 0, name
        err = capsys.readouterr().err
        assert ("MMAudio's trainer at iteration 7: its network as trained is used" in err) == (name == "mmaudio_ckpt")
        assert "Traceback" not in err
        audio[name] = sf.read(str(out))[0]
    for name in ("compiled", "ddp_compiled", "mmaudio_ckpt"):
        assert np.array_equal(audio[name], audio["plain"]), name
    for name in ("float16", "bfloat16"):
        assert np.array_equal(audio[name], audio[f"{name}_in_fp32"]), name
        assert not np.array_equal(audio[name], audio["plain"]), name  # rounded: really read from the half file


def test_a_weights_folder_that_is_no_fitting_run_is_one_line(model_json, tmp_path, capsys):
    """`--weights FOLDER`: a folder that is no `avflow train` run, a run of another model, or a run whose network
    reads other latents than --model's codecs: one line each, before any weights are read."""
    from avflow.config import dump_yaml

    cases = {"empty": (None, "a folder without config.yaml"),
             "joint": ({"model": {"name": "joint", "args": {}}}, "a training run of the 'joint' model"),
             "other": ({"model": {"name": "mmaudio", "args": {"variant": "small_44k"}}},
                       "does not fit this model: latent_dim 40 (its codecs and encoders read ")}  # fmt: skip
    for name, (config, message) in cases.items():
        (tmp_path / name).mkdir()
        if config is not None:
            (tmp_path / name / "config.yaml").write_text(dump_yaml(config))
        argv = ["t2a", "rain", "--duration", "0.7", "-o", str(tmp_path / "o.wav"), *fast(model_json)]
        assert main([*argv, "--weights", str(tmp_path / name)]) == 2, name
        err = _error(capsys)
        assert message in err, err
    assert not (tmp_path / "o.wav").exists()


def test_weights_from_the_hugging_face_hub(model_json, tmp_path, monkeypatch, capsys):
    """`--weights hf://ORG/NAME/PATH`: a fine-tune shared on the Hub, fetched through huggingface_hub (a stand-in
    here: no network in tests) on this request only, its revision passed on; offline, a copy not cached yet is a
    one-line error before any weights are read; a malformed name or a file of another kind likewise."""
    import huggingface_hub

    from avflow.pipelines.foley_variants import load_model_config

    network = Path(load_model_config(model_json).network)  # the tiny official-layout .pth
    hub_copy = tmp_path / "hub_cache" / "finetune.pth"
    hub_copy.parent.mkdir()
    state = torch.load(network, weights_only=True)
    torch.save({k: v * 1.5 for k, v in state.items()}, hub_copy)
    calls = []

    def fake_download(repo_id, filename, *, revision=None, local_files_only=False):
        calls.append((repo_id, filename, revision, local_files_only))
        if local_files_only and not os.environ.get("FAKE_HUB_CACHED"):
            raise FileNotFoundError("not in the cache")
        return str(hub_copy)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [])  # the stand-in network resolves the Hub's host
    monkeypatch.delenv("AVFLOW_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    argv = ["t2a", "rain", "--duration", "0.7", *fast(model_json)]
    ref = "hf://someone/tiny-foley@v2/weights/finetune.pth"
    assert main([*argv, "-o", str(tmp_path / "hub.wav"), "--weights", ref]) == 0
    assert calls == [("someone/tiny-foley", "weights/finetune.pth", "v2", False)]  # checked without it, then fetched
    assert main([*argv, "-o", str(tmp_path / "local.wav"), "--weights", str(hub_copy)]) == 0
    assert np.array_equal(sf.read(str(tmp_path / "hub.wav"))[0], sf.read(str(tmp_path / "local.wav"))[0])

    monkeypatch.setenv("AVFLOW_OFFLINE", "1")
    monkeypatch.setenv("FAKE_HUB_CACHED", "1")  # offline with a cached copy: used
    assert main([*argv, "-o", str(tmp_path / "cached.wav"), "--weights", ref]) == 0
    assert calls[-1][-1] is True  # cached copies only
    monkeypatch.delenv("FAKE_HUB_CACHED")
    reads = WeightReads(monkeypatch)
    cases = {ref: "not in the Hugging Face cache (offline mode is on)",
             "hf://someone/finetune.pth": "a Hub file is named hf://ORG/NAME/PATH",
             "hf://someone/tiny-foley/README.md": "expected a .pth"}  # fmt: skip
    capsys.readouterr()
    for bad, message in cases.items():
        assert main([*argv, "-o", str(tmp_path / "o.wav"), "--weights", bad]) == 2, bad
        assert message in _error(capsys)
    assert reads.calls == [] and not (tmp_path / "o.wav").exists()


@pytest.fixture
def weights_server(tmp_path):
    """A plain HTTP server on localhost serving the folder it returns (no network leaves the machine), and its
    base URL; requests are counted."""
    import functools
    import sys
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    folder = tmp_path / "served"
    folder.mkdir()
    requests = []

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the server's name for it
            requests.append(self.path)
            if self.path.startswith(("/short/", "/page/")):  # half a file sent; a web page for a file's name
                data = (folder / self.path.split("/", 2)[2]).read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "text/html" if self.path.startswith("/page/") else "application/x")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2] if self.path.startswith("/short/") else data)
                return
            super().do_GET()

        def log_message(self, *args):  # quiet
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request, client_address):  # a client that hangs up early is a case under test
            if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
                super().handle_error(request, client_address)  # anything else still prints its traceback

    server = Server(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}", requests
    server.shutdown()
    server.server_close()


def test_weights_from_a_url(model_json, weights_server, tmp_path, monkeypatch, capsys):
    """`--weights https://HOST/PATH/NAME[#sha256=HEX]`: a fine-tune at a URL (a local server here), downloaded on
    this request into $AVFLOW_HOME/urls once and used as the same file given locally; the note gives its SHA-256 to
    pin; a pin that does not match keeps nothing; offline, a URL not downloaded yet, a missing file, a name of another
    kind and a malformed pin are one-line errors before any weights are read."""
    import hashlib

    from avflow.pipelines.foley_variants import load_model_config

    served, base, requests = weights_server
    state = torch.load(Path(load_model_config(model_json).network), weights_only=True)
    fine_tune = served / "runs" / "finetune.pth"
    fine_tune.parent.mkdir()
    torch.save({k: v * 1.5 for k, v in state.items()}, fine_tune)
    digest = hashlib.sha256(fine_tune.read_bytes()).hexdigest()
    monkeypatch.delenv("AVFLOW_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    argv = ["t2a", "rain", "--duration", "0.7", *fast(model_json)]
    url = f"{base}/runs/finetune.pth"

    assert main([*argv, "-o", str(tmp_path / "url.wav"), "--weights", url]) == 0
    err = capsys.readouterr().err
    assert f"note: downloaded {url} (SHA-256 {digest}; end the URL with #sha256={digest}" in err
    kept = list((Path(os.environ["AVFLOW_HOME"]) / "urls").rglob("finetune.pth"))
    assert len(kept) == 1 and kept[0].read_bytes() == fine_tune.read_bytes()
    assert main([*argv, "-o", str(tmp_path / "local.wav"), "--weights", str(fine_tune)]) == 0
    assert np.array_equal(sf.read(str(tmp_path / "url.wav"))[0], sf.read(str(tmp_path / "local.wav"))[0])

    assert main([*argv, "-o", str(tmp_path / "pinned.wav"), "--weights", f"{url}#sha256={digest.upper()}"]) == 0
    monkeypatch.setenv("AVFLOW_OFFLINE", "1")  # offline: the kept copy serves
    assert main([*argv, "-o", str(tmp_path / "offline.wav"), "--weights", url]) == 0
    assert requests == ["/runs/finetune.pth"]  # downloaded once
    assert np.array_equal(sf.read(str(tmp_path / "offline.wav"))[0], sf.read(str(tmp_path / "url.wav"))[0])

    capsys.readouterr()
    monkeypatch.delenv("AVFLOW_OFFLINE")
    wrong = "0" * 64
    (served / "runs" / "other.pth").write_bytes(fine_tune.read_bytes())
    (served / "runs" / "empty.pth").write_bytes(b"")
    size = fine_tune.stat().st_size
    cases = {f"{base}/runs/missing.pth": "could not download",  # the download is the loading's first step
             f"{base}/runs/other.pth#sha256={wrong}": f"download's SHA-256 {digest} is not the {wrong}",
             f"{base}/short/runs/finetune.pth": f"{size // 2} of its {size} bytes came (the connection closed early)",
             f"{base}/page/runs/finetune.pth": "the server sent a web page (text/html), not a file",
             f"{base}/runs/empty.pth": "the server sent an empty file"}  # fmt: skip
    for bad, message in cases.items():
        assert main([*argv, "-o", str(tmp_path / "o.wav"), "--weights", bad]) == 2, bad
        last = capsys.readouterr().err.strip().splitlines()[-1]  # after the download's progress bar
        assert last.startswith("avflow t2a: error: ") and message in last, bad
    monkeypatch.setenv("AVFLOW_OFFLINE", "1")
    reads = WeightReads(monkeypatch)
    cases = {f"{base}/runs/other.pth": "not in the cache",  # offline, and its download kept nothing
             f"{url}#sha256={wrong}": f"the cached copy's SHA-256 {digest} is not the {wrong} the URL pins",
             f"{url}#md5=abc": "the one fragment a weights URL takes is #sha256=",
             f"{base}/runs/notes.txt": "expected a .pth",
             "https:///finetune.pth": "a URL of a weights file is https://HOST/PATH/NAME"}  # fmt: skip
    for bad, message in cases.items():
        assert main([*argv, "-o", str(tmp_path / "o.wav"), "--weights", bad]) == 2, bad
        assert message in _error(capsys), bad
    assert reads.calls == [] and not (tmp_path / "o.wav").exists()
    other = {k: v * 0 for k, v in state.items()}  # the kept copy replaced by other weights: a pin tells
    torch.save(other, kept[0])
    assert main([*argv, "-o", str(tmp_path / "o.wav"), "--weights", f"{url}#sha256={digest}"]) == 2
    assert f"the cached copy's SHA-256 {hashlib.sha256(kept[0].read_bytes()).hexdigest()} is not" in _error(capsys)
    kept[0].write_bytes(fine_tune.read_bytes())
    kept = sorted(str(p.relative_to(kept[0].parents[1])) for p in kept[0].parents[1].rglob("*"))
    assert kept == [kept[0], f"{kept[0]}/finetune.pth", f"{kept[0]}/finetune.pth.sha256"]  # nothing else kept
