"""`avflow generate "prompt"`: a clip (video + stereo audio) from the shipped default model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from avflow.precision import PRECISIONS, precision_help

HELP = "generate a video with stereo sound from a text prompt with the shipped default model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="what happens in the scene, e.g. 'a red rubber ball bounces on the left'")
    parser.add_argument("-o", "--output", default="outputs/generated.mp4", help="output mp4 (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--duration", type=float, default=None, help="seconds (default: the model's, 2 s)")
    parser.add_argument("--steps", type=int, default=None, help="Euler steps (default: the model's)")
    parser.add_argument("--cfg", type=float, default=None, help="cfg_strength (default: the model's; 1 = off)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help=precision_help())
    parser.add_argument("--task", choices=["t2av", "a2v", "v2a"], default="t2av",
                        help="t2av: text to audio+video; a2v: video for --audio; v2a: audio for --video")  # fmt: skip
    parser.add_argument("--audio", default=None, help="input audio file for --task a2v (resampled to 16 kHz mono)")
    parser.add_argument("--video", default=None, help="input video file for --task v2a (resampled to 16 fps, 64x64)")
    parser.add_argument("--model", default=None, help="folder with exported weights (default: the shipped model)")
    parser.add_argument("--spectrogram", default=None, help="also write the log-mel spectrogram PNG here")
    parser.add_argument("--metrics", action="store_true", help="print sync / spatial / physics metrics")


def check_inputs(args: argparse.Namespace):
    """Clear one-line errors before any model is loaded; returns the sampling settings."""
    from avflow.data.media import probe
    from avflow.errors import AvflowError
    from avflow.pipelines.default_model import read_default_config

    if not args.prompt.strip():
        raise AvflowError("the prompt is empty: describe the scene, e.g. 'a red ball bounces on the left'")
    if args.duration is not None and not args.duration > 0:
        raise AvflowError(f"--duration must be > 0 seconds, got {args.duration}")
    sampling = read_default_config(args.model).sampling.override(steps=args.steps, cfg_strength=args.cfg)
    if args.task == "a2v":
        if args.audio is None:
            raise AvflowError("--task a2v needs --audio FILE")
        if not probe(args.audio).has_audio:
            raise AvflowError(f"{args.audio}: no audio stream")
    if args.task == "v2a":
        if args.video is None:
            raise AvflowError("--task v2a needs --video FILE")
        if not probe(args.video).has_video:
            raise AvflowError(f"{args.video}: no video stream")
    return sampling


def progress_bar(done: int, total: int) -> None:
    print(f"\rsampling {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from avflow.pipelines.default_model import load_default_model
    from avflow.precision import autocast

    sampling = check_inputs(args)
    pipe = load_default_model(args.model)
    options = dict(seed=args.seed, duration=args.duration, sampling=sampling, task=args.task, progress=progress_bar)
    with autocast(args.precision, "cpu"):  # the default model runs on the CPU
        clip = pipe.generate(args.prompt, audio_path=args.audio, video_path=args.video, **options)
    out = clip.save(Path(args.output))
    print(f"wrote {out} ({clip.frames.shape[0]} frames at {clip.fps:g} fps, stereo {clip.sample_rate} Hz, "
          f"{clip.duration:.2f} s)")  # fmt: skip
    if args.spectrogram:
        print(f"wrote {clip.save_spectrogram(args.spectrogram)}")
    if args.metrics:
        for name, value in clip.metrics().items():
            print(f"  {name:<18} {value:.3f}")
    return 0
