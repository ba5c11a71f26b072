"""`avflow binaural VIDEO -o OUT.mp4`: a binaural (stereo) track for a video, muxed into a copy of it."""

from __future__ import annotations

import argparse

HELP = "binaural audio for a video (trained world model, or spatialise the video's own audio track)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", help="input video")
    parser.add_argument("-o", "--output", required=True, help="output mp4 (the video with a stereo audio track)")
    parser.add_argument("--mode", choices=["auto", "model", "spatialise"], default="auto",
                        help="model: generate with the shipped binaural model; spatialise: render the video's own "
                             "audio (mixed to mono) from the detected source position; auto: model if its weights "
                             "are installed")  # fmt: skip
    parser.add_argument("--steps", type=int, default=None, help="Euler steps (model; default: the model's)")
    parser.add_argument("--cfg", type=float, default=None, help="cfg_strength (model; default: the model's; 1 = off)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wav", help="also write the stereo track as a wav file")


def run(args: argparse.Namespace) -> int:
    from avflow.data.media import mux_audio, write_audio
    from avflow.models.binaural import SAMPLING
    from avflow.pipelines.binaural import binaural_track

    sampling = SAMPLING.override(steps=args.steps, cfg_strength=args.cfg)
    track = binaural_track(args.video, mode=args.mode, seed=args.seed, sampling=sampling)
    if args.wav:
        write_audio(args.wav, track.audio, track.sample_rate)
    mux_audio(args.video, track.audio, track.sample_rate, args.output)
    print(f"wrote {args.output} ({track.mode}, {track.duration:.2f} s stereo)")
    return 0
