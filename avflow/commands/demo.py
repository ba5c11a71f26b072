"""`avflow demo`: generate from the default prompt with the shipped model; write outputs/demo.mp4 + spectrogram.

The shipped model's text encoder needs the [text] extra: pip install 'avflow[text]'.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from avflow.commands.options import OUTPUT_DIR, StepBar, add_seed, check_output, check_prompt

if TYPE_CHECKING:
    from avflow.eval.measure import Measure

HELP = ("generate a demo clip (outputs/demo.mp4 with binaural sound, a spectrogram PNG) and print its metrics (needs "
        "the [text] extra)")

METRIC_NOTES = {
    "sync_offset_ms": "audio onsets vs flashes, appearances and contacts seen in the frames (ms, + = audio late; "
    "target |x| < 62)",
    "side_agreement": "matched events whose sound is on their side (target 1)",
    "follows_object": "ILD at each sound's onset vs its object's side (correlation; target > 0.5)",
    "phys_residual_px": "ballistic-fit residual of the tracked objects (px)",
    "n_onsets": "audio onsets detected",
    "n_visual_events": "flashes, appearances, cuts and contacts seen in the frames",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt", default=None, help="default: the model's demo prompt")
    parser.add_argument("--out-dir", type=Path, default=OUTPUT_DIR,
                        help="where demo.mp4 and demo_spectrogram.png go (replaced on each run)")  # fmt: skip
    add_seed(parser)
    parser.add_argument("--steps", type=int, default=None, help="solver steps (default: the model's own)")
    parser.add_argument("--cfg", type=float, default=None, help="cfg_strength (default: the model's; 1 = off)")


def run(args: argparse.Namespace) -> int:
    from avflow.encoders.text import check_text_extra
    from avflow.pipelines.default_model import load_default_model, read_default_config
    from avflow.pipelines.generate import check_prompt_tokens, prompt_tokens

    start = time.perf_counter()
    # the settings and outputs are checked (one-line errors) before any weights are loaded
    given = check_prompt(args.prompt, "--prompt", required=False, left_out="for the model's demo prompt")
    video_path = check_output(args.out_dir / "demo.mp4", (".mp4",), overwrite=True, what="--out-dir")
    png_path = check_output(args.out_dir / "demo_spectrogram.png", (".png",), overwrite=True, what="--out-dir")
    config = read_default_config()
    check_text_extra(config.text_encoder)  # pip install 'avflow[text]', before any weights
    sampling = config.sampling.override(steps=args.steps, cfg_strength=args.cfg)
    prompt = given or config.default_prompt
    check_prompt_tokens(prompt_tokens(prompt, config.text_encoder), config.joint.text_len)  # the tokenizer only
    pipe = load_default_model()
    print(f"prompt: {prompt}")
    bar = StepBar("demo")
    try:
        clip = pipe.generate(prompt, seed=args.seed, sampling=sampling, progress=bar)
    finally:
        bar.close()
    video = clip.save(video_path)
    spectrogram = clip.save_spectrogram(png_path)
    print(f"wrote {video} ({clip.duration:.2f} s, {clip.frames.shape[2]}x{clip.frames.shape[1]} at {clip.fps:g} fps, "
          f"binaural {clip.sample_rate} Hz) and {spectrogram}")  # fmt: skip
    # each defined for this clip, or `undefined:` and why; measured on the file, as `avflow eval` reads it
    print(f"metrics: of {video} as written (its H.264 frames and AAC sound decoded, as `avflow eval {video}` reads "
          "them)")  # fmt: skip
    for name, m in clip.metrics(video).items():
        print(metric_line(name, m))
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


def metric_line(name: str, m: Measure) -> str:
    """One metric: its value and what it is, or, when it has none (a blank video, silent audio), the reason (`avflow
    demo` and `avflow generate --metrics`)."""
    if not m.defined:
        return f"  {name:<18} {'-':>8}  undefined: {m.reason}"
    sure = f" [confidence {m.confidence:.2f}]" if m.confidence < 1 else ""
    return f"  {name:<18} {m.value:8.3f}  {METRIC_NOTES.get(name, '')}{sure}".rstrip()
