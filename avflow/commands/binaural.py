"""`avflow binaural VIDEO -o OUT.mp4`: a binaural (stereo) track for a video, muxed into a copy of it."""

from __future__ import annotations

import argparse
from pathlib import Path

from avflow.errors import MediaError

HELP = "binaural audio for a video (trained world model, or spatialise the video's own audio track)"
SAMPLE_RATE = 16000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", help="input video")
    parser.add_argument("-o", "--output", required=True, help="output mp4 (the video with a stereo audio track)")
    parser.add_argument("--mode", choices=["auto", "model", "spatialise"], default="auto",
                        help="model: generate with the shipped binaural model; spatialise: render the video's own "
                             "audio (mixed to mono) from the detected source position; auto: model if its weights "
                             "are installed")  # fmt: skip
    parser.add_argument("--steps", type=int, default=16, help="sampling steps (model)")
    parser.add_argument("--guidance", type=float, default=2.0, help="classifier-free guidance scale (model)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wav", help="also write the stereo track as a wav file")


def video_frames(path: str | Path, width: int = 64):
    """(frames (T, h, w, 3) uint8 scaled to `width` columns, fps, duration s) of a video."""
    from avflow.data.media import probe, read_video

    info = probe(path)
    if not info.has_video:
        raise MediaError(f"{path}: has no video stream")
    height = max(2, round(info.height * width / info.width / 2) * 2)
    clip = read_video(path, size=(height, width))
    return clip.frames.numpy(), clip.fps, info.duration


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from avflow.data.media import mux_audio, probe, read_audio
    from avflow.pipelines.binaural import MODEL_FILE

    frames, fps, duration = video_frames(args.video)
    n = int(round(duration * SAMPLE_RATE))
    mode = args.mode
    if mode == "auto":
        mode = "model" if MODEL_FILE.is_file() else "spatialise"
    if mode == "model":
        from avflow.pipelines.binaural import BinauralPipeline

        pipe = BinauralPipeline.from_assets(steps=args.steps, guidance=args.guidance)
        audio = pipe.generate(frames, fps, n, seed=args.seed)
    else:
        from avflow.pipelines.spatialise import spatialise

        if not probe(args.video).has_audio:
            raise MediaError(f"{args.video}: has no audio track to spatialise (use --mode model)")
        track, _ = read_audio(args.video, sample_rate=SAMPLE_RATE, channels=1)
        mono = np.zeros(n, dtype=np.float32)
        mono[: min(n, track.shape[-1])] = track[0, :n].numpy()
        audio = spatialise(mono, SAMPLE_RATE, frames, fps)
    peak = float(np.abs(audio).max())
    if peak > 0.99:
        audio = audio * (0.99 / peak)
    if args.wav:
        from avflow.data.media import write_audio

        write_audio(args.wav, audio, SAMPLE_RATE)
    mux_audio(args.video, audio, SAMPLE_RATE, args.output)
    print(f"wrote {args.output} ({mode}, {duration:.2f} s stereo)")
    return 0
