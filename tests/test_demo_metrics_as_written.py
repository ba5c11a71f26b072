"""`avflow demo` (and `GeneratedClip.metrics(written)`) measure the file that was written — its H.264 frames and AAC
sound decoded, as `avflow eval` reads it — not the frames before encoding, so the two commands agree."""

from __future__ import annotations

import numpy as np
import torch
from test_eval_codec_events import FPS, _clip
from test_generate import model_dir, shipped  # noqa: F401  (fixtures)

from avflow.cli import main
from avflow.eval.measure import Measure
from avflow.eval.report import clip_measures, load_eval_clip
from avflow.pipelines.clip import GeneratedClip

SR = 16000


def _eval_of(path) -> dict:
    """`avflow eval`'s measures of one written file, and the number of visual events it saw."""
    got = clip_measures(load_eval_clip(path))
    events = got.details.events
    return got.measures | ({"n_visual_events": Measure.of(float(len(events)))} if events is not None else {})


def _same(a, b) -> bool:
    return a.defined == b.defined and (a.value == b.value if a.defined else a.reason == b.reason)


def test_generated_clip_metrics_of_the_written_file_are_avflow_evals(tmp_path):
    movers = [((220, 40, 40), 7, 4, 10, 5, 0), ((50, 90, 230), 7, 4, 30, 7, 0)]
    frames = _clip((33, 50, 40), movers, ((245, 140, 30), 8, 48, 30))
    audio = np.zeros((2, int(SR * len(frames) / FPS)), np.float32)
    audio[:, SR : SR + 400] = np.exp(-np.arange(400) / 60) * np.sin(np.arange(400) * 0.7)  # at the appearance (1 s)
    clip = GeneratedClip(frames=torch.from_numpy(frames), audio=torch.from_numpy(audio), sample_rate=SR, fps=FPS,
                         prompt="squares")  # fmt: skip
    path = clip.save(tmp_path / "clip.mp4")
    written, evaluated = clip.metrics(path), _eval_of(path)
    shared = set(written) & set(evaluated)
    assert {"sync_offset_ms", "phys_residual_px", "n_visual_events"} <= shared
    assert all(_same(written[k], evaluated[k]) for k in shared), {k: (written[k], evaluated[k]) for k in shared}
    before = clip.metrics()  # the frames before encoding: another measurement (4:2:0 chroma, quantisation)
    assert before["phys_residual_px"].value != written["phys_residual_px"].value


def test_demo_prints_the_measures_of_its_file(shipped, tmp_path, capsys):  # noqa: F811
    assert main(["demo", "--out-dir", str(tmp_path), "--steps", "1"]) == 0
    out = capsys.readouterr().out
    head, _, rest = out.partition("metrics:")
    assert f"of {tmp_path / 'demo.mp4'} as written" in rest.splitlines()[0]
    printed = {line.split()[0]: line.split()[1] for line in rest.splitlines()[1:-1]}
    evaluated = _eval_of(tmp_path / "demo.mp4")
    for name, value in printed.items():
        m = evaluated[name]
        assert value == (f"{m.value:.3f}" if m.defined else "-"), (name, value, m)
