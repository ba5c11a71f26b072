"""`avflow t2a "prompt"`: text-to-audio with an MMAudio model (empty visual conditions)."""

from __future__ import annotations

import argparse
from pathlib import Path

from avflow.commands.foley import add_model_arguments, load_pipeline

HELP = "generate audio from a text prompt (MMAudio weights)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", help="what the audio should sound like")
    add_model_arguments(parser, default_duration=8.0)
    parser.add_argument("-o", "--output", type=Path, default=Path("output.wav"), help="OUT.wav or OUT.flac")


def run(args: argparse.Namespace) -> int:
    from avflow.data.media import write_audio

    pipeline = load_pipeline(args)
    prompt = args.text if args.prompt is None else f"{args.text} {args.prompt}"
    result = pipeline.generate_text(prompt, args.negative_prompt, duration=args.duration, seed=args.seed)
    write_audio(args.output, result.channels_first(), result.sample_rate)
    print(f"wrote {args.output} ({result.duration:.2f} s at {result.sample_rate} Hz)")
    return 0
