"""On a blank video the sync and side measures are undefined with that reason, and the detection counts are still
given: the sound's onsets as on any video, and 0 visual events (a count, not a missing one). The demo, the UI and
`avflow generate --metrics` all print `clip_av_metrics`; it left both counts out."""

from __future__ import annotations

import numpy as np

from avflow.eval.clip_metrics import clip_av_metrics
from avflow.eval.onsets import OnsetConfig, audio_onsets


def test_a_blank_video_keeps_its_detection_counts():
    rate, fps = 16000, 16
    audio = np.zeros((2, 2 * rate), np.float32)
    for t in (0.3, 1.1):  # two clicks
        k = int(t * rate)
        audio[:, k : k + 400] = np.sin(np.arange(400) * 0.3) * np.exp(-np.arange(400) / 80.0)
    frames = np.full((32, 64, 64, 3), 30, np.uint8)  # one flat colour throughout
    got = clip_av_metrics(audio, rate, frames, fps)
    assert "blank video" in got["sync_offset_ms"].reason
    assert got["n_visual_events"].defined and got["n_visual_events"].value == 0
    assert got["n_onsets"].value == len(audio_onsets(audio, rate, OnsetConfig())) >= 1
