"""Foley windows, guidance settings, progress and the default seed: the plan of windows for many lengths (count,
overlaps, grid, exact coverage, work growing smoothly with the length), finite windows, a negative prompt that needs
guidance and a strength below 1 refused in one line before any weights are read (CLI and API), progress over the whole
run, the wording of a shortened track, and one default seed for the CLI and the Python API."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
from helpers import (
    WeightReads,
    fixtures_root,
    sweep_video_frames,
    tiny_foley_model,
    tiny_foley_raw_files,
    write_tiny_model_config,
)

from avflow.cli import main
from avflow.data.media import write_video
from avflow.errors import ConfigError
from avflow.models.mmaudio_config import SAMPLING
from avflow.pipelines import foley as foley_module
from avflow.pipelines import foley_windows
from avflow.pipelines.foley import FoleyPipeline
from avflow.pipelines.foley_model import FoleyModel
from avflow.pipelines.foley_windows import MIN_MODEL_S, check_windows, plan_windows

RATE_16K, RATE_44K = 16000 / 512, 44100 / 1024  # audio latents a second (hop 256 / 512, two mel frames a latent)
SETTINGS = [(8.0, 1.0, RATE_16K), (8.0, 1.0, RATE_44K), (1.0, 0.25, RATE_16K), (8.0, 0.0, RATE_16K),
            (10.0, 4.9, RATE_44K), (0.64, 0.3, RATE_16K)]  # fmt: skip


def lengths(window: float, overlap: float) -> list[float]:
    """Many lengths, among them every count boundary of the ideal formula and just past it."""
    out = list(np.arange(0.5, 12 * window, window / 7.3))
    for k in range(1, 12):
        edge = window + k * (window - overlap)
        out += [edge - 0.01, edge, edge + 1e-4, edge + 0.01, edge + 0.05]
    return [float(t) for t in out] + [600.0]


def window_seconds(windows) -> float:
    return sum(w.duration for w in windows)


@pytest.mark.parametrize(("window", "overlap", "rate"), SETTINGS)
def test_plans_for_many_lengths(window, overlap, rate):
    per_latent = 1024 if rate == RATE_44K else 512
    sr = round(rate * per_latent)
    stride = math.floor((window - overlap) * rate + 1e-6)  # latents: W - O rounded down to the grid
    grid_overlap = window - stride / rate  # O rounded up to the grid (O')
    for total in lengths(window, overlap):
        ws = plan_windows(total, window, overlap, rate)
        n = len(ws)
        if total <= window + 1e-6:
            assert n == 1 and ws[0].start == 0 and ws[0].duration == max(total, MIN_MODEL_S)
            continue
        # the count: the ceil formula with O on the grid; never below the ideal one, at most one above it
        assert n == math.ceil((total - grid_overlap) / (window - grid_overlap) - 1e-9), (total, n)
        ideal = math.ceil((total - overlap) / (window - overlap) - 1e-9)
        assert ideal <= n <= ideal + 1 + n // stride, (total, n, ideal)
        # starts on the latent grid, evenly spread (steps differ by one latent at most), first at 0
        assert [w.index for w in ws] == list(range(n)) and ws[0].start == 0
        steps = [b.start - a.start for a, b in zip(ws[:-1], ws[1:])]
        assert all(isinstance(w.start, int) and w.start_s == w.start / rate for w in ws)
        assert min(steps) >= 1 and max(steps) - min(steps) <= 1, (total, steps)
        # every window at most W (and at least the model's minimum), lengths about equal: no near-duplicate
        assert all(MIN_MODEL_S - 1e-9 <= w.duration <= window + 1e-9 for w in ws), (total, ws)
        clamped = any(w.duration == MIN_MODEL_S for w in ws)
        if not clamped:
            assert max(w.duration for w in ws) - min(w.duration for w in ws) <= 1.5 / rate + 1e-9, (total, ws)
            assert min(steps) / rate >= (window - overlap) / 2 - 1 / rate, (total, steps)
        # every overlap is at least O (exactly O unless a window was lengthened to the model's minimum)
        for a, b in zip(ws[:-1], ws[1:]):
            shared = a.start_s + a.duration - b.start_s
            assert shared >= overlap - 1e-9, (total, a, b)
            assert clamped or shared == pytest.approx(overlap, abs=1e-9), (total, a, b)
        # coverage exact, in seconds and in samples: no gap at any join, the last sample is the input's last
        assert ws[-1].start_s + ws[-1].duration == pytest.approx(total, abs=1e-9) or clamped
        spans = [(w.start * per_latent, w.start * per_latent + round(w.duration * sr)) for w in ws]
        assert all(b[0] <= a[1] for a, b in zip(spans[:-1], spans[1:]))
        assert clamped or spans[-1][1] == round(total * sr)
        # the work grows with the length by O per extra window: T + (n - 1) O window-seconds
        if not clamped:
            assert window_seconds(ws) == pytest.approx(total + (n - 1) * overlap, abs=1e-6)


def test_the_audit_lengths():
    """15.01 s made a third window that repeated the second for 10 ms of new audio; 17.32 s a last window that
    overlapped its neighbour by 5.66 s. Now the windows share the length and overlap by exactly 1 s, and a length just
    past a boundary costs about as much as the length at it."""
    for total in (15.0, 15.01, 17.32):
        ws = plan_windows(total, 8.0, 1.0, RATE_16K)
        for a, b in zip(ws[:-1], ws[1:]):
            assert a.start_s + a.duration - b.start_s == pytest.approx(1.0, abs=1e-9)
            assert b.start_s - a.start_s > 4.0  # no window repeats its neighbour
    work = {t: window_seconds(plan_windows(t, 8.0, 1.0, RATE_16K)) for t in (15.0, 15.01, 22.0, 22.01)}
    assert work[15.01] < 1.01 * work[15.0] and work[22.01] < 1.01 * work[22.0]
    previous = None
    for total in np.arange(8.0, 120.0, 0.01):  # never a jump of more than the overlap from one length to the next
        seconds = window_seconds(plan_windows(float(total), 8.0, 1.0, RATE_16K))
        assert previous is None or seconds - previous <= 1.0 + 0.01 + 1e-6, total
        previous = seconds


def test_windows_must_be_finite():
    for window, overlap in ((math.inf, 1.0), (8.0, math.inf), (math.nan, 1.0), (-math.inf, 0.0)):
        with pytest.raises(ConfigError) as err:
            check_windows(window, overlap)
        assert "\n" not in str(err.value)
        with pytest.raises(ConfigError):
            plan_windows(600.0, window, overlap, RATE_16K)
    assert "finite" in str(pytest.raises(ConfigError, check_windows, math.inf, 1.0).value)
    assert foley_windows.window_note(8.0) is None and foley_windows.window_note(16.0) is None
    assert "MMAudio issue #32" in foley_windows.window_note(30.0)


# ------------------------------------------------------------------------------------------------------------------
# the command line: refused before any weights are read; the note; the shortened track's wording; the progress bar


@pytest.fixture(scope="module")
def model_json(tmp_path_factory):
    folder = tmp_path_factory.mktemp("own_model")
    files, spec = tiny_foley_raw_files(folder, fixtures_root())
    return write_tiny_model_config(folder, files, spec)


def make_video(path, fps: float, seconds: float):
    return write_video(path, sweep_video_frames(fps, seconds), fps)


def test_guidance_and_window_errors_are_one_line_before_weights(model_json, tmp_path, monkeypatch, capsys):
    from PIL import Image

    video = make_video(tmp_path / "v.mp4", 25.0, 0.8)
    image = tmp_path / "img.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    f = ["--model", str(model_json), "--steps", "2", "--device", "cpu"]
    heads = {
        "foley": ["foley", str(video), "-o", str(tmp_path / "o.mp4")],
        "t2a": ["t2a", "rain", "-o", str(tmp_path / "o.wav")],
        "i2a": ["i2a", str(image), "-o", str(tmp_path / "i.wav")],
    }
    cases = {
        "negative at cfg 1": (["--cfg", "1", "--negative-prompt", "x"], "--negative-prompt needs guidance: --cfg > 1"),
        "negative at cfg 0.5": (["--cfg", "0.5", "--negative-prompt", "x"], "--negative-prompt needs guidance"),
        "cfg below 1": (["--cfg", "0.5"], "--cfg 0.5 < 1: MMAudio runs unguided there"),
        "infinite window": (["--window", "inf"], "must be finite"),
        "infinite overlap": (["--overlap", "inf"], "must be finite"),
    }
    reads = WeightReads(monkeypatch)
    for command, head in heads.items():
        for name, (options, message) in cases.items():
            assert main([*head, *f, *options]) == 2, (command, name)
            err = capsys.readouterr().err.strip()
            assert message in err and "\n" not in err, (command, name, err)
    assert reads.calls == []
    assert not any(tmp_path.glob("o.*")) and not (tmp_path / "i.wav").exists()


def test_shortened_track_is_worded_as_written(model_json, tmp_path, capsys):
    video = make_video(tmp_path / "v.mp4", 25.0, 2.6)
    out = tmp_path / "o.mp4"
    argv = ["foley", str(video), "-o", str(out), "--model", str(model_json), "--steps", "1", "--device", "cpu",
            "--duration", "1"]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    # the written track lasts as long as the video; the line says so rather than "a track of 1.00 s"
    assert "1.00 s generated, silent to the video's end (2.60 s)" in captured.out, captured.out
    assert "track of 1.00 s" not in captured.out
    # the bar covers the whole run and ends at 100 % once the file is written
    bar = captured.err.replace("\r", "\n")
    assert "window 1/1: features" in bar and "window 1/1: decoding" in bar and "100%" in bar
    assert "note:" not in captured.err  # the default window: no note


def test_a_long_window_gets_a_note(model_json, tmp_path, capsys):
    argv = ["t2a", "rain", "-o", str(tmp_path / "o.wav"), "--model", str(model_json), "--steps", "1", "--device",
            "cpu", "--duration", "0.7", "--window", "20"]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "note: --window 20 s is much longer than the 8 s clips" in err and "MMAudio issue #32" in err


# ------------------------------------------------------------------------------------------------------------------
# the Python API: the same checks, progress over the whole run, the default seed


class StubEncoders:
    """Encoders of the tiny model's widths that log their calls (features of one frame: the pipeline pads them)."""

    def __init__(self, config, log: list):
        from avflow.encoders.tokenizer import CLIPTokenizer

        self.config, self.log = config, log
        self.tokenizer = CLIPTokenizer()  # the pipeline counts a prompt's tokens before sampling

    def encode_text(self, texts):
        return torch.zeros(len(texts), self.config.text_seq_len, self.config.text_dim)

    def encode_clip(self, frames, progress=None):
        self.log.append(("clip", None))
        return torch.zeros(frames.shape[0], 1, self.config.clip_dim)

    def encode_sync(self, frames, progress=None):
        self.log.append(("sync", None))
        return torch.zeros(frames.shape[0], 1, self.config.sync_dim)


@pytest.fixture
def pipeline(fixtures):
    log: list = []
    model = tiny_foley_model(fixtures, steps=2)
    pipe = FoleyPipeline(model, StubEncoders(model.network.config, log), window_s=1.0, overlap_s=0.25)
    decode, sample = model.decode, model.sample_normalized

    def logged_decode(*args, **kwargs):
        log.append(("decode", None))
        return decode(*args, **kwargs)

    def logged_sample(*args, **kwargs):
        log.append(("sample", None))
        return sample(*args, **kwargs)

    model.decode, model.sample_normalized = logged_decode, logged_sample
    return pipe, log


class Recorder:
    """A progress callback with a `stage` method, logging into the pipeline's log."""

    def __init__(self, log: list):
        self.log, self.stages = log, []

    def __call__(self, done: int, total: int) -> None:
        self.log.append(("progress", (done, total)))

    def stage(self, text: str) -> None:
        self.stages.append(text)


def check_progress(log: list, first_work: str) -> tuple[int, list[str]]:
    events = [kind for kind, _ in log]
    calls = [value for kind, value in log if kind == "progress"]
    assert events[0] == "progress" and calls[0][0] == 0, events[:3]  # before any work ...
    assert events.index("progress") < events.index(first_work)  # ... before the first window's features
    totals = {total for _, total in calls}
    assert len(totals) == 1
    total = totals.pop()
    dones = [done for done, _ in calls]
    assert dones == sorted(dones) and dones[-1] == total
    assert dones.count(total) == 1 and events[-1] == "progress"  # total only once, at the very end ...
    last_decode = len(events) - 1 - events[::-1].index("decode")
    assert last_decode < len(events) - 1  # ... after the last window's decoding
    assert all(done < total for done in dones[:-1])
    return total, events


def test_progress_covers_the_whole_video_run(pipeline, tmp_path):
    pipe, log = pipeline
    video = make_video(tmp_path / "v.mp4", 25.0, 2.3)
    recorder = Recorder(log)
    out = pipe.generate_video(video, "a ball", seed=3, progress=recorder)
    assert out.windows == len(plan_windows(2.3, 1.0, 0.25, pipe.latent_rate)) >= 3
    total, events = check_progress(log, "clip")
    assert total == out.windows * foley_module.PROGRESS_UNITS
    assert events.count("decode") == out.windows and events.count("clip") == out.windows
    for k in range(1, out.windows + 1):
        assert {f"window {k}/{out.windows}: {s}" for s in ("features", "sampling", "decoding")} <= set(recorder.stages)
    # every stage of every window moves the count
    calls = [value[0] for kind, value in log if kind == "progress"]
    assert len(set(calls)) >= 3 * out.windows
    assert len(out.audio) == round(out.duration * out.sample_rate)


def test_progress_covers_the_whole_text_run(pipeline):
    pipe, log = pipeline
    calls: list = []
    out = pipe.generate_text("rain", duration=2.0, progress=Recorder(log))
    check_progress(log, "sample")
    assert len(out.audio) == round(2.0 * out.sample_rate)
    # a plain function still works as the callback (done, total)
    pipe.generate_text("rain", duration=0.7, progress=lambda done, total: calls.append((done, total)))
    assert calls[0] == (0, calls[0][1]) and calls[-1] == (calls[0][1], calls[0][1])


def test_api_guidance_errors_are_one_line_before_any_work(fixtures, monkeypatch, tmp_path):
    def planned(*args, **kwargs):
        raise AssertionError("windows planned before the checks")

    monkeypatch.setattr(foley_module, "plan_windows", planned)
    model = tiny_foley_model(fixtures, steps=1)
    pipe = FoleyPipeline(model, encoders=None)  # any encoding would fail on None
    image, video = tmp_path / "none.png", tmp_path / "none.mp4"
    calls = {
        "video": lambda **o: pipe.generate_video(video, "rain", **o),
        "text": lambda **o: pipe.generate_text("rain", **o),
        "image": lambda **o: pipe.generate_image(image, "rain", **o),
    }
    for name, call in calls.items():
        for cfg in (1.0, 0.5):
            with pytest.raises(ConfigError) as err:
                call(negative_prompt="music", sampling=SAMPLING.override(steps=1, cfg_strength=cfg))
            text = str(err.value)
            assert "\n" not in text and "negative_prompt needs guidance: cfg_strength > 1" in text, (name, text)
            assert "--" not in text  # the Python arguments are named, not the CLI's options
        with pytest.raises(ConfigError) as err:
            call(sampling=SAMPLING.override(steps=1, cfg_strength=0.5))
        assert "\n" not in str(err.value) and "cfg_strength 0.5 < 1: MMAudio runs unguided" in str(err.value)
        model.sampling = SAMPLING.override(steps=1, cfg_strength=0.9)  # the model's own strength is checked too
        with pytest.raises(ConfigError, match="cfg_strength 0.9 < 1"):
            call()
        model.sampling = SAMPLING.override(steps=1)


def test_cli_and_api_share_one_default_seed():
    import argparse

    from avflow.commands import foley as foley_command

    parser = argparse.ArgumentParser()
    foley_command.add_model_arguments(parser, default_duration=None)
    cli = parser.parse_args([]).seed
    for method in (FoleyPipeline.generate_video, FoleyPipeline.generate_text, FoleyPipeline.generate_image,
                   FoleyModel.generate):  # fmt: skip
        assert inspect.signature(method).parameters["seed"].default == cli, method.__qualname__
    assert cli == foley_windows.DEFAULT_SEED == 42  # the documented commands keep their outputs
