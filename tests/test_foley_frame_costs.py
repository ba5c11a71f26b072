"""What the foley features stage spends per frame: encoder inputs normalised once, in place, and source frames
converted to RGB only where CLIP or Synchformer takes them, with the very same frames and values as before."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from test_encoders import full_grid_encoders

from avflow.data import video as video_module
from avflow.data.media import read_video
from avflow.encoders import features
from avflow.encoders.clip import OPENAI_MEAN, OPENAI_STD
from avflow.encoders.preprocess import clip_frames_transform, clip_normalize, frame_counts, sync_frames_transform
from avflow.encoders.preprocess import sync_normalize as sync_normalize_
from avflow.encoders.synchformer import split_segments
from avflow.pipelines.foley_frames import iter_window_frames
from avflow.pipelines.foley_windows import EPS, plan_windows

FPS, SECONDS = 60, 1.25


def counter_video(path: Path, turned: bool = False) -> Path:
    """60 fps, lossless: source frame k is a flat grey of level 5 + 3 k with a white mark at its stored top left;
    `turned` stores it with a 90 degree display rotation."""
    height, width = 32, 48
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv444p"
        stream.options = {"qp": "0"}
        if turned:
            if not hasattr(stream, "set_display_rotation"):
                pytest.skip("this PyAV cannot write a display rotation")
            stream.set_display_rotation(90)
        for k in range(round(FPS * SECONDS)):
            img = np.full((height, width, 3), 5 + 3 * k, np.uint8)
            img[:6, :10] = 255
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = k, Fraction(1, FPS)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def reference_frames(path: Path, windows) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[list[int]]]:
    """Each window's (clip, sync) frames by the rule, from every source frame converted (the old path): target
    start + k / fps takes the first source frame at or after it, the last frame past the end; and the chosen
    source frames per window."""
    src = read_video(path)
    times = src.times.tolist()
    out, chosen = [], []
    for w in windows:
        picked, tensors = [], []
        for fps, n, transform in zip(
            (8.0, 25.0), frame_counts(w.duration), (clip_frames_transform, sync_frames_transform)
        ):
            idx = [
                next((i for i, t in enumerate(times) if w.start_s + k / fps <= t + EPS), len(times) - 1)
                for k in range(n)
            ]
            tensors.append(torch.stack([transform(src.frames[i].permute(2, 0, 1)[None])[0] for i in idx]))
            picked += idx
        out.append((tensors[0], tensors[1]))
        chosen.append(picked)
    return out, chosen


@pytest.mark.parametrize("turned", [False, True])
def test_window_frames_convert_only_taken_frames_and_stay_bit_identical(tmp_path, monkeypatch, turned):
    """At 60 fps CLIP (8 fps) and Synchformer (25 fps) take under half the source frames: only those are converted
    to RGB, and every window gets the same frames, bit for bit, as from all frames converted."""
    path = counter_video(tmp_path / "count.mp4", turned)
    windows = plan_windows(SECONDS, 0.8, 0.25, 31.25)
    assert len(windows) > 1 and windows[1].start_s < windows[0].start_s + windows[0].duration  # they overlap
    want, chosen = reference_frames(path, windows)
    converted = []
    real = video_module._to_tensor
    index = lambda frame: round(float(frame.pts * frame.time_base) * FPS)  # noqa: E731
    monkeypatch.setattr(video_module, "_to_tensor", lambda frame: converted.append(index(frame)) or real(frame))
    for read_s in (0.5, 0.1):
        converted.clear()
        got = list(iter_window_frames(path, windows, read_s))
        assert [g.window for g in got] == windows
        for g, (clip, sync), picked in zip(got, want, chosen):
            assert torch.equal(g.clip, clip) and torch.equal(g.sync, sync)
            centre = torch.cat([g.clip[:, 1, 192, 192], g.sync[:, 1, 112, 112]]).tolist()
            assert [round((c - 5) / 3) for c in centre] == picked  # the frame counters (within a level): as chosen
        taken = sorted({i for picked in chosen for i in picked})
        assert sorted(converted) == taken and len(taken) < 0.6 * FPS * SECONDS


def test_normalisation_works_in_place_on_one_copy_bit_identical():
    """(x / 255 - mean) / std in place on one float copy: the formula's values bit for bit, the input untouched,
    and no fresh tensor per step (three passes that each allocated a frame-sized float tensor)."""
    x = torch.randint(0, 256, (2, 3, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    m, s = torch.tensor(OPENAI_MEAN).view(3, 1, 1), torch.tensor(OPENAI_STD).view(3, 1, 1)
    assert torch.equal(clip_normalize(x), (x.float() / 255.0 - m) / s)
    assert torch.equal(sync_normalize_(x, torch.bfloat16), ((x.float() / 255.0 - 0.5) / 0.5).to(torch.bfloat16))
    pixels = x.float()
    assert torch.equal(clip_normalize(pixels), (pixels / 255.0 - m) / s) and torch.equal(pixels, x.float())
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        clip_normalize(x)
    ops = {e.name for e in prof.events()}
    assert not ops & {"aten::div", "aten::sub", "aten::mul"}, ops


@pytest.mark.parametrize("run", [16, 2])
def test_sync_frames_are_normalised_once_not_per_segment(monkeypatch, run):
    """Synchformer segments (16 frames every 8) overlap by half: the frames are normalised once per run of
    segments, not once per segment (twice each), and the features are the same bit for bit, batch for batch."""
    enc = full_grid_encoders()
    enc.sync_batch = 3  # batches that straddle runs and videos
    frames = torch.randint(0, 256, (2, 40, 3, 224, 224), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    segments = split_segments(frames).flatten(0, 1)  # (8, 16, 3, 224, 224)
    with torch.no_grad():
        want = (
            torch.cat(
                [
                    enc.synchformer(sync_normalize_(segments[i : i + 3])[:, None])[:, 0]
                    for i in range(0, len(segments), 3)
                ]
            )
            .unflatten(0, (2, 4))
            .flatten(1, 2)
        )
    normalised = []
    monkeypatch.setattr(features, "SYNC_RUN", run, raising=False)
    count = lambda x, dtype: normalised.append(x.shape[:-3].numel()) or sync_normalize_(x, dtype)  # noqa: E731
    monkeypatch.setattr(features, "sync_normalize", count)
    assert torch.equal(enc.encode_sync(frames), want)
    runs = -(-4 // run)  # per video; consecutive runs share 8 frames
    assert sum(normalised) == 2 * (40 + 8 * (runs - 1))
