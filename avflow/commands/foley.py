"""`avflow foley VIDEO`: generate a soundtrack for a video (or a folder / list of videos) and mux it in.

Single video: writes OUT.mp4 (the video's packets unchanged plus the new AAC track, as long as the video) and a
wav (or flac). Batch (VIDEO is a folder or a .txt list, one path a line): `-o` is an output folder; a bad file is
reported and skipped, a summary is printed, and the exit code is 1 if any file failed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from avflow.errors import AvflowError, MediaError
from avflow.precision import PRECISIONS, precision_help

HELP = "generate synchronized audio for a video (MMAudio weights) and mux it into an mp4"
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")


def add_model_arguments(parser: argparse.ArgumentParser, *, default_duration: float | None) -> None:
    """Options shared by foley, t2a and i2a."""
    parser.add_argument("--prompt", default=None, help="text prompt")
    parser.add_argument("--negative-prompt", default=None, help="text to steer away from")
    parser.add_argument(
        "--model", default="large_44k_v2", help="small_16k, small_44k, medium_44k, large_44k, large_44k_v2"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=default_duration,
        help="seconds" + ("" if default_duration else " (default: all)"),
    )
    parser.add_argument("--steps", type=int, default=None, help="Euler steps (default: the model's)")
    parser.add_argument("--cfg", type=float, default=None, help="cfg_strength (default: the model's; 1 = off)")
    parser.add_argument("--fast", action="store_true", help="the fast sampler preset (fewer steps; docs/foley.md)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help=precision_help())
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--window", type=float, default=8.0, help="generation window in seconds (long inputs)")
    parser.add_argument("--overlap", type=float, default=1.0, help="overlap between windows in seconds")
    parser.add_argument("--device", default="auto", help="cpu, cuda, ... (default: cuda if available)")


def load_pipeline(args: argparse.Namespace):
    """The pipeline for args.model from the weight cache; fails at once (one line) when weights are missing."""
    import torch

    from avflow.pipelines.foley import FoleyPipeline
    from avflow.pipelines.foley_variants import check_model

    sampling = check_model(args.model).sampling
    sampling = (sampling.preset("fast") if args.fast else sampling).override(steps=args.steps, cfg_strength=args.cfg)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    return FoleyPipeline.from_cache(
        args.model, device=device, sampling=sampling, window_s=args.window, overlap_s=args.overlap,
        precision=args.precision,
    )  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", type=Path, help="a video file, a folder of videos, or a .txt list of paths")
    add_model_arguments(parser, default_duration=None)
    parser.add_argument("-o", "--output", type=Path, default=None, help="OUT.mp4 (batch: an output folder)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--wav", type=Path, default=None, help="where to write the wav (default: next to OUT.mp4)")
    group.add_argument("--flac", type=Path, default=None, help="write flac instead, to this path")
    parser.add_argument("--binaural", action="store_true", help="spatialise the track from the video (stereo)")


def list_inputs(source: Path) -> list[Path]:
    """Videos in a folder (sorted), or the paths of a .txt list (relative to the list's folder)."""
    if source.is_dir():
        found = sorted(p for p in source.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
        if not found:
            raise MediaError(f"{source}: no videos ({', '.join(VIDEO_SUFFIXES)}) in this folder")
        return found
    if source.suffix.lower() == ".txt":
        lines = [ln.strip() for ln in source.read_text().splitlines()]
        paths = [Path(ln) for ln in lines if ln and not ln.startswith("#")]
        return [p if p.is_absolute() else source.parent / p for p in paths]
    return [source]


def process(pipeline, args: argparse.Namespace, video: Path, out_mp4: Path, audio_path: Path) -> tuple[Path, Path]:
    """Generate, write the audio file and mux; returns (mp4, audio file)."""
    from avflow.data.media import mux_audio, write_audio

    result = pipeline.generate_video(video, args.prompt, args.negative_prompt, duration=args.duration, seed=args.seed)
    audio = result.audio[None]
    if getattr(args, "binaural", False):  # stereo: the mono track rendered at the detected source position
        from avflow.pipelines.spatialise import spatialise_video

        audio = spatialise_video(result.audio, result.sample_rate, str(video))
    write_audio(audio_path, audio, result.sample_rate)
    mux_audio(video, audio, result.sample_rate, out_mp4)
    return out_mp4, audio_path


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if not args.video.exists():
        raise MediaError(f"{args.video}: file not found")
    inputs = list_inputs(args.video)
    batch = args.video.is_dir() or args.video.suffix.lower() == ".txt"
    pipeline = load_pipeline(args)  # before any video work: missing weights fail at once
    if not batch:
        out = args.output or Path("output") / f"{args.video.stem}.mp4"
        if out.suffix.lower() != ".mp4":
            raise MediaError(f"{out}: the output video must be an .mp4")
        audio_path = args.flac or args.wav or out.with_suffix(".wav")
        mp4, audio = process(pipeline, args, args.video, out, audio_path)
        print(f"wrote {mp4} and {audio}")
        return 0
    folder = args.output or Path("output")
    suffix = ".flac" if args.flac else ".wav"
    failed: list[tuple[Path, str]] = []
    start = time.perf_counter()
    bar = tqdm(inputs, desc="foley", unit="video")
    for video in bar:
        bar.set_postfix_str(video.name)
        try:
            process(pipeline, args, video, folder / f"{video.stem}.mp4", folder / f"{video.stem}{suffix}")
        except AvflowError as exc:
            failed.append((video, str(exc)))
            tqdm.write(f"skipped {video}: {exc}")
        except Exception as exc:  # an unexpected failure on one file must not stop the batch
            failed.append((video, f"{type(exc).__name__}: {exc}"))
            tqdm.write(f"skipped {video}: {type(exc).__name__}: {exc}")
    done = len(inputs) - len(failed)
    print(f"foley: {done} of {len(inputs)} videos done in {time.perf_counter() - start:.1f} s, {len(failed)} failed")
    for video, why in failed:
        print(f"  failed {video}: {why}")
    print(f"outputs in {folder}")
    return 1 if failed else 0
