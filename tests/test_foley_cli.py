"""`avflow foley` / t2a / i2a end to end with tiny random weights written to a temporary cache in official formats."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from helpers import TINY_FOLEY_MODEL, fixtures_root, install_tiny_foley, sweep_video_frames, tiny_foley_raw_files

from avflow import hub
from avflow.cli import main
from avflow.data.media import write_video
from avflow.models.mmaudio_config import SAMPLING
from avflow.pipelines.foley import FoleyPipeline
from avflow.pipelines.foley_frames import iter_window_frames
from avflow.pipelines.foley_variants import FoleySpec
from avflow.pipelines.foley_windows import plan_windows

MODEL = TINY_FOLEY_MODEL
WINDOW, OVERLAP = 1.0, 0.25


@pytest.fixture(scope="module")
def raw_files(tmp_path_factory) -> tuple[Path, dict[str, tuple[str, str]], FoleySpec]:
    """Official-format files of a tiny model in a cache's raw/ folder: {stem: (file name, subkey)} and the spec."""
    raw = tmp_path_factory.mktemp("raw_source")
    files, spec = tiny_foley_raw_files(raw, fixtures_root())
    return raw, files, FoleySpec(**spec)


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


@pytest.mark.parametrize("fps", [16.0, 23.976, 30.0])
def test_foley_cli_any_frame_rate(cache, rate, tmp_path, fps):
    video = make_video(tmp_path / "in.mp4", fps, 1.7)
    out, wav = tmp_path / "out.mp4", tmp_path / "out.wav"
    assert main(["foley", str(video), "-o", str(out), "--wav", str(wav), "--prompt", "steps", *CLI_FAST]) == 0
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
    pipe = FoleyPipeline.from_cache(MODEL, sampling=SAMPLING.override(steps=2), window_s=WINDOW)
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


def test_batch_skips_bad_files(cache, tmp_path, capsys):
    folder = tmp_path / "videos"
    folder.mkdir()
    make_video(folder / "a.mp4", 30.0, 0.8)
    make_video(folder / "b.mp4", 16.0, 0.6)
    (folder / "c.mp4").write_bytes(b"not a video at all" * 10)
    out = tmp_path / "out"
    code = main(["foley", str(folder), "-o", str(out), *CLI_FAST])
    assert code == 1
    assert (out / "a.mp4").exists() and (out / "b.mp4").exists() and (out / "b.wav").exists()
    assert not (out / "c.mp4").exists()
    text = capsys.readouterr().out
    assert "2 of 3 videos done" in text and "c.mp4" in text
    listing = tmp_path / "list.txt"
    listing.write_text("videos/a.mp4\n# comment\n\n")
    assert main(["foley", str(listing), "-o", str(tmp_path / "out2"), "--flac", "x.flac", *CLI_FAST]) == 0
    assert (tmp_path / "out2" / "a.flac").exists()


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


def test_bad_inputs_are_one_line_errors(cache, tmp_path, capsys):
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("hello")
    assert main(["foley", str(not_video), "-o", str(tmp_path / "o.mp4"), *CLI_FAST]) == 2
    assert "notes.mp4" in _error(capsys)
    short = make_video(tmp_path / "short.mp4", 25.0, 0.3)
    assert main(["foley", str(short), "-o", str(tmp_path / "o.mp4"), *CLI_FAST]) == 2
    assert "too short" in _error(capsys)
    good = make_video(tmp_path / "good.mp4", 25.0, 0.8)
    assert main(["foley", str(good), *CLI_FAST, "--model", "nonexistent"]) == 2
    assert "unknown model" in _error(capsys)
    assert main(["foley", str(good), *CLI_FAST, "--cfg", "0"]) == 2  # before any weights are read
    assert "cfg_strength must be a finite number > 0" in _error(capsys)
    # A corrupt converted file, then a corrupt official file: rejected before any video work.
    converted = cache / "weights" / "tiny_net.safetensors"
    converted.write_bytes(converted.read_bytes()[:3000])
    assert main(["foley", str(good), "-o", str(tmp_path / "o.mp4"), *CLI_FAST]) == 2
    assert "tiny_net.safetensors" in _error(capsys)
    converted.unlink()
    (cache / "raw" / "tiny_net.pth").write_bytes(b"\x00garbage" * 50)
    assert main(["foley", str(good), "-o", str(tmp_path / "o.mp4"), *CLI_FAST]) == 2
    assert "tiny_net.pth" in _error(capsys)
    monkey_asset = hub.ASSETS["tiny_net"]
    hub.ASSETS["tiny_net"] = replace(monkey_asset, md5="")  # no published sum: the reader itself must fail cleanly
    try:
        assert main(["foley", str(good), "-o", str(tmp_path / "o.mp4"), *CLI_FAST]) == 2
        assert "tiny_net.pth" in _error(capsys)
    finally:
        hub.ASSETS["tiny_net"] = monkey_asset
    assert not (tmp_path / "o.mp4").exists()


def test_missing_weights_and_offline(cache, tmp_path, capsys, monkeypatch):
    good = make_video(tmp_path / "good.mp4", 25.0, 0.8)
    for f in (cache / "raw").iterdir():
        f.unlink()
    assert main(["foley", str(good), "-o", str(tmp_path / "o.mp4"), *CLI_FAST]) == 2
    assert f"avflow download {MODEL}" in _error(capsys)
    monkeypatch.setenv("AVFLOW_OFFLINE", "1")
    assert main(["t2a", "x", "-o", str(tmp_path / "o.wav"), *CLI_FAST]) == 2
    err = _error(capsys)
    assert "offline" in err and f"avflow download {MODEL}" in err
    assert not (tmp_path / "o.mp4").exists() and not (tmp_path / "o.wav").exists()


def test_plan_windows_cover_and_overlap():
    rate = 31.25
    for total in (0.5, 1.0, 1.01, 2.7, 13.3):
        ws = plan_windows(total, 1.0, 0.25, rate)
        assert ws[0].start == 0 and all(w.duration <= 1.0 + 1e-9 or len(ws) == 1 for w in ws)
        assert ws[-1].start_s + ws[-1].duration >= total - 1e-6
        for a, b in zip(ws[:-1], ws[1:]):
            assert a.start < b.start and b.start_s <= a.start_s + a.duration - 0.25 + 1e-6
