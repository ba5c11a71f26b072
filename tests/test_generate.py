"""`avflow generate` / `avflow demo` with the shipped default model."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from avflow.cli import main
from avflow.data.media import probe, read_audio
from avflow.errors import AvflowError
from avflow.pipelines.default_model import WEIGHT_FILES, default_model_dir, load_default_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pipe():
    return load_default_model()


def test_shipped_weights_are_small_safetensors():
    folder = default_model_dir()
    for name in WEIGHT_FILES:
        assert (folder / name).is_file(), name
    total = sum((folder / n).stat().st_size for n in WEIGHT_FILES if n.endswith(".safetensors"))
    assert total <= 25 * 2**20


def test_generate_round_trip(tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    assert main(["generate", "a red rubber ball bounces on the left", "--steps", "2", "--duration", "1",
                 "--seed", "3", "-o", str(out), "--spectrogram", str(tmp_path / "clip.png")]) == 0  # fmt: skip
    info = probe(out)
    assert info.has_video and info.n_frames == 16 and (info.width, info.height) == (64, 64)
    assert info.has_audio and info.audio_channels == 2 and info.audio_sample_rate == 16000
    audio, sr = read_audio(out)
    assert audio.shape[0] == 2
    assert abs(audio.shape[1] / sr - 1.0) < 0.05  # AAC track fitted to the video's 1 s
    assert float(audio.abs().max()) > 0
    captured = capsys.readouterr()
    assert f"wrote {out}" in captured.out and "clip.png" in captured.out
    assert "generate" in captured.err and "2/2" in captured.err  # the progress bar


def test_same_seed_same_clip_and_outputs(pipe, tmp_path):
    two = pipe.sampling.override(steps=2)
    a = pipe.generate("a blue ball rolls to the right", seed=1, sampling=two, duration=0.5)
    b = pipe.generate("a blue ball rolls to the right", seed=1, sampling=two, duration=0.5)
    c = pipe.generate("a blue ball rolls to the right", seed=2, sampling=two, duration=0.5)
    assert torch.equal(a.frames, b.frames) and torch.equal(a.audio, b.audio)
    assert not torch.equal(a.audio, c.audio)
    assert a.frames.dtype == torch.uint8 and a.frames.shape == (8, 64, 64, 3)
    assert a.audio.dtype == torch.float32 and a.audio.shape == (2, 8000)
    png = a.save_spectrogram(tmp_path / "spec.png")
    from PIL import Image

    assert Image.open(png).size[1] == 80 * 3
    metrics = a.metrics()
    assert {"sync_offset_ms", "follows_object", "phys_residual_px"} <= set(metrics)


def test_v2a_keeps_the_given_video(pipe, tmp_path):
    one = pipe.sampling.override(steps=1)
    src = pipe.generate("a ball", seed=0, sampling=one, duration=0.5)
    path = src.save(tmp_path / "in.mp4")
    out = pipe.generate("a ball", sampling=one, task="v2a", video_path=path, duration=0.5)
    from avflow.data.media import read_video

    assert out.frames.shape == src.frames.shape
    assert torch.equal(out.frames, read_video(path, fps=16, size=(64, 64)).frames)  # the given video, unchanged
    a2v = pipe.generate("a ball", sampling=one, task="a2v", audio_path=path, duration=0.5)
    assert a2v.audio.shape == (2, 8000)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "   "], "prompt is empty"),
        (["generate", "a ball", "--duration", "0"], "--duration"),
        (["generate", "a ball", "--duration", "-1"], "--duration"),
        (["generate", "a ball", "--task", "a2v"], "--audio-file"),
        (["generate", "a ball", "--task", "v2a", "--video", "/nonexistent/x.mp4"], "x.mp4"),
        (["generate", "a ball", "--cfg", "0"], "cfg_strength must be a finite number > 0"),
        (["generate", "a ball", "--cfg", "nan"], "cfg_strength must be a finite number > 0"),
        (["generate", "a ball", "--steps", "0"], "steps must be an integer >= 1"),
        (["demo", "--cfg", "-1"], "cfg_strength must be a finite number > 0"),
        (["binaural", "/nonexistent/x.mp4", "-o", "y.mp4", "--cfg", "inf"], "x.mp4: file not found"),  # checked first
    ],
)
def test_bad_inputs_are_one_line_errors(argv, message, capsys):
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_unreadable_media_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    assert main(["generate", "a ball", "--task", "a2v", "--audio-file", str(bad)]) != 0
    err = capsys.readouterr().err.strip()
    assert "bad.wav" in err and len(err.splitlines()) == 1


def test_pipeline_rejects_bad_arguments(pipe):
    with pytest.raises(AvflowError, match="prompt"):
        pipe.generate("")
    with pytest.raises(AvflowError, match="duration"):
        pipe.generate("a ball", duration=0)


@pytest.mark.slow
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
    assert "metrics:" in done.stdout and "sync_offset_ms" in done.stdout
    info = probe(clone / "outputs" / "demo.mp4")
    assert info.has_video and info.has_audio and info.audio_channels == 2
    assert (clone / "outputs" / "demo_spectrogram.png").is_file()
    audio, sr = read_audio(clone / "outputs" / "demo.mp4")
    assert np.isfinite(audio.numpy()).all() and abs(audio.shape[1] / sr - info.duration) < 0.05
    print(f"make demo from a fresh clone (cold, with installation): {elapsed:.0f} s")
