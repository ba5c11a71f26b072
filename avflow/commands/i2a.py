"""`avflow i2a IMAGE`: image-to-audio (MMAudio's image mode: the image as every CLIP frame, no sync features)."""

from __future__ import annotations

import argparse
from pathlib import Path

from avflow.commands.foley import add_model_arguments, load_pipeline
from avflow.errors import MediaError

HELP = "generate audio for a still image (MMAudio's experimental image mode)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", type=Path, help="an image file (png, jpg, ...)")
    add_model_arguments(parser, default_duration=8.0)
    parser.add_argument("-o", "--output", type=Path, default=None, help="OUT.wav or OUT.flac (default: IMAGE.wav)")


def run(args: argparse.Namespace) -> int:
    from avflow.data.media import write_audio

    if not args.image.is_file():
        raise MediaError(f"{args.image}: file not found")
    pipeline = load_pipeline(args)
    result = pipeline.generate_image(
        args.image, args.prompt, args.negative_prompt, duration=args.duration, seed=args.seed
    )
    out = args.output or args.image.with_suffix(".wav")
    write_audio(out, result.channels_first(), result.sample_rate)
    print(f"wrote {out} ({result.duration:.2f} s at {result.sample_rate} Hz)")
    return 0
