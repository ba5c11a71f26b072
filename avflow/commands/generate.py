"""`avflow generate "prompt"`: a clip (video + stereo audio) from the default joint model.

Tasks: t2av (text to a clip of --duration), a2v (a video for --audio-file), v2a (audio for --video) and continue (the
clip --video followed by --duration more seconds). Inputs of any length up to 60 s (MAX_DURATION_S) are made in windows
of the model's length; nothing is cut short. t2av, a2v and continue write the clip at the model's size and fps (a2v
with the user's sound as given: its packets, or its own rate and channels, not the model's 16 kHz copy); v2a
writes the new stereo track onto the given video (its packets unchanged, its own audio kept, replaced or mixed in as
`--audio` says). Every argument and input is checked before the model's weights are read: the prompt's length with
the text encoder's tokenizer, a2v's audio decoded (NaN or infinite samples refused; it is not decoded again). The
default model's text encoder needs the [text] extra: pip install 'avflow[text]'.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from avflow.commands.options import (
    OUTPUT_DIR,
    VIDEO_SUFFIXES,
    RunOutputs,
    StepBar,
    add_device,
    add_existing_audio,
    add_overwrite,
    add_precision,
    add_seed,
    check_distinct,
    check_output,
    check_prompt,
    existing_audio,
    resolve_device,
)
from avflow.errors import ConfigError, MediaError
from avflow.pipelines.inputs import MAX_DURATION_S, MIN_DURATION_S

HELP = ("generate a video with stereo sound from a text prompt (or for a sound, a video, or after a clip; needs the "
        "[text] extra)")
TASKS = {
    "t2av": "text to audio+video",
    "a2v": "a video for --audio-file",
    "v2a": "audio for --video, written onto it",
    "continue": "--video (a clip with audio) followed by --duration more seconds",
}


def _existing_audio_or_file(value: str) -> str:
    """--audio takes a policy; a file name there is the old spelling of --audio-file."""
    from avflow.data.audio_tracks import EXISTING_AUDIO

    if value not in EXISTING_AUDIO and Path(value).suffix:
        raise argparse.ArgumentTypeError(f"{value!r} is not one of {', '.join(EXISTING_AUDIO)}; the input audio of "
                                         "--task a2v is given with --audio-file FILE")  # fmt: skip
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "prompt",
        help="what happens in the scene, e.g. 'a red rubber ball bounces on the left' "
        "(at most the model's text length, its config's joint.text_len tokens; longer is a one-line error)",
    )
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help=f"output .mp4 (or .m4v, .mov; default: {OUTPUT_DIR}/generated.mp4, or .mov for v2a on a "
                             "video only a QuickTime file holds, e.g. ProRes)")  # fmt: skip
    add_seed(parser)
    parser.add_argument("--duration", type=float, default=None,
                        help=f"seconds, {MIN_DURATION_S:g} to {MAX_DURATION_S:g}: t2av the clip's length, continue the "
                             "length to add (default: the model's, 2 s); a2v / v2a the first seconds of the input to "
                             "use (default: all of it)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=None, help="solver steps (default: the model's own)")
    parser.add_argument("--cfg", type=float, default=None, help="cfg_strength (1 = off; default: the model's own)")
    parser.add_argument("--stream-cfg", action="append", default=[], metavar="STREAM=W",
                        help="the guidance strength of one stream (video, left, right) in place of --cfg; repeat for "
                             "several (default: the model's own)")  # fmt: skip
    parser.add_argument("--task", choices=list(TASKS), default="t2av",
                        help="; ".join(f"{name}: {what}" for name, what in TASKS.items()))  # fmt: skip
    parser.add_argument("--audio-file", type=Path, default=None,
                        help=f"input audio for --task a2v, {MIN_DURATION_S:g} to {MAX_DURATION_S:g} s (the model "
                             "hears it at its own rate, mono for both ears; the clip carries it as given)")  # fmt: skip
    parser.add_argument("--video", type=Path, default=None,
                        help=f"input video for --task v2a or continue, {MIN_DURATION_S:g} to {MAX_DURATION_S:g} s (the "
                             "model sees it at its fps and size; v2a writes onto this video)")  # fmt: skip
    add_existing_audio(parser, when=" (--task v2a)", parse=_existing_audio_or_file, unset=True)
    parser.add_argument("--model", default=None,
                        help="a model folder (config.json + joint.safetensors; default: the shipped model) or a "
                             "training run folder of the joint model (avflow train's out_dir: its EMA, with the "
                             "settings of the model folder it started from)")  # fmt: skip
    parser.add_argument("--spectrogram", type=Path, default=None,
                        help="also write the left/right spectrogram PNG here (time, frequency, dBFS)")  # fmt: skip
    parser.add_argument("--metrics", action="store_true",
                        help="print sync / spatial / physics measures (each defined, or why not)")  # fmt: skip
    add_device(parser)
    add_precision(parser)
    add_overwrite(parser)


def _check_unused(args: argparse.Namespace) -> None:
    """An input the task would not read is a one-line error, not silently dropped (`--video x.mp4` alone would make a
    t2av clip that never saw the video)."""
    used_by = {"--audio-file": (args.audio_file, ("a2v",)), "--video": (args.video, ("v2a", "continue")),
               "--audio": (args.audio, ("v2a",))}  # fmt: skip
    for flag, (value, tasks) in used_by.items():
        if value is not None and args.task not in tasks:
            needs = " or ".join(f"--task {task}" for task in tasks)
            raise ConfigError(f"{flag} is read by {needs} only (--task is {args.task}): give {needs.split(' or ')[0]} "
                              f"or drop {flag}")  # fmt: skip


def check_inputs(args: argparse.Namespace):
    """Clear one-line errors before any model is loaded; returns (sampling settings, duration, input info, device,
    a2v's audio as read for the model, else None)."""
    from avflow.pipelines.inputs import (
        WHOLE_CLIP_HINT,
        check_audio_input,
        check_duration,
        check_video_input,
        used_span,
    )

    if args.prompt is not None and not args.prompt.strip():  # a scene, not a sound (`check_prompt`'s hint)
        raise ConfigError("the prompt is empty: describe the scene, e.g. 'a red ball bounces on the left'")
    check_prompt(args.prompt, "the prompt", required=True)  # the checks that need no media or torch come first
    duration = check_duration(args.duration)
    if duration is not None and duration > MAX_DURATION_S:
        raise ConfigError(f"--duration must be at most {MAX_DURATION_S:g} s, got {duration:g}")
    if args.task == "a2v" and args.audio_file is None:
        raise ConfigError("--task a2v needs --audio-file FILE")
    if args.task in ("v2a", "continue") and args.video is None:
        raise ConfigError(f"--task {args.task} needs --video FILE")
    _check_unused(args)
    inputs = [p for p in (args.audio_file, args.video) if p is not None]
    if args.output is None:
        from avflow.data.mux import holding_suffix

        suffix = holding_suffix(args.video, existing_audio(args.audio)) if args.task == "v2a" else ".mp4"
        args.output = OUTPUT_DIR / f"generated{suffix}"
    out = check_output(args.output, VIDEO_SUFFIXES, overwrite=args.overwrite, inputs=inputs)
    png = None
    if args.spectrogram is not None:
        png = check_output(args.spectrogram, (".png",), overwrite=args.overwrite, inputs=inputs, what="--spectrogram")
    check_distinct(out, png)
    info = None
    if args.task == "a2v":
        info = check_audio_input(args.audio_file)
        used_span(info.audio_duration, f"{args.audio_file}: its audio", duration)  # the sound's length, not a video's
    if args.task == "v2a":
        info = check_video_input(args.video, duration=duration)
        used_span(info.duration, f"{args.video}: the video", duration)
        from avflow.data.mux import check_copyable

        check_copyable(args.video, out, existing_audio(args.audio))
    if args.task == "continue":
        info = check_video_input(args.video)
        if not info.has_audio:
            raise MediaError(f"{args.video}: has no audio track; continuing a clip needs its video and its audio")
        used_span(info.duration, f"{args.video}: the clip", None, hint=WHOLE_CLIP_HINT)
    from avflow.encoders.text import check_text_extra
    from avflow.flow.sampling import parse_stream_strengths
    from avflow.pipelines.default_model import read_default_config
    from avflow.pipelines.generate import check_prompt_tokens, prompt_tokens, read_given_audio

    config = read_default_config(args.model)
    check_text_extra(config.text_encoder)  # pip install 'avflow[text]', before the device and any weights
    sampling = config.sampling.override(steps=args.steps, cfg_strength=args.cfg)
    if args.stream_cfg:
        sampling = sampling.with_stream_cfg(parse_stream_strengths(args.stream_cfg))
        sampling.check_streams(config.streams)
    device = resolve_device(args.device)
    check_prompt_tokens(prompt_tokens(args.prompt, config.text_encoder), config.joint.text_len)  # the tokenizer only
    audio = read_given_audio(args.audio_file, config.sample_rate, duration) if args.task == "a2v" else None
    return sampling, duration, info, device, audio


def run(args: argparse.Namespace) -> int:
    sampling, duration, info, device, given_audio = check_inputs(args)
    from avflow.pipelines.default_model import load_default_model

    pipe = load_default_model(args.model).to(device, args.precision)
    options = dict(seed=args.seed, duration=duration, sampling=sampling, task=args.task)
    bar = StepBar("generate", per_window=sampling.steps)
    try:
        # a2v's --audio-file is read once, by the checks: given as given_audio (the pipeline refuses both at once)
        clip = pipe.generate(args.prompt, video_path=args.video, given_audio=given_audio, progress=bar, **options)
    finally:
        bar.close()
    with RunOutputs(args.output, args.spectrogram) as outputs:
        if args.task == "v2a":
            from avflow.data.audio_tracks import describe
            from avflow.data.media import mux_audio
            from avflow.data.mux import left_out

            policy = existing_audio(args.audio)
            outputs.wrote(mux_audio(args.video, clip.audio, clip.sample_rate, args.output, existing_audio=policy))
            track = f"new stereo {clip.sample_rate} Hz track of {clip.duration:.2f} s"
            rates = (clip.sample_rate, info.audio_sample_rate) if info.has_audio else None
            tracks = describe(policy, info.audio_tracks, left_out(args.video, args.output), rates=rates)
            what = f"the video of {args.video} unchanged, {track}; {tracks}"
        elif args.task == "a2v":  # the user's sound as given, not the model's 16 kHz copy of it
            from avflow.data.mux import write_video_with_audio_of

            sound = write_video_with_audio_of(args.output, clip.frames, clip.fps, args.audio_file, seconds=duration)
            outputs.wrote(args.output)
            what = f"{clip.frames.shape[0]} frames at {clip.fps:g} fps, {clip.duration:.2f} s, with {sound}"
        else:
            outputs.wrote(clip.save(args.output))
            what = (f"{clip.frames.shape[0]} frames at {clip.fps:g} fps, stereo {clip.sample_rate} Hz, "
                    f"{clip.duration:.2f} s")  # fmt: skip
            if args.task == "continue":
                what += f": {args.video} continued by {pipe.config.duration if duration is None else duration:g} s"
        if clip.windows > 1:
            what += f"; {clip.windows} windows of {pipe.config.duration:g} s"
        if args.spectrogram:
            outputs.wrote(clip.save_spectrogram(args.spectrogram))
    written = outputs.written
    print(f"wrote {written[0]} ({what})" + (f" and {written[1]}" if len(written) > 1 else ""))
    if args.metrics:  # of the file as written, as `avflow demo` and `avflow eval` measure it (not the frames before
        from avflow.commands.demo import metric_line  # encoding: 4:2:0 chroma moves a 64 px clip's small objects)

        video = written[0]
        try:
            values = clip.metrics(video)
        except MediaError as exc:
            print(f"metrics: not measured: {exc}")
            return 0
        print(f"metrics: of {video} as written (decoded as `avflow eval {video}` reads it)")
        for name, m in values.items():  # a blank video: undefined with its reason, counts given
            print(metric_line(name, m))
    return 0
