"""`avflow binaural VIDEO`: a binaural (stereo) track for a video, muxed into a copy of it."""

from __future__ import annotations

import argparse
from pathlib import Path

from avflow.commands.options import (
    AUDIO_SUFFIXES,
    OUTPUT_DIR,
    VIDEO_SUFFIXES,
    RunOutputs,
    add_existing_audio,
    add_overwrite,
    check_distinct,
    check_output,
)
from avflow.errors import MediaError
from avflow.pipelines.inputs import MIN_DURATION_S

HELP = "binaural audio for a video (trained world model, or spatialise the video's own audio track)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", type=Path, help=f"input video, at least {MIN_DURATION_S:g} s long")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help=f"output mp4: the video with a stereo audio track (default: "
                             f"{OUTPUT_DIR}/VIDEO_NAME_binaural.mp4)")  # fmt: skip
    parser.add_argument("--mode", choices=["auto", "model", "spatialise"], default="auto",
                        help="model: generate with the shipped binaural model; spatialise: render the video's own "
                             "audio (mixed to mono) from the detected source position; auto: model if its weights "
                             "are installed")  # fmt: skip
    parser.add_argument("--steps", type=int, default=None, help="Euler steps (model; default: the model's own)")
    parser.add_argument("--cfg", type=float, default=None, help="cfg_strength (model; 1 = off; default: the model's "
                        "own)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    add_existing_audio(parser)
    parser.add_argument("--wav", type=Path, default=None,
                        help="also write the stereo track here (.wav or .flac; default: no audio file)")  # fmt: skip
    add_overwrite(parser)


def run(args: argparse.Namespace) -> int:
    from avflow.data.audio_tracks import describe
    from avflow.pipelines.inputs import check_video_input

    if not args.video.exists():  # the checks that need no media or torch come first
        raise MediaError(f"{args.video}: file not found")
    out = check_output(args.output or OUTPUT_DIR / f"{args.video.stem}_binaural.mp4", VIDEO_SUFFIXES,
                       overwrite=args.overwrite, inputs=[args.video])  # fmt: skip
    wav = None
    if args.wav is not None:
        wav = check_output(args.wav, AUDIO_SUFFIXES, overwrite=args.overwrite, inputs=[args.video], what="--wav")
    check_distinct(out, wav)
    from avflow.data.media import mux_audio, write_audio
    from avflow.models.binaural import MODEL_FILE, SAMPLING
    from avflow.pipelines.binaural import binaural_track

    sampling = SAMPLING.override(steps=args.steps, cfg_strength=args.cfg)
    info = check_video_input(args.video)
    mode = ("model" if MODEL_FILE.is_file() else "spatialise") if args.mode == "auto" else args.mode
    if mode == "spatialise" and not info.has_audio:
        raise MediaError(f"{args.video}: has no audio track to spatialise (use --mode model)")
    track = binaural_track(args.video, mode=mode, seed=args.seed, sampling=sampling)
    with RunOutputs(out, wav) as outputs:
        outputs.wrote(mux_audio(args.video, track.audio, track.sample_rate, out, existing_audio=args.audio))
        if wav is not None:
            outputs.wrote(write_audio(wav, track.audio, track.sample_rate))
    print(f"wrote {out} ({track.mode}, {track.duration:.2f} s stereo {track.sample_rate / 1000:g} kHz; "
          f"{describe(args.audio, info.audio_tracks)})" + (f" and {wav}" if wav else ""))  # fmt: skip
    return 0
