"""`avflow i2a IMAGE`: image-to-audio (MMAudio's image mode: the image as every CLIP frame, no sync features)."""

from __future__ import annotations

import argparse
from pathlib import Path

from avflow.commands.foley import add_model_arguments, check_model_arguments, load_pipeline
from avflow.commands.options import AUDIO_SUFFIXES, OUTPUT_DIR, RunBar, check_output, check_prompt
from avflow.pipelines.inputs import check_sound_duration

HELP = "generate audio for a still image (MMAudio's experimental image mode)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", type=Path, help="an image file (png, jpg, ...)")
    add_model_arguments(parser, default_duration=8.0)
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help=f"OUT.wav (float32) or OUT.flac (24-bit) (default: {OUTPUT_DIR}/IMAGE_NAME"
                             ".wav)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from avflow.data.image import image_size

    image_size(args.image)  # a readable image, before any weights (its header only: it is decoded once, in generation)
    prompt = check_prompt(args.prompt, "--prompt", required=False)
    negative = check_prompt(args.negative_prompt, "--negative-prompt", required=False)
    out = check_output(args.output or OUTPUT_DIR / f"{args.image.stem}.wav", AUDIO_SUFFIXES,
                       overwrite=args.overwrite, inputs=[args.image])  # fmt: skip
    check_sound_duration(args.duration)
    sampling, device = check_model_arguments(args)
    from avflow.data.media import write_audio

    pipeline = load_pipeline(args, sampling, device)
    bar = RunBar("i2a")
    try:
        result = pipeline.generate_image(args.image, prompt, negative, duration=args.duration, seed=args.seed,
                                         progress=bar)  # fmt: skip
        bar.writing()
        write_audio(out, result.channels_first(), result.sample_rate)
        bar.finish()
    finally:
        bar.close()
    print(f"wrote {out} ({result.duration:.2f} s at {result.sample_rate} Hz)")
    return 0
