"""The foley progress bar moves inside the features and decoding stages, not only at their start: the encoders report
after every batch (CLIP frames, Synchformer segments), the vocoder after every upsampling level, and the pipeline maps
them onto the stage's share of the run, never going back. With or without a callback the numbers are the same."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import fixtures_root, sweep_video_frames, tiny_foley_raw_files, write_tiny_model_config

from avflow.codecs.bigvgan import BigVGAN
from avflow.data.media import write_video
from avflow.pipelines.foley import FoleyPipeline

SECONDS = 2.6  # two windows of about 1.55 s: 12 CLIP frames each (2 batches of 8), 6 vocoder levels


@pytest.fixture(scope="module")
def pipe(tmp_path_factory) -> FoleyPipeline:
    folder = tmp_path_factory.mktemp("tiny_foley_progress")
    files, spec = tiny_foley_raw_files(folder, fixtures_root())
    model = write_tiny_model_config(folder, files, spec)
    return FoleyPipeline.load(str(model), window_s=2.0, overlap_s=0.5)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("video") / "v.mp4", sweep_video_frames(25.0, SECONDS), 25.0)


class Recorder:
    """A progress callback with `stage(text)`: every call as (stage text, done, total)."""

    def __init__(self):
        self.text, self.calls = "", []

    def __call__(self, done: int, total: int) -> None:
        self.calls.append((self.text, done, total))

    def stage(self, text: str) -> None:
        self.text = text


def test_encoder_batches_report(pipe):
    enc = pipe.encoders
    clip_frames = torch.randint(0, 256, (1, 20, 3, 384, 384), dtype=torch.uint8)
    sync_frames = torch.randint(0, 256, (1, 16 + 8 * 5, 3, 224, 224), dtype=torch.uint8)  # 6 segments
    clip_calls, sync_calls = [], []
    clip_f = enc.encode_clip(clip_frames, progress=lambda d, t: clip_calls.append((d, t)))
    sync_f = enc.encode_sync(sync_frames, progress=lambda d, t: sync_calls.append((d, t)))
    assert clip_calls == [(8, 20), (16, 20), (20, 20)]
    assert sync_calls == [(4, 6), (6, 6)]
    assert torch.equal(clip_f, enc.encode_clip(clip_frames)) and torch.equal(sync_f, enc.encode_sync(sync_frames))


def test_encode_video_reports(pipe, video):
    calls = []
    feats = pipe.encoders.encode_video(video, progress=lambda d, t: calls.append((d, t)))
    dones = [d for d, _ in calls]
    assert len(calls) > 2 and dones == sorted(dones) and calls[-1][0] == calls[-1][1]
    plain = pipe.encoders.encode_video(video)
    assert torch.equal(feats.clip_f, plain.clip_f) and torch.equal(feats.sync_f, plain.sync_f)


def test_vocoder_levels_report(pipe):
    vocoder: BigVGAN = pipe.model.vocoder
    mel = torch.randn(1, vocoder.config.num_mels, 12, generator=torch.Generator().manual_seed(0))
    calls = []
    with torch.no_grad():
        wav = vocoder(mel, progress=lambda d, t: calls.append((d, t)))
        plain = vocoder(mel)
    levels = len(vocoder.config.upsample_rates)
    assert calls == [(k, levels) for k in range(1, levels + 1)]
    assert torch.equal(wav, plain)


def test_the_bar_moves_within_features_and_decoding(pipe, video):
    recorder = Recorder()
    out = pipe.generate_video(video, seed=5, progress=recorder)
    assert out.windows == 2
    dones = [d for _, d, _ in recorder.calls]
    total = recorder.calls[0][2]
    assert dones == sorted(dones) and dones[-1] == total and dones.count(total) == 1
    for k in range(1, out.windows + 1):
        for stage in ("features", "decoding"):
            inside = [d for text, d, _ in recorder.calls if text == f"window {k}/{out.windows}: {stage}"]
            # the stage's start, then its batches / levels: the bar (and its ETA) moves while the stage runs (in the
            # first window by fixed shares; later ones share their units as the stages took time, maybe few units)
            assert len(inside) >= 5 and (k > 1 or len(set(inside)) >= 5), (k, stage, inside)
    # the audio is the same with and without a callback
    plain = pipe.generate_video(video, seed=5)
    assert np.array_equal(out.audio, plain.audio)
