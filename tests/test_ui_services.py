"""The web UI's services (what each tab does) without Gradio: outputs, defaults from the models, one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import moving_square

from avflow.data.media import probe, read_audio, write_video
from avflow.errors import AvflowError, MediaError
from avflow.models.mmaudio_config import SAMPLING
from avflow.pipelines.default_model import read_default_config
from avflow.ui import services
from avflow.ui.services import UISettings, check_video_upload, generate_binaural, generate_foley, generate_joint


@pytest.fixture
def settings(tmp_path) -> UISettings:
    return UISettings(steps=1, output_dir=tmp_path / "ui")


def test_guidance_defaults_come_from_the_models():
    assert services.joint_cfg_strength() == read_default_config().sampling.cfg_strength
    assert services.foley_cfg_strength() == SAMPLING.cfg_strength


def test_joint_tab_writes_a_clip_and_its_spectrogram(settings):
    result = generate_joint("a red ball bounces", settings, seed=1, duration=0.5, cfg_strength=2.0)
    info = probe(result.video)
    assert info.has_video and info.audio_channels == 2 and result.spectrogram.is_file()
    assert "sync_offset_ms" in result.summary
    with pytest.raises(AvflowError, match="write a prompt"):
        generate_joint("  ", settings)
    with pytest.raises(AvflowError, match="duration must be between"):
        generate_joint("a ball", settings, duration=60.0)
    with pytest.raises(AvflowError, match="cfg_strength must be a finite number > 0"):
        generate_joint("a ball", settings, duration=0.5, cfg_strength=0.0)


def test_binaural_tab_spatialises_the_uploaded_audio(settings, tmp_path):
    frames = np.repeat(np.repeat(moving_square(t=16, h=16, w=32), 2, axis=1), 2, axis=2)
    mono = np.random.default_rng(0).standard_normal((1, 16000)).astype(np.float32) * 0.05
    clip = write_video(tmp_path / "in.mp4", frames, 16, audio=mono, sample_rate=16000)
    result = generate_binaural(clip, settings, mode="spatialise")
    audio, _ = read_audio(result.video)
    assert audio.shape[0] == 2 and "spatialise" in result.summary and result.extra_files[0].suffix == ".wav"
    silent = write_video(tmp_path / "silent.mp4", frames, 16)
    with pytest.raises(MediaError, match="no audio track") as err:
        generate_binaural(silent, settings, mode="spatialise")
    assert "\n" not in str(err.value)


def test_uploads_and_missing_weights_are_one_line_errors(settings, tmp_path, monkeypatch):
    with pytest.raises(MediaError, match="upload a video first"):
        check_video_upload(None)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(MediaError, match="not a video file"):
        check_video_upload(text)
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"not a video")
    with pytest.raises(MediaError, match="not a readable video file"):
        check_video_upload(fake)
    monkeypatch.setenv("AVFLOW_HOME", str(tmp_path / "empty_cache"))
    clip = write_video(tmp_path / "in.mp4", moving_square(t=16), 16)
    with pytest.raises(AvflowError, match=f"avflow download {services.FOLEY_MODEL}") as err:
        generate_foley(clip, "rain", settings)
    assert "\n" not in str(err.value)
