"""`avflow demo`: generate from the default prompt with the shipped model; write outputs/demo.mp4 + spectrogram."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from avflow.commands.options import OUTPUT_DIR, StepBar

HELP = "generate a demo clip (outputs/demo.mp4 with binaural sound, a spectrogram PNG) and print its metrics"

METRIC_NOTES = {
    "sync_ms": "audio onsets minus contacts seen in the frames (median, ms; target |x| < 62)",
    "sync_matched": "fraction of contacts with an audio onset",
    "follows_object": "ILD vs the impacting object's side (correlation; target > 0.5)",
    "phys_residual_px": "ballistic-fit residual of the tracked objects (px)",
    "n_onsets": "audio onsets detected",
    "n_contacts": "contacts seen in the frames",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt", default=None, help="default: the model's demo prompt")
    parser.add_argument("--out-dir", type=Path, default=OUTPUT_DIR, help="where demo.mp4 and demo_spectrogram.png go")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--steps", type=int, default=None, help="Euler steps (default: the model's)")
    parser.add_argument("--cfg", type=float, default=None, help="cfg_strength (default: the model's; 1 = off)")


def run(args: argparse.Namespace) -> int:
    from avflow.pipelines.clip import measure_lines
    from avflow.pipelines.default_model import load_default_model, read_default_config

    start = time.perf_counter()
    # the settings are checked (one-line errors) before any weights are loaded
    sampling = read_default_config().sampling.override(steps=args.steps, cfg_strength=args.cfg)
    pipe = load_default_model()
    prompt = args.prompt or pipe.default_prompt
    print(f"prompt: {prompt}")
    bar = StepBar("demo")
    try:
        clip = pipe.generate(prompt, seed=args.seed, sampling=sampling, progress=bar)
    finally:
        bar.close()
    out = Path(args.out_dir)
    video = clip.save(out / "demo.mp4")
    spectrogram = clip.save_spectrogram(out / "demo_spectrogram.png")
    print(f"wrote {video} ({clip.duration:.2f} s, {clip.frames.shape[2]}x{clip.frames.shape[1]} at {clip.fps:g} fps, "
          f"binaural {clip.sample_rate} Hz) and {spectrogram}")  # fmt: skip
    print("metrics:")  # each defined for this clip, or `undefined:` and why
    print("\n".join(measure_lines(clip.metrics(), METRIC_NOTES)))
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0
