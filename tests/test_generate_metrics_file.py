"""`avflow generate --metrics` measures the file it wrote, as `avflow demo` and `avflow eval` do (it measured the frames
before H.264 encoding: on the demo's clip the offset read +194 ms there and -181 ms in the file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import moving_square, write_tiny_default_model

from avflow.cli import main
from avflow.pipelines.clip import GeneratedClip
from avflow.pipelines.generate import JointPipeline

SR, FPS = 16000, 16


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return write_tiny_default_model(tmp_path_factory.mktemp("model"))


def test_metrics_are_those_of_the_written_file(model_dir, tmp_path, monkeypatch, capsys):
    clicks = np.zeros((2, SR), np.float32)
    for start in (2000, 8000, 13000):
        clicks[0, start : start + 300] = 0.5 * np.sin(np.arange(300) * 0.7)
    frames = torch.from_numpy(moving_square(t=FPS, h=32, w=32))
    clip = GeneratedClip(frames=frames, audio=torch.from_numpy(clicks), sample_rate=SR, fps=FPS, prompt="a ball")
    monkeypatch.setattr(JointPipeline, "generate", lambda self, *a, **o: clip)
    out = tmp_path / "o.mp4"
    assert main(["generate", "a ball", "--model", str(model_dir), "--metrics", "-o", str(out)]) == 0
    said = capsys.readouterr().out
    assert f"metrics: of {out} as written" in said
    printed = {line.split()[0]: line.split()[1] for line in said.splitlines() if line.startswith("  ")}
    from avflow.commands.demo import metric_line

    of_file = {name: metric_line(name, m).split()[1] for name, m in clip.metrics(out).items()}
    assert printed == of_file


def test_a_file_the_measures_cannot_read_is_said_in_one_line(model_dir, tmp_path, monkeypatch, capsys):
    from avflow.errors import MediaError

    clip = GeneratedClip(frames=torch.from_numpy(moving_square(t=FPS, h=32, w=32)),
                         audio=torch.zeros(2, SR), sample_rate=SR, fps=FPS, prompt="a ball")  # fmt: skip
    monkeypatch.setattr(JointPipeline, "generate", lambda self, *a, **o: clip)

    def unreadable(self, written=None):
        raise MediaError(f"{written}: 3600 s long; avflow eval measures clips up to 900 s of it")

    monkeypatch.setattr(GeneratedClip, "metrics", unreadable)
    assert main(["generate", "a ball", "--model", str(model_dir), "--metrics", "-o", str(tmp_path / "o.mp4")]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("metrics:")]
    assert lines == [f"metrics: not measured: {tmp_path / 'o.mp4'}: 3600 s long; avflow eval measures clips up to "
                     "900 s of it"]  # fmt: skip
