"""The UI's binaural tab with a cue model (which places the shipped joint model's v2a sound) uses the server's joint
model, loaded once and taken in turn, instead of loading the joint model afresh for every request."""

from __future__ import annotations

import numpy as np
from test_interaural_cues import tiny_cue_model
from test_ui_binaural_cancel import installed  # noqa: F401 - the fixture
from test_ui_services import _clip

from avflow.pipelines import binaural as binaural_pipeline
from avflow.pipelines.binaural import BinauralPipeline
from avflow.ui import services
from avflow.ui.services import UISettings, generate_binaural


def test_a_cue_model_places_the_server_s_joint_model_sound(tmp_path, monkeypatch, installed):  # noqa: F811
    installed(BinauralPipeline(tiny_cue_model()))
    server_joint = type("ServerJoint", (), {})()  # a stand-in the turn locks can key on
    monkeypatch.setattr(services, "joint_model", lambda settings: server_joint)
    used = []

    def v2a(video, n, seed, joint=None, progress=None):
        used.append(joint)
        return np.random.default_rng(0).standard_normal(n).astype(np.float32) * 0.1

    monkeypatch.setattr(binaural_pipeline, "v2a_mono", v2a)
    settings = UISettings(steps=2, output_dir=tmp_path / "ui")
    for _ in range(2):
        result = generate_binaural(_clip(tmp_path / "in.mp4", audio="none"), settings, mode="model", steps=2)
        assert result.video.is_file()
    assert used == [server_joint, server_joint]
