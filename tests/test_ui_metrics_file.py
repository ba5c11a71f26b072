"""The web UI's Generate tab measures the file it wrote, as `avflow generate --metrics`, `avflow demo` and `avflow eval`
do (it measured the frames before H.264 encoding, which can read another offset: docs/metrics.md "H.264 clips")."""

from __future__ import annotations

from test_generate_user_media import model_dir, shipped  # noqa: F401 (fixtures)

from avflow.errors import MediaError
from avflow.pipelines.clip import GeneratedClip
from avflow.ui.services import UISettings, generate_joint


def test_the_summary_measures_the_written_file(shipped, tmp_path, monkeypatch):  # noqa: F811
    real, measured = GeneratedClip.metrics, []

    def metrics(self, written=None):
        measured.append(written)
        return real(self, written)

    monkeypatch.setattr(GeneratedClip, "metrics", metrics)
    result = generate_joint("a red ball bounces", UISettings(steps=1, output_dir=tmp_path / "ui"), duration=1.0)
    assert measured == [result.video] and "sync_offset_ms" in result.summary


def test_a_file_the_measures_cannot_read_is_said(shipped, tmp_path, monkeypatch):  # noqa: F811
    def unreadable(self, written=None):
        raise MediaError(f"{written}: too long to measure")

    monkeypatch.setattr(GeneratedClip, "metrics", unreadable)
    result = generate_joint("a red ball bounces", UISettings(steps=1, output_dir=tmp_path / "ui"), duration=1.0)
    assert "metrics not measured:" in result.summary and "too long to measure" in result.summary
