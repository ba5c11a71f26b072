"""`avflow info FILE`: print a media file's streams, duration, frame rate, size and audio format."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "show a media file's streams, duration, fps, frame size and audio rate / channels"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", nargs="+", help="video or audio file(s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per file")


def _stream_lines(path) -> list[str]:
    import av

    from avflow.data.video import open_media

    lines = []
    with open_media(path) as container:
        for s in container.streams:
            codec = s.codec_context.name if s.codec_context is not None else "?"
            line = f"  stream {s.index}: {s.type:<8} {codec}"
            if s.type == "video" and s.disposition & av.stream.Disposition.attached_pic:
                line += f"  {s.width}x{s.height}  cover art"
            elif s.type == "video":
                rate = s.average_rate or s.guessed_rate
                line += f"  {s.width}x{s.height}  {float(rate or 0):.3f} fps ({rate})"
                line += f"  {s.frames} frames" if s.frames else ""  # MKV, WebM, TS: not in the header
                pixel = s.sample_aspect_ratio  # anamorphic video (DV, DVDs, some cameras): pixels are not square
                if pixel and pixel != 1:
                    line += f"  pixels {pixel.numerator}:{pixel.denominator}, shown {round(s.width * pixel)}x{s.height}"
            elif s.type == "audio":
                line += f"  {s.codec_context.sample_rate} Hz  {s.codec_context.channels} ch ({s.layout.name})"
            if s.duration is not None and s.time_base is not None:
                line += f"  {float(s.duration * s.time_base):.3f} s"
            lines.append(line)
    return lines


def run(args: argparse.Namespace) -> int:
    from avflow.data.video import probe
    from avflow.errors import AvflowError

    failed = 0
    for path in args.file:
        try:
            info = probe(path)
        except AvflowError as exc:  # one file that cannot be read: said, and the others shown
            if args.json:  # one line a file, a failed one too (the error also on stderr)
                print(json.dumps({"path": str(path), "error": str(exc)}))
            if len(args.file) == 1:
                raise
            print(f"avflow info: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        if args.json:
            print(json.dumps({k: (str(v) if k == "path" else v) for k, v in vars(info).items()}))
            continue
        print(f"{info.path}")
        print(f"  duration: {info.duration:.3f} s")
        if info.has_video:
            turned = f", shown turned {90 * info.quarter_turns} degrees counterclockwise" if info.quarter_turns else ""
            print(f"  video:    {info.width}x{info.height} (W x H{turned}), {info.fps:.3f} fps, {info.n_frames} frames")
        if info.has_audio:
            print(f"  audio:    {info.audio_sample_rate} Hz, {info.audio_channels} channel(s)")
        print("\n".join(_stream_lines(path)))
    return 2 if failed else 0
