"""Long clips in `avflow eval` and `avflow binaural` (spatialise): the per-clip measures and the renderer work through
the video and the track in chunks instead of whole-clip float copies, with the whole clip's results (up to float
rounding), and a same-name json is ground truth only when it holds what the measures read.

Measured before these changes (60 s of 64 px frames, 48 kHz): the tracker +287 MB, the visual events +287 MB, the
spatialiser's positions +132 MB, the renderer +221 MB, each growing with the clip's length."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import lfilter

from avflow.eval import events, physics
from avflow.pipelines import spatialise as sp
from avflow.world import binaural as wb
from avflow.world.binaural import _per_sample, _shadow_filters, shadow_alpha, woodworth_itd


def long_frames(t: int, h: int = 36, w: int = 64, seed: int = 0) -> np.ndarray:
    """(t, h, w, 3) uint8: a grey noisy background, two coloured squares bouncing off the walls and floor, a white
    flash every 40 frames."""
    rng = np.random.default_rng(seed)
    frames = np.clip(rng.normal(60, 3, size=(t, h, w, 3)), 0, 255).astype(np.uint8)
    for k, (colour, vx, vy) in enumerate((((220, 40, 40), 1.3, 0.0), ((40, 200, 60), -0.9, 0.0))):
        x, y = 10.0 + 30 * k, 5.0 + 8 * k
        for i in range(t):
            vy += 0.25
            x, y = x + vx, y + vy
            if x < 0 or x > w - 6:
                vx, x = -vx, float(np.clip(x, 0, w - 6))
            if y > h - 6:
                vy, y = -0.9 * vy, float(h - 6)
            frames[i, int(y) : int(y) + 6, int(x) : int(x) + 6] = colour
    for i in range(20, t, 40):
        frames[i : i + 2, 4:10, 50:56] = 255
    return frames


def traced_peak(fn, *args, **kwargs) -> float:
    """Peak traced allocation (MB) above what was held when ``fn`` started."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        fn(*args, **kwargs)
        return (tracemalloc.get_traced_memory()[1] - base) / 2**20
    finally:
        tracemalloc.stop()


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


def close(a: np.ndarray, b: np.ndarray, tol: float) -> bool:
    """Equal up to float rounding: the same dtype, shape and NaNs, values within ``tol``. A sum over a chunk of frames
    rounds in another order than over the whole clip where numpy's SIMD reductions depend on the array's shape (seen
    on an AVX-512 Intel Xeon: centroids 1e-7 px apart; on AVX2 they were bit-identical)."""
    nan = np.isnan(a)
    return same(nan, np.isnan(b)) and a.dtype == b.dtype and bool(np.all(np.abs(a[~nan] - b[~nan]) <= tol))


# --- results: chunked == whole clip, up to float rounding ----------------------------------------------------------


@pytest.mark.parametrize("pixels", [1, 5000, 64 * 36 * 7])
def test_tracks_events_and_blankness_in_chunks_equal_the_whole_clip(monkeypatch, pixels):
    """Tracking, brightening and contacts, and the blank-video check, read in chunks of frames (down to one frame a
    chunk, and a last chunk of one frame), give the whole clip's values exactly."""
    frames = long_frames(301)
    fps = 30.0
    monkeypatch.setattr(physics, "TRACK_CHUNK_PIXELS", 1 << 40)
    whole_tracks = physics.track_objects(frames)
    whole_events, _ = events.detect(frames, fps)
    whole_blank = events.is_blank(frames)
    assert whole_tracks.centers.shape[1] >= 2 and len(whole_events) > 5  # the clip has objects and events
    monkeypatch.setattr(physics, "TRACK_CHUNK_PIXELS", pixels)
    tracks = physics.track_objects(frames)
    got, _ = events.detect(frames, fps)
    assert close(tracks.centers, whole_tracks.centers, 1e-5) and same(tracks.areas, whole_tracks.areas)  # px
    for k, tol in (("times", 1e-8), ("x", 1e-5), ("curve", 0.0)):  # s, px, fraction of the frame
        assert close(getattr(got, k), getattr(whole_events, k), tol), k
    assert list(got.kinds) == list(whole_events.kinds)
    assert events.is_blank(frames) == whole_blank
    assert events.is_blank(np.full_like(frames, 90))


def test_the_spatialiser_in_chunks_equals_the_whole_clip(monkeypatch):
    """Positions, the frames moved onto the audio's clock and the binaural render, in small chunks of frames and
    samples, equal those computed over the whole clip in one chunk."""
    frames, fps, sr = long_frames(120), 30.0, 16000
    rng = np.random.default_rng(1)
    mono = np.zeros(int(4 * sr))
    for start in np.arange(0.3, 3.8, 0.4):
        n0 = int(start * sr)
        mono[n0 : n0 + 800] += rng.standard_normal(800) * np.exp(-np.arange(800) / 200)
    clock = sp.AudioClock(lag_s=0.04, anchors=((0.7, 0.67, 20.0),))

    def run():
        return (sp.source_positions(frames, fps), sp.frames_on_audio_clock(frames, fps, clock),
                sp.spatialise(mono, sr, frames, fps), sp.amplitude_pan(mono, sr, frames, fps))  # fmt: skip

    for module, name in ((sp, "CHUNK_PIXELS"), (physics, "TRACK_CHUNK_PIXELS"), (wb, "RENDER_CHUNK")):
        monkeypatch.setattr(module, name, 1 << 40)
    whole = run()
    monkeypatch.setattr(sp, "CHUNK_PIXELS", 3000)
    monkeypatch.setattr(physics, "TRACK_CHUNK_PIXELS", 5000)
    monkeypatch.setattr(wb, "RENDER_CHUNK", 1001)
    for a, b in zip(run(), whole):
        assert same(a, b)


def render_sphere_whole(source: np.ndarray, azimuth: np.ndarray, sample_rate: int) -> np.ndarray:
    """`render_sphere` as it was before it rendered in chunks (the world dataset's audio is made with it)."""

    def fractional_delay(signal, delay):
        n = signal.shape[-1]
        out = np.zeros(n)
        for shift in range(int(np.floor(delay.min())), int(np.ceil(delay.max())) + 1):
            weight = np.maximum(1.0 - np.abs(delay[shift:] - shift), 0.0)
            out[shift:] += signal[: n - shift] * weight
        return out

    n = source.shape[-1]
    (b_lp, a_lp), _ = _shadow_filters(sample_rate)
    low = lfilter(b_lp, a_lp, source)
    high = source - low
    itd = woodworth_itd(azimuth) * sample_rate
    ears = []
    for alpha, delay in ((shadow_alpha(azimuth + 90.0), -itd), (shadow_alpha(90.0 - azimuth), itd)):
        ear = low + _per_sample(alpha, n) * high
        delay = np.maximum(delay, 0.0)
        ears.append(fractional_delay(ear, _per_sample(delay, n)) if np.any(delay > 1e-6) else ear)
    return np.stack(ears)


@pytest.mark.parametrize("sr", [16000, 48000])
def test_render_sphere_in_chunks_is_bit_identical_to_the_whole_track(monkeypatch, sr):
    """The world dataset is byte-deterministic and shipped models were trained on it: the chunked renderer gives the
    same bytes as the whole-track one, for still, moving and centred sources, chunk edges anywhere (also shorter than
    the longest delay); float32 output equals the float64 result cast."""
    rng = np.random.default_rng(0)
    for n in (1, 130, 5000, 70001):
        source = rng.standard_normal(n) * 0.3
        b = int(np.ceil(n / wb.BLOCK))
        for azimuth in (np.zeros(b), np.full(b, 30.0), np.linspace(-45, 45, b), rng.uniform(-45, 45, b)):
            want = render_sphere_whole(source, azimuth, sr)
            for chunk in (7, 128, 4099, 1 << 16) if n <= 5000 else (4099, 1 << 16):
                monkeypatch.setattr(wb, "RENDER_CHUNK", chunk)
                got = wb.render_sphere(source, azimuth, sr)
                assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), (n, chunk)
            assert np.array_equal(wb.render_sphere(source, azimuth, sr, dtype=np.float32), want.astype(np.float32))


# --- memory: no whole-clip float copies ------------------------------------------------------------------------------


@pytest.mark.parametrize("what", ["track_objects", "detect", "source_positions"])
def test_the_frame_measures_do_not_grow_with_the_clip(what):
    """Four times the frames take about the same peak memory (whole-video float copies took 4x as much: the tracker
    ~20x the uint8 frames' size, the events as much again, the positions 3 float64 greys)."""
    fn = {"track_objects": physics.track_objects, "detect": lambda f: events.detect(f, 30.0),
          "source_positions": lambda f: sp.source_positions(f, 30.0)}[what]  # fmt: skip
    short, long = long_frames(1500), long_frames(6000)
    peaks = [traced_peak(fn, f) for f in (short, long)]
    assert peaks[1] < 1.6 * peaks[0], peaks
    assert peaks[1] < 6 * long.nbytes / 2**20, (peaks, long.nbytes / 2**20)


def test_render_sphere_holds_its_output_and_a_chunk():
    """The renderer's peak is its (2, N) output and a chunk's temporaries: 20 s at 48 kHz, 73.5 MB before (5x the
    float64 output), 20.5 MB now."""
    sr = 48000
    n = 20 * sr
    source = np.random.default_rng(0).standard_normal(n) * 0.1
    azimuth = np.linspace(-40, 40, int(np.ceil(n / wb.BLOCK)))
    out_mb = 2 * n * 8 / 2**20
    assert traced_peak(wb.render_sphere, source, azimuth, sr) < 2 * out_mb
    # the spatialiser as a whole: 73.7 MB before (the renderer's), 40 MB now (the mono's onsets, read whole)
    assert traced_peak(sp.spatialise, source, sr, long_frames(30 * 20, 18, 32), 30.0) < 3.5 * out_mb


# --- ground truth: only a json of ground truth ---------------------------------------------------------------------


def test_a_users_own_json_beside_a_video_is_not_ground_truth(tmp_path):
    """A same-name json switched a video to full-resolution frames as if it held ground truth in the source's
    pixels (a 10 s 1080p clip beside {"title": ...}: 4.05 GB instead of 1.29 GB). Only a json with what the measures
    read (events, offset_ms, config) is ground truth; any other is ignored."""
    from avflow.data.media import write_video
    from avflow.eval.report import EVAL_MAX_SIDE, load_eval_clip

    frames = np.repeat(np.repeat(long_frames(16, 16, 16), 32, axis=1), 32, axis=2)  # (16, 512, 512, 3)
    audio = np.zeros((1, 16000), dtype=np.float32)
    path = write_video(tmp_path / "clip.mp4", frames, 16.0, audio, 16000, crf=20)
    meta = tmp_path / "clip.json"
    for other in ({"title": "my holiday"}, {"note": "x", "tags": ["a"]}, ["events"], "offset_ms"):
        meta.write_text(json.dumps(other))
        clip = load_eval_clip(path)
        assert clip.meta is None and clip.frames.shape[1:3] == (EVAL_MAX_SIDE, EVAL_MAX_SIDE), other
    for truth in ({"offset_ms": 40.0}, {"events": [{"time": 0.5, "azimuth": 0.0}]}, {"config": {"gravity": 5.0}}):
        meta.write_text(json.dumps(truth))
        clip = load_eval_clip(path)
        assert clip.meta == truth and clip.frames.shape[1:3] == (512, 512), truth  # truth is in source pixels


# --- a stated limit for what is still held whole ---------------------------------------------------------------------


def test_a_clip_too_long_to_hold_is_refused_in_one_line_before_decoding(tmp_path, monkeypatch):
    """The frames are held whole while a clip is measured, so memory grows with its length (7.8 MB/s of 16:9 30 fps
    video): one past EVAL_MAX_FRAME_BYTES is refused in one line that says the longest measured, before any frame is
    decoded (in a folder: skipped with that reason, the other clips measured); `avflow eval --help` states it."""
    import argparse

    import avflow.data.media as media
    from avflow.commands import eval as eval_command
    from avflow.data.media import write_video
    from avflow.errors import MediaError
    from avflow.eval import report

    frames = long_frames(48, 32, 32)
    audio = np.zeros((1, 48000), dtype=np.float32)
    path = write_video(tmp_path / "long.mp4", frames, 16.0, audio, 16000, crf=20)
    write_video(tmp_path / "short.mp4", frames[:16], 16.0, audio[:, :16000], 16000, crf=20)
    monkeypatch.setattr(report, "EVAL_MAX_FRAME_BYTES", 32 * 32 * 3 * 40)  # 40 frames of 32x32
    real_read = media.read_video

    def read_video(p, *args, **kwargs):
        assert Path(p).name != "long.mp4", "decoded before it was refused"
        return real_read(p, *args, **kwargs)

    monkeypatch.setattr(media, "read_video", read_video)
    with pytest.raises(MediaError) as err:
        report.load_eval_clip(path)
    msg = str(err.value)
    assert "\n" not in msg and "3 s long" in msg and "up to 2 s" in msg and "32x32 at 16 fps" in msg, msg
    result = report.evaluate(tmp_path)
    assert result["n_clips"] == 1 and "up to 2 s" in result["skipped"]["long"]
    assert report.EVAL_MAX_FRAME_BYTES == 32 * 32 * 3 * 40
    monkeypatch.undo()
    parser = argparse.ArgumentParser()
    eval_command.add_arguments(parser)
    help_text = " ".join(parser.format_help().split())
    assert f"more than {report.EVAL_MAX_FRAME_BYTES / 1e9:g} GB" in help_text
    longest = report.EVAL_MAX_FRAME_BYTES / (320 * 180 * 3) / 30
    assert f"{int(longest // 60)} min {int(longest % 60)} s of 16:9 at 30 fps" in help_text
