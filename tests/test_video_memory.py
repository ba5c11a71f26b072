"""Reading video holds its output once: `read_video` / `iter_video_windows` copy each resized batch (or each frame
that needs no resizing) into one output tensor, with no list of batches stacked into a second full copy (a 300 s
360p read peaked at 2.8x its output); the frames are those of a plain per-frame decode and resize; `avflow info`
probes without importing torch or scipy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from avflow.data import video
from avflow.data.media import iter_video_windows, read_video, write_video

REPO = Path(__file__).resolve().parents[1]


def moving_frames(t: int, h: int, w: int) -> np.ndarray:
    """(t, h, w, 3) uint8 diagonal stripes that move each frame (cheap to encode, every frame different)."""
    plane = ((3 * np.arange(w)[None, :] + 2 * np.arange(h)[:, None]) % 256).astype(np.uint8)
    base = plane[None] + (7 * np.arange(t) % 256).astype(np.uint8)[:, None, None]  # uint8: wraps around
    return np.stack([base, base + np.uint8(85), np.uint8(255) - base], axis=-1)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """2 s of 96 x 128 at 16 fps: 32 frames, two resize batches."""
    return write_video(tmp_path_factory.mktemp("clip") / "c.mp4", moving_frames(32, 96, 128), 16, preset="ultrafast")


def per_frame_reference(path: Path, size, mode: str) -> tuple[torch.Tensor, list[float]]:
    """Every frame decoded by PyAV, each resized on its own, and its time (from the first frame)."""
    frames, times = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            rgb = torch.from_numpy(frame.to_ndarray(format="rgb24"))
            frames.append(video.resize_frames(rgb[None], size, mode)[0])
            times.append(float(frame.pts * stream.time_base))
    origin = times[0]
    return torch.stack(frames), [t - origin for t in times]


@pytest.mark.parametrize(
    "size, mode",
    [(None, "resize"), ((48, 64), "resize"), (40, "resize"), ((96, 128), "resize"), ((64, 64), "crop"),
     ((80, 80), "letterbox")],
)  # fmt: skip
def test_frames_are_those_of_a_per_frame_decode_and_resize(clip, size, mode):
    want, times = per_frame_reference(clip, size, mode)
    got = read_video(clip, size=size, mode=mode)
    assert got.frames.dtype == torch.uint8 and got.frames.is_contiguous()
    assert got.frames.shape == want.shape and torch.equal(got.frames, want)
    assert got.times.tolist() == pytest.approx(times)
    # on a grid of 40 fps (source frames repeated) and 5 fps (skipped): the frame shown at each time
    for fps in (40.0, 5.0):
        grid = read_video(clip, fps=fps, size=size, mode=mode)
        shown = [max(i for i, t in enumerate(times) if t <= k / fps + 1e-6) for k in range(len(grid.times))]
        assert len(grid.times) == round(2 * fps) and torch.equal(grid.frames, want[shown])
    # windows of the source frames, and of a grid, hold the same frames as one read
    windows = list(iter_video_windows(clip, window_s=0.3, size=size, mode=mode))
    assert torch.equal(torch.cat([w.frames for w in windows]), want)
    windows = list(iter_video_windows(clip, window_s=0.3, fps=40.0, size=size, mode=mode))
    assert torch.equal(torch.cat([w.frames for w in windows]), read_video(clip, fps=40.0, size=size, mode=mode).frames)


def test_a_read_stacks_at_most_one_batch_and_nothing_when_not_resizing(clip, monkeypatch):
    """The output is filled batch by batch: no torch.stack (a full copy) of every frame read; frames that need no
    resizing (size None, or their own size) are not stacked at all."""
    stacked: list[int] = []
    stack = torch.stack
    monkeypatch.setattr(torch, "stack", lambda frames, *a, **k: stacked.append(len(frames)) or stack(frames, *a, **k))
    read_video(clip, size=(48, 64))
    assert stacked and max(stacked) <= video.RESIZE_BATCH
    stacked.clear()
    read_video(clip, fps=40.0, size=(48, 64))  # repeated source frames too
    assert stacked and max(stacked) <= video.RESIZE_BATCH
    stacked.clear()
    read_video(clip)
    read_video(clip, size=(96, 128))
    list(iter_video_windows(clip, window_s=0.5))
    assert stacked == []


def _frame(level: int) -> av.VideoFrame:
    image = np.full((12, 16, 3), level, dtype=np.uint8)
    image[:, : level % 16] = 255 - level  # frames differ in shape too, so a resize mixes them differently
    return av.VideoFrame.from_ndarray(image, format="rgb24")


@pytest.mark.parametrize("size", [None, (6, 8)])
@pytest.mark.parametrize("expected", [1, 5, 100])
def test_resizer_output_grows_past_its_expected_count(size, expected, monkeypatch):
    """Fewer frames expected than come (a variable frame rate) or far more: the same frames, repeats included, at a
    batch boundary and within a batch."""
    monkeypatch.setattr(video, "RESIZE_BATCH", 3)
    levels = [0, 0, 10, 20, 30, 30, 30, 40, 50, 60, 60, 70]  # a level twice: the frame repeated
    resizer = video._Resizer(size, "resize", expected)
    for k, level in enumerate(levels):
        resizer.add(_frame(level), repeat=k > 0 and levels[k - 1] == level)
    got = resizer.result()
    want = torch.stack([video.resize_frames(video._to_tensor(_frame(v))[None], size, "resize")[0] for v in levels])
    assert got.shape == want.shape and got.is_contiguous() and torch.equal(got, want)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_peak_memory_of_a_read_is_about_its_output(tmp_path):
    """A read of 138 MB of frames (600 at 240 x 320, no resize) raises the process's peak by about that, not twice
    it (each batch stacked, then every batch stacked again)."""
    path = write_video(tmp_path / "m.mp4", moving_frames(600, 240, 320), 30, preset="ultrafast")
    code = f"""
import json
from avflow.data.media import read_video

def status(key):  # kB; VmHWM is this process's own peak (getrusage's counts the parent's at the fork)
    return next(int(line.split()[1]) * 1024 for line in open('/proc/self/status') if line.startswith(key + ':'))

read_video({str(path)!r}, duration=0.2)  # decoder and torch warmed up
try:
    open('/proc/self/clear_refs', 'w').write('5')  # the peak from here on
except OSError:
    pass
before = status('VmRSS')
frames = read_video({str(path)!r}).frames
print(json.dumps({{'before': before, 'peak': status('VmHWM'), 'output': frames.numel()}}))
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["output"] == 600 * 240 * 320 * 3
    assert got["peak"] - got["before"] < 1.5 * got["output"], got


def test_info_probes_without_torch_or_scipy(tmp_path):
    """`avflow info` reads headers: importing torch and scipy for it cost 1.6 s and 290 MB."""
    path = write_video(tmp_path / "i.mp4", moving_frames(8, 32, 48), 8, preset="ultrafast")
    code = f"""
import argparse, sys
from avflow.commands.info import run
from avflow.data.video import probe
assert probe({str(path)!r}).n_frames == 8
assert run(argparse.Namespace(file=[{str(path)!r}], json=True)) == 0
print(sorted(m for m in ('torch', 'scipy') if m in sys.modules))
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert run.stdout.strip().splitlines()[-1] == "[]", run.stdout + run.stderr
