"""Time per clip of the model-free metric suite (avflow.eval) on default world clips (64×64, 16 fps, 4 s).

Baseline measured in the same run: reading the clip's frames and audio as the metrics need them is not timed here;
instead the reference is the clip's own duration (real-time factor) and the cost of one plain STFT of its audio
(a floor any audio metric pays). Usage: `.venv/bin/python benchmarks/eval.py [--clips N]`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ArgumentParser, load_facts, positive_int, print_table, run_main, timed  # noqa: E402

from avflow.eval import distribution, physics, spatial, sync  # noqa: E402
from avflow.eval.clip import measure_clip  # noqa: E402
from avflow.eval.events import visual_events  # noqa: E402
from avflow.eval.onsets import audio_onsets  # noqa: E402
from avflow.eval.report import EvalClip, clip_metrics  # noqa: E402
from avflow.world.dataset import make_clip  # noqa: E402


def main() -> None:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=positive_int, default=4)
    args = parser.parse_args()
    load_before = os.getloadavg()
    clips = []
    for seed in range(args.clips):
        w = make_clip(seed)
        clips.append(EvalClip(f"c{seed}", w.audio, 16000, w.frames, 16.0, w.meta))
    duration = clips[0].audio.shape[1] / clips[0].sample_rate
    emb = distribution.StatsEmbedder()

    def per_clip(fn) -> float:
        return timed(lambda: [fn(c) for c in clips], repeat=2) / len(clips)

    stages = {
        "baseline: one STFT (n_fft 512)": lambda c: np.fft.rfft(
            np.lib.stride_tricks.sliding_window_view(c.audio[0], 512)[::128], axis=1
        ),
        "onsets (1 ms, legacy)": lambda c: sync.detect_onsets(c.audio, c.sample_rate),
        "onsets (bands + step)": lambda c: audio_onsets(c.audio, c.sample_rate),
        "tracking (colour)": lambda c: physics.track_objects(c.frames),
        "visual events (brightening + contacts)": lambda c: visual_events(c.frames, c.fps),
        "sync offset + sides (measure_clip)": lambda c: measure_clip(c.audio, c.sample_rate, c.frames, c.fps),
        "AV-Align": lambda c: sync.av_align(c.audio, c.sample_rate, c.frames, c.fps),
        "gravity fit": lambda c: physics.trajectory_residual(physics.track_objects(c.frames), c.fps, 320.0),
        "binaural vs ref": lambda c: (
            spatial.stft_distance(c.audio, c.audio),
            spatial.envelope_distance(c.audio, c.audio),
            spatial.ipd_error(c.audio, c.audio),
            spatial.itd_gcc_phat(c.audio, c.sample_rate),
        ),
        "FD embedding": lambda c: emb(c.audio, c.sample_rate, c.frames, c.fps),
        "full suite (clip_metrics + ref)": lambda c: clip_metrics(c, c),
    }
    rows = []
    base = None
    for name, fn in stages.items():
        sec = per_clip(fn)
        base = sec if base is None else base
        rows.append({"stage": name, "ms/clip": 1000 * sec, "x baseline": sec / base, "x real time": duration / sec})
    print_table(
        rows, title=f"avflow eval metric suite, {len(clips)} world clips of {duration:.1f} s; {load_facts(load_before)}"
    )


if __name__ == "__main__":
    run_main(main)
