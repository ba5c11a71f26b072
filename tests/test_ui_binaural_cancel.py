"""The UI's binaural tab in model mode stops at the next sampling step once its request is no longer wanted (it
reported only before and after the whole track, so a closed tab's request held the queue to its end), and its
progress is one count over both stages of a cue model (its v2a sound, then the placing)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from test_binaural import tiny_codecs, tiny_model
from test_interaural_cues import tiny_cue_model
from test_ui_services import _clip

from avflow.models import binaural as binaural_model
from avflow.pipelines import binaural as binaural_pipeline
from avflow.pipelines.binaural import BinauralPipeline, binaural_track
from avflow.ui import services
from avflow.ui.services import UISettings, generate_binaural


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """A binaural model "installed" on this server: the tab's model mode runs the given pipeline."""
    marker = tmp_path / "model.safetensors"
    marker.write_bytes(b"")
    monkeypatch.setattr(binaural_model, "MODEL_FILE", marker)
    monkeypatch.setattr(binaural_pipeline, "MODEL_FILE", marker)
    monkeypatch.setattr(services, "MODEL_FILE", marker, raising=False)

    def install(pipeline):
        monkeypatch.setattr(services, "binaural_pipeline", lambda: pipeline)

    return install


def test_model_mode_is_cancelled_at_its_next_step(tmp_path, installed):
    installed(BinauralPipeline(tiny_model(), tiny_codecs().audio))
    settings = UISettings(steps=4, output_dir=tmp_path / "ui")
    gone, heard = threading.Event(), []

    def progress(done: int, total: int) -> None:
        heard.append((done, total))
        if done:  # the page went away during the first sampling step
            gone.set()

    with pytest.raises(services.Cancelled, match="cancelled at step 2 of 4"):
        generate_binaural(_clip(tmp_path / "in.mp4"), settings, mode="model", steps=4,
                          progress=services.cancellable(progress, gone.is_set))  # fmt: skip
    assert heard == [(0, 1), (1, 4)] and not list(settings.output_dir.glob("*"))

    heard.clear()  # not cancelled: every step reported, then the whole
    result = generate_binaural(_clip(tmp_path / "in.mp4"), settings, mode="model", steps=4, progress=progress)
    assert result.video.is_file() and heard == [(0, 1), (1, 4), (2, 4), (3, 4), (4, 4), (1, 1)]


def test_a_cue_model_counts_its_v2a_sound_and_its_placing_as_one(tmp_path, monkeypatch):
    def v2a(video, n, seed, joint=None, progress=None):  # the default model's v2a, two steps
        for step in (1, 2):
            progress(step, 2)
        return np.random.default_rng(0).standard_normal(n).astype(np.float32) * 0.1

    monkeypatch.setattr(binaural_pipeline, "v2a_mono", v2a)
    heard = []
    track = binaural_track(_clip(tmp_path / "in.mp4", audio="none"), mode="model", steps=2,
                           pipeline=BinauralPipeline(tiny_cue_model()), progress=lambda *a: heard.append(a))
    assert track.audio.shape[0] == 2 and heard == [(1, 4), (2, 4), (3, 4), (4, 4)]
