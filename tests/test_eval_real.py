"""The sync offset and sides on clips with real recordings (scripts/make_real_sound_set.py), built here: slow, and it
needs Debian's sound-theme-freedesktop and espeak-ng (`make real-sound-deps`). The full-size check with issue 20's
targets is benchmarks/sync_accuracy.py."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from avflow.eval.clip import measure_clip

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_real_sound_set.py"


@pytest.mark.slow
def test_real_recordings_sync_and_sides(tmp_path):
    if not Path("/usr/share/sounds/freedesktop/stereo").is_dir() or shutil.which("espeak-ng") is None:
        pytest.fail("needs sound-theme-freedesktop and espeak-ng: run `make real-sound-deps`")
    spec = importlib.util.spec_from_file_location("make_real_sound_set", SCRIPT)
    builder = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = builder  # dataclasses look their module up
    spec.loader.exec_module(builder)
    sr = 48000
    sounds = builder.load_sounds(sr, tmp_path)
    errors, confident, sides = [], [], []
    for seed in range(300, 316):  # seeds apart from the development (0, 2) and benchmark (1) sets
        frames, fps, audio, truth = builder.make_clip(seed, sounds, sr)
        got = measure_clip(audio, sr, frames, fps)
        m = got.sync_offset_ms
        errors.append(abs(m.value - truth["offset_ms"]) if m.defined else np.inf)
        confident.append(m.confidence >= 0.5)
        for e in truth["events"]:
            if "side" in e:
                near = [s for s in got.sides if abs(s.visual_time - e["time"]) < 0.5 / fps]
                sides.append(bool(near) and near[0].cue.side == e["side"])
    errors, confident = np.array(errors), np.array(confident)
    assert confident.mean() >= 0.8, confident
    assert np.mean(errors[confident] <= 20) >= 0.9, errors
    assert np.mean(sides) >= 0.9, sides
