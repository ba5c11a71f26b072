"""`avflow binaural VIDEO`: a binaural (stereo) track for a video, muxed into a copy of it."""

from __future__ import annotations

import argparse
from pathlib import Path

from avflow.commands.options import (
    AUDIO_SUFFIXES,
    OUTPUT_DIR,
    VIDEO_SUFFIXES,
    RunOutputs,
    StepBar,
    add_existing_audio,
    add_overwrite,
    add_seed,
    check_distinct,
    check_output,
)
from avflow.errors import ConfigError, MediaError
from avflow.pipelines.inputs import MIN_DURATION_S, SPAN_SLACK_S

HELP = "binaural audio for a video: its own audio or a given mono spatialised, or an installed binaural model's"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", type=Path, help=f"input video, at least {MIN_DURATION_S:g} s long")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help=f"output .mp4 (or .m4v, .mov): the video with a stereo audio track (default: "
                             f"{OUTPUT_DIR}/VIDEO_NAME_binaural.mp4, .mov for a video only a QuickTime file "
                             "holds, e.g. ProRes)")  # fmt: skip
    parser.add_argument("--mono", type=Path, default=None,
                        help="a mono sound for the video (any audio file or video, any sample rate, at least as long "
                             "as the video; its first VIDEO-length seconds are used): made binaural keeping its "
                             "content and timing (the model's track is 16 kHz; the spatialiser keeps the sound's "
                             "rate within 16-48 kHz) (default: the video's own audio; with a binaural model, a "
                             "sound it generates from the video)")  # fmt: skip
    parser.add_argument("--mode", choices=["auto", "model", "spatialise"], default="auto",
                        help="model: an installed binaural model (none ships; scripts/train_binaural_v2.py "
                             "--ship in the avflow source repository installs one) or --model's; spatialise: render "
                             "--mono (else the video's own audio, mixed to mono) from the detected source position; "
                             "auto: model if its weights are installed. Either way a track peaking over 0 dBFS is "
                             "scaled down as a whole to keep its peak under it (the model's mix of a --mono is then "
                             "the mono times that gain), and the output line says by how much")  # fmt: skip
    parser.add_argument("--model", type=Path, default=None,
                        help="binaural model weights of your own (the .safetensors that scripts/train_binaural_v2.py "
                             "exports; default: the installed model, if any); implies --mode model")  # fmt: skip
    parser.add_argument("--steps", type=int, default=None, help="solver steps (model; default: the model's own)")
    parser.add_argument("--cfg", type=float, default=None, help="cfg_strength (model; 1 = off; default: the model's "
                        "own)")  # fmt: skip
    add_seed(parser)
    parser.set_defaults(seed=None)  # None: not given, refused where nothing samples; the model samples with 0
    add_existing_audio(parser, when=" (mix is refused where the binaural sound is the video's own audio: "
                       "spatialised without --mono, or --mono VIDEO itself; a copy of that audio in another file "
                       "given as --mono makes the same comb filter, one sound at two interaural delays)")  # fmt: skip
    parser.add_argument("--wav", type=Path, default=None,
                        help="also write the stereo track here (.wav or .flac; default: no audio file)")  # fmt: skip
    add_overwrite(parser)


def run(args: argparse.Namespace) -> int:
    from avflow.data.audio_tracks import describe
    from avflow.pipelines.inputs import check_video_input

    if not args.video.exists():  # the checks that need no media or torch come first
        raise MediaError(f"{args.video}: file not found")
    if args.mono is not None and not args.mono.is_file():
        raise MediaError(f"--mono {args.mono}: " + ("is a folder; give a sound file" if args.mono.is_dir()
                         else "file not found"))  # fmt: skip
    if args.model is not None:
        if args.mode == "spatialise":
            raise ConfigError("--model gives the binaural model's weights, and --mode spatialise uses no model")
        if not args.model.is_file():
            raise MediaError(f"--model {args.model}: " + ("is a folder; give the .safetensors file" if
                             args.model.is_dir() else "file not found"))  # fmt: skip
    inputs = [args.video] + ([args.mono] if args.mono is not None else [])
    from avflow.data.mux import holding_suffix

    default = OUTPUT_DIR / f"{args.video.stem}_binaural{holding_suffix(args.video, args.audio)}"
    out = check_output(args.output or default, VIDEO_SUFFIXES, overwrite=args.overwrite, inputs=inputs)
    wav = None
    if args.wav is not None:
        wav = check_output(args.wav, AUDIO_SUFFIXES, overwrite=args.overwrite, inputs=inputs, what="--wav")
    check_distinct(out, wav)
    from avflow.data.media import mux_audio, write_audio
    from avflow.data.mux import check_copyable, left_out
    from avflow.models.binaural import MODEL_FILE, SAMPLING
    from avflow.pipelines.binaural import (
        BinauralPipeline,
        binaural_track,
        check_mix,
        check_mono,
        mono_seconds,
        nothing_to_spatialise,
    )
    from avflow.pipelines.spatialise import gain_note

    SAMPLING.override(steps=args.steps, cfg_strength=args.cfg)  # bad values: one line before any media is read
    model_file = MODEL_FILE if args.model is None else args.model
    mode = ("model" if model_file.is_file() else "spatialise") if args.mode == "auto" else args.mode
    given = (("--steps", args.steps), ("--cfg", args.cfg), ("--seed", args.seed))
    unused = [flag for flag, value in given if value is not None]
    if mode == "spatialise" and unused:
        why = "--mode spatialise" if args.mode == "spatialise" else "no binaural model is installed, so --mode auto"
        sets, them = ("set", "them") if len(unused) > 1 else ("sets", "it")
        named = f"{', '.join(unused[:-1])} and {unused[-1]}" if len(unused) > 1 else unused[0]
        raise ConfigError(f"{named} {sets} the binaural model's sampling, and {why} spatialises "
                          f"without sampling: drop {them}")  # fmt: skip
    info = check_video_input(args.video)
    check_copyable(args.video, out, args.audio)
    dropped = left_out(args.video, out)
    mono_info = check_mono(args.mono, info.duration) if args.mono is not None else None
    check_mix(args.video, args.mono, mode=mode, existing_audio=args.audio, has_audio=info.has_audio)
    if mode == "spatialise" and args.mono is None and not info.has_audio:
        raise nothing_to_spatialise(str(args.video), "give --mono FILE, a sound made for it (e.g. by `avflow foley`)",
                                    "use --mode model", installed=model_file.is_file())  # fmt: skip
    if mode == "model" and not model_file.is_file():
        raise MediaError(f"{MODEL_FILE}: no trained binaural model installed (train one with "
                         "scripts/train_binaural_v2.py of the avflow source repository and give it with --model "
                         "FILE, or use --mode spatialise)")  # fmt: skip
    pipeline = BinauralPipeline.from_assets(args.model) if args.model is not None else None  # its errors: one line
    # the model's sampling steps; the spatialiser's: the video read a window at a time, then the placing
    bar = StepBar("binaural") if mode == "model" else StepBar("spatialise", unit="part")
    try:
        seed = 0 if args.seed is None else args.seed
        track = binaural_track(args.video, mode=mode, mono=args.mono, seed=seed, steps=args.steps, cfg=args.cfg,
                               pipeline=pipeline, progress=bar)  # fmt: skip
    finally:
        bar.close()
    with RunOutputs(out, wav) as outputs:
        outputs.wrote(mux_audio(args.video, track.audio, track.sample_rate, out, existing_audio=args.audio))
        if wav is not None:
            outputs.wrote(write_audio(wav, track.audio, track.sample_rate))
    rates = (track.sample_rate, info.audio_sample_rate) if info.has_audio else None
    how = f"{track.mode}, from --mono" if track.mono else track.mode
    sound = mono_info if mono_info is not None else info if track.mode == "spatialise" else None  # the sound placed
    if sound is not None and mono_seconds(sound) > track.duration + SPAN_SLACK_S:  # said, not cut silently
        how += "" if track.mono else ", from its own audio"
        how += f" (its first {track.duration:.2f} s of {mono_seconds(sound):.2f} s: the video's length)"
    tracks = describe(args.audio, info.audio_tracks, dropped, rates=rates)
    scaled = f", {gain_note(track.gain)}" if track.gain < 1 else ""  # said, not turned down silently
    print(f"wrote {out} ({how}, {track.duration:.2f} s stereo {track.sample_rate / 1000:g} kHz{scaled}; "
          f"{tracks})" + (f" and {wav}" if wav else ""))  # fmt: skip
    return 0
