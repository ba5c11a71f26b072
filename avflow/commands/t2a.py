"""`avflow t2a "prompt"`: text-to-audio with an MMAudio model (empty visual conditions)."""

from __future__ import annotations

import argparse
from pathlib import Path

from avflow.commands.foley import add_model_arguments, check_model_arguments, load_pipeline
from avflow.commands.options import AUDIO_SUFFIXES, OUTPUT_DIR, RunBar, check_output, check_prompt
from avflow.pipelines.inputs import check_sound_duration

HELP = "generate audio from a text prompt (MMAudio weights)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="what the audio should sound like, e.g. 'a dog barking in the distance' (at "
                                       "most the 77 tokens MMAudio's CLIP reads: a longer one is an error, never "
                                       "cut)")  # fmt: skip
    add_model_arguments(parser, default_duration=8.0, prompt=False)
    parser.add_argument("-o", "--output", type=Path, default=OUTPUT_DIR / "t2a.wav",
                        help="OUT.wav (float32) or OUT.flac (24-bit)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    prompt = check_prompt(args.prompt, "the prompt", required=True)
    negative = check_prompt(args.negative_prompt, "--negative-prompt", required=False)
    out = check_output(args.output, AUDIO_SUFFIXES, overwrite=args.overwrite)
    check_sound_duration(args.duration)
    sampling, device = check_model_arguments(args)
    from avflow.data.media import write_audio

    pipeline = load_pipeline(args, sampling, device)
    bar = RunBar("t2a")
    try:
        result = pipeline.generate_text(prompt, negative, duration=args.duration, seed=args.seed, progress=bar)
        bar.writing()
        write_audio(out, result.channels_first(), result.sample_rate)
        bar.finish()
    finally:
        bar.close()
    print(f"wrote {out} ({result.duration:.2f} s at {result.sample_rate} Hz)")
    return 0
