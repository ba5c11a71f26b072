"""`avflow foley VIDEO`: generate a soundtrack for a video (or a folder / list of videos) and mux it in.

Single video: writes OUT.mp4 (the video's packets unchanged plus the new AAC track, exactly as long as the video; the
video's own audio kept, replaced or mixed in as `--audio` says) and, only when asked (`--wav`), the generated audio as
a wav or flac. Batch (VIDEO is a folder or a .txt list, one path a line): `-o` is an output folder; a bad file is
reported and skipped, a summary is printed, and the exit code is 1 if any file failed. Every argument and input is
checked before any weights are read.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from avflow import hub
from avflow.commands.options import (
    AUDIO_SUFFIXES,
    OUTPUT_DIR,
    VIDEO_SUFFIXES,
    RunBar,
    RunOutputs,
    add_device,
    add_existing_audio,
    add_overwrite,
    add_precision,
    add_seed,
    check_distinct,
    check_output,
    check_prompt,
    resolve_device,
)
from avflow.data.file_kinds import VIDEO_FILE_SUFFIXES, hidden
from avflow.errors import AvflowError, ConfigError, MediaError, OutputError
from avflow.pipelines.foley_windows import DEFAULT_SEED, TRAINED_S
from avflow.pipelines.inputs import MAX_SOUND_S, MIN_DURATION_S, check_duration

if TYPE_CHECKING:
    from avflow.pipelines.foley_variants import FoleySpec

HELP = "generate synchronized audio for a video (MMAudio weights) and mux it into an mp4"
INPUT_SUFFIXES = VIDEO_FILE_SUFFIXES  # videos picked from a folder


def add_model_arguments(parser: argparse.ArgumentParser, *, default_duration: float | None, prompt: bool = True):
    """Options shared by foley, t2a and i2a (t2a takes its prompt as a positional argument instead of --prompt)."""
    if prompt:
        parser.add_argument("--prompt", default=None,
                            help="text prompt (optional; at most the 77 tokens MMAudio's CLIP reads: a longer one "
                                 "is an error, never cut)")  # fmt: skip
    parser.add_argument("--negative-prompt", default=None,
                        help="text to steer away from (optional); it works through guidance, so it needs --cfg > 1 "
                             "(an error otherwise); at most 77 CLIP tokens, as the prompt")  # fmt: skip
    parser.add_argument("--model", default="large_44k_v2",
                        help=f"an official model ({', '.join(hub.MODELS)}; `avflow download NAME` fetches it) or a "
                             "model config .json of your own (weights files and configs of every part, see "
                             "docs/foley.md in the avflow source repository)")  # fmt: skip
    parser.add_argument("--weights", default=None,
                        help="network weights to use instead of the model's: an official-layout .pth, a "
                             ".safetensors export or a training checkpoint (a file, hf://ORG/NAME/PATH on the "
                             "Hugging Face Hub or an https:// URL (pinned with #sha256=HEX where you know it), "
                             "downloaded on this request), or the run folder of a fine-tune from "
                             "`avflow train mmaudio_finetune` (its EMA and its network's shape); the "
                             "network must fit --model's codecs and encoders")  # fmt: skip
    length = "all of the video" if default_duration is None else "%(default)s"
    most = "" if default_duration is None else f" and at most {MAX_SOUND_S:g} (one hour)"  # t2a, i2a: no video
    parser.add_argument("--duration", type=float, default=default_duration,
                        help=f"seconds to generate, at least {MIN_DURATION_S:g}{most} (default: {length})")  # fmt: skip
    parser.add_argument("--steps", type=int, default=None, help="solver steps (default: the model's own)")
    parser.add_argument("--cfg", type=float, default=None,
                        help="guidance strength cfg_strength, 1 = off (default: the model's own); below 1 is an "
                             "error: MMAudio runs unguided there, which --cfg 1 does")  # fmt: skip
    parser.add_argument("--fast", action="store_true",
                        help="the fast sampler preset instead of the model's own solver and steps: fewer network "
                             "evaluations for the same accuracy (docs/foley.md); --steps still sets the "
                             "steps")  # fmt: skip
    add_precision(parser)
    parser.add_argument("--compile", action="store_true",
                        help="run the vocoder's anti-aliased activations as one compiled kernel each (torch.compile; "
                             "the same audio to float32 rounding, faster vocoding, docs/foley.md); float32 only, "
                             "needs a C++ compiler on the CPU; the first run compiles (about 10 s on 2 cores), later "
                             "runs read inductor's disk cache (about 2 s)")  # fmt: skip
    add_seed(parser, default=DEFAULT_SEED)
    parser.add_argument("--window", type=float, default=TRAINED_S,
                        help="longest generation window in seconds, finite (long inputs are cut into the fewest "
                             "windows of at most this length, evenly spread; default: %(default)s, the models' "
                             f"training length; a note above {2 * TRAINED_S:g} s)")  # fmt: skip
    parser.add_argument("--overlap", type=float, default=1.0, help="overlap between windows in seconds")
    add_device(parser)
    add_overwrite(parser)


def check_model_config(args: argparse.Namespace) -> FoleySpec:
    """The spec of args.model (with args.weights), its parts' configs checked to fit together (`check_model`), and
    args.prompt and args.negative_prompt at most as long as its CLIP text tower reads (`check_prompts`: the tokenizer
    alone): one-line errors from the model config alone, before any video is opened (its files' presence is checked
    later)."""
    from avflow.pipelines.foley import check_model, check_prompts

    spec = check_model(args.model, args.weights)
    check_prompts(spec, args.prompt, args.negative_prompt, negative="--negative-prompt")
    return spec


def check_model_arguments(args: argparse.Namespace, spec: FoleySpec | None = None):
    """(sampling settings, device) after checking the model (`check_model_config`, unless its `spec` is given), its
    files, the sampling, guidance and window settings and the device; one-line errors, no weights read (a note for a
    window much longer than the training length)."""
    import warnings

    from avflow.errors import Note
    from avflow.pipelines.foley_windows import check_guidance, check_windows, window_note

    check_duration(args.duration)
    check_windows(args.window, args.overlap)
    from avflow.pipelines.foley_variants import check_available

    spec = check_model_config(args) if spec is None else spec
    sampling = spec.sampling.preset("fast") if args.fast else spec.sampling
    sampling = sampling.override(steps=args.steps, cfg_strength=args.cfg)
    check_guidance(sampling.cfg_strength, args.negative_prompt, cfg="--cfg", negative="--negative-prompt")
    note = window_note(args.window)
    if note:
        warnings.warn(note, Note, stacklevel=2)
    device = resolve_device(args.device)
    if args.compile:
        check_compile(args.precision, device)
    check_available(spec, args.model)
    return sampling, device


def check_compile(precision: str, device: str) -> None:
    """--compile's one-line errors: a float32 path only, and on the CPU a C++ compiler for inductor."""
    if precision == "bf16":
        raise ConfigError("--compile fuses the vocoder's float32 path; with --precision bf16 it would do nothing: "
                          "drop one of them")  # fmt: skip
    if device == "cpu":
        from avflow.codecs.fused_activation import compiler_missing

        missing = compiler_missing()
        if missing:
            raise ConfigError(f"--compile: {missing}")


def load_pipeline(args: argparse.Namespace, sampling, device: str):
    """The pipeline for args.model (and args.weights), read from the files that `check_model_arguments` found. On a
    terminal one line says so first: an official model reads up to several GB before the progress bar starts."""
    from avflow.pipelines.foley import FoleyPipeline

    if sys.stderr.isatty():
        print(f"loading the model {args.model} ...", file=sys.stderr, flush=True)

    return FoleyPipeline.load(args.model, weights=args.weights, device=device, sampling=sampling,
                              window_s=args.window, overlap_s=args.overlap, precision=args.precision,
                              compile_vocoder=args.compile)  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", type=Path,
                        help=f"a video at least {MIN_DURATION_S:g} s long, a folder of videos, or a .txt list of "
                             "paths (one a line)")  # fmt: skip
    add_model_arguments(parser, default_duration=None)
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help=f"OUT.mp4 (or .m4v, .mov; default: {OUTPUT_DIR}/VIDEO_NAME.mp4, .mov for a video only a "
                             "QuickTime file holds, e.g. ProRes); batch: an output folder "
                             f"(default: {OUTPUT_DIR})")  # fmt: skip
    add_existing_audio(parser)
    parser.add_argument("--wav", type=Path, default=None,
                        help="also write the generated audio here (.wav: float32, .flac: 24-bit; mono, stereo "
                             "with --binaural); batch: a folder for one VIDEO_NAME.wav each (default: no audio "
                             "file)")  # fmt: skip
    parser.add_argument("--binaural", action="store_true",
                        help="spatialise the track from the video (stereo; a render peaking over 0 dBFS is scaled "
                             "down to keep its peak under it, and a note says by how much)")  # fmt: skip


def _unquoted(line: str) -> str:
    """A path as pasted: Windows' "Copy as path" wraps it in double quotes, a shell user may use single ones."""
    if len(line) >= 2 and line[0] == line[-1] and line[0] in "\"'":
        return line[1:-1]
    return line


def list_inputs(source: Path) -> list[Path]:
    """Videos in a folder (sorted; hidden files passed over, as `file_kinds.hidden` says), or the paths of a .txt
    list (relative to the list's folder)."""
    if source.is_dir():
        found = sorted(p for p in source.iterdir()
                       if p.suffix.lower() in INPUT_SUFFIXES and p.is_file() and not hidden(p, source))  # fmt: skip
        if not found:
            raise MediaError(f"{source}: no videos ({', '.join(INPUT_SUFFIXES)}) in this folder")
        return found
    if source.suffix.lower() == ".txt":
        try:  # "utf-8-sig": Windows editors may start the file with a byte order mark
            lines = [ln.strip() for ln in source.read_text(encoding="utf-8-sig").splitlines()]
        except UnicodeDecodeError:
            raise MediaError(f"{source}: not a UTF-8 text file (a .txt list holds one video path per line)") from None
        paths = [Path(_unquoted(ln)) for ln in lines if ln and not ln.startswith("#")]
        if not paths:
            raise MediaError(f"{source}: lists no videos")
        return [p if p.is_absolute() else source.parent / p for p in paths]
    return [source]


def process(pipeline, args: argparse.Namespace, video: Path, out_mp4: Path, wav: Path | None, progress=None):
    """Generate, mux and (on request) write the audio file; on a failure, nothing of this video is left behind."""
    from avflow.data.media import mux_audio, write_audio

    result = pipeline.generate_video(video, args.prompt, args.negative_prompt, duration=args.duration, seed=args.seed,
                                     progress=progress)  # fmt: skip
    if isinstance(progress, RunBar):
        progress.writing("spatialising, writing" if args.binaural else "writing")
    audio = result.audio[None]
    if args.binaural:  # stereo: the mono track rendered at the detected source position, its peak under 0 dBFS
        import warnings

        from avflow.errors import Note
        from avflow.pipelines.spatialise import gain_note, spatialise_video, under_full_scale

        audio, gain = under_full_scale(spatialise_video(result.audio, result.sample_rate, str(video)))
        if gain < 1:  # said, not turned down silently
            warnings.warn(Note(f"{video}: the binaural track was {gain_note(gain)}"), stacklevel=2)
    with RunOutputs(out_mp4, wav) as outputs:
        outputs.wrote(mux_audio(video, audio, result.sample_rate, out_mp4, existing_audio=args.audio))
        if wav is not None:
            outputs.wrote(write_audio(wav, audio, result.sample_rate))
    if isinstance(progress, RunBar):
        progress.finish()
    return result, audio.shape[0]


def _track(rate: int, channels: int) -> str:
    return f"{rate / 1000:g} kHz {'mono' if channels == 1 else 'stereo'}"


def _new_track(rate: int, channels: int, generated: float, video: float) -> str:
    """What the new track holds: as long as the video, generated over `generated` seconds and silent after them."""
    if generated < video - 0.005:
        return (f"new {_track(rate, channels)} track: {generated:.2f} s generated, silent to the video's end "
                f"({video:.2f} s)")  # fmt: skip
    return f"new {_track(rate, channels)} track of {generated:.2f} s"


def run(args: argparse.Namespace) -> int:
    from avflow.pipelines.foley_windows import check_windows
    from avflow.pipelines.inputs import check_video_input

    if not args.video.exists():
        raise MediaError(f"{args.video}: file not found")
    args.prompt = check_prompt(args.prompt, "--prompt", required=False)
    args.negative_prompt = check_prompt(args.negative_prompt, "--negative-prompt", required=False)
    check_duration(args.duration)  # the checks that need no media or torch come first: they answer at once
    check_windows(args.window, args.overlap)
    if args.video.is_dir() or args.video.suffix.lower() == ".txt":
        return run_batch(args)
    from avflow.data.mux import check_copyable, holding_suffix, left_out

    default = OUTPUT_DIR / f"{args.video.stem}{holding_suffix(args.video, args.audio)}" if not args.output else None
    out = check_output(args.output or default, VIDEO_SUFFIXES, overwrite=args.overwrite, inputs=[args.video])
    wav = None
    if args.wav is not None:
        wav = check_output(args.wav, AUDIO_SUFFIXES, overwrite=args.overwrite, inputs=[args.video], what="--wav")
    check_distinct(out, wav)
    spec = check_model_config(args)  # before the video is opened: a model config that does not fit needs no video
    info = check_video_input(args.video, duration=args.duration)
    check_copyable(args.video, out, args.audio)
    dropped = left_out(args.video, out)
    sampling, device = check_model_arguments(args, spec)
    pipeline = load_pipeline(args, sampling, device)
    bar = RunBar("foley")
    try:
        result, channels = process(pipeline, args, args.video, out, wav, progress=bar)
    finally:
        bar.close()
    from avflow.data.audio_tracks import describe

    rates = (result.sample_rate, info.audio_sample_rate) if info.has_audio else None
    tracks = describe(args.audio, info.audio_tracks, dropped, rates=rates)
    track = _new_track(result.sample_rate, channels, result.duration, info.duration)
    print(f"wrote {out} (video unchanged, {track}; {tracks})" + (f" and {wav}" if wav else ""))
    return 0


def _plan_batch(args: argparse.Namespace, inputs: list[Path]) -> tuple[list[tuple[Path, Path, Path | None]], list]:
    """(video, mp4, wav) for every usable input and (video, why) for the others; refuses the whole run when an output
    exists (without --overwrite) or would replace an input."""
    from avflow.data.mux import check_copyable, holding_suffix
    from avflow.pipelines.inputs import check_video_input

    folder = args.output or OUTPUT_DIR
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"-o {folder}: is a file; in batch mode -o is an output folder")
    if args.wav is not None and args.wav.exists() and not args.wav.is_dir():
        raise OutputError(f"--wav {args.wav}: is a file; in batch mode --wav is a folder")
    planned, failed, taken, existing = [], [], set(), []
    for video in inputs:
        mp4 = folder / f"{video.stem}{holding_suffix(video, args.audio)}"  # .mov for a ProRes export
        wav = args.wav / f"{video.stem}.wav" if args.wav is not None else None
        clash = next((p for p in (mp4, wav) if p is not None and p in taken), None)  # a.mp4 and a ProRes a.mov: a.wav
        if clash is not None:
            failed.append((video, f"another input also writes {clash}"))
            continue
        try:
            check_video_input(video, duration=args.duration)
            check_copyable(video, mp4, args.audio)
            for path, what in ((mp4, "-o"), (wav, "--wav")):
                if path is not None:
                    check_output(path, VIDEO_SUFFIXES if path is mp4 else AUDIO_SUFFIXES, overwrite=True,
                                 inputs=inputs, what=what)  # fmt: skip
        except OutputError:
            raise
        except AvflowError as exc:
            failed.append((video, str(exc)))
            continue
        taken.update(p for p in (mp4, wav) if p is not None)
        existing += [p for p in (mp4, wav) if p is not None and p.exists()]
        planned.append((video, mp4, wav))
    if existing and not args.overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise OutputError(f"{existing[0]} exists{more}; pass --overwrite (or -y) to replace existing outputs")
    return planned, failed


def run_batch(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    check_duration(args.duration)
    inputs = list_inputs(args.video)
    spec = check_model_config(args)  # before any video is opened: a model config that does not fit stops the run
    planned, failed = _plan_batch(args, inputs)
    for video, why in failed:
        print(f"skipped {video}: {why}")
    start = time.perf_counter()
    if planned:
        sampling, device = check_model_arguments(args, spec)
        pipeline = load_pipeline(args, sampling, device)  # only when there is something to do
        bar = tqdm(planned, desc="foley", unit="video")
        for video, mp4, wav in bar:
            bar.set_postfix_str(video.name)
            steps = RunBar(video.name, leave=False)
            try:
                process(pipeline, args, video, mp4, wav, progress=steps)
            except AvflowError as exc:
                failed.append((video, str(exc)))
                tqdm.write(f"skipped {video}: {exc}")
            except Exception as exc:  # an unexpected failure on one file must not stop the batch
                failed.append((video, f"{type(exc).__name__}: {exc}"))
                tqdm.write(f"skipped {video}: {type(exc).__name__}: {exc}")
            finally:
                steps.close()
    done = len(inputs) - len(failed)
    print(f"foley: {done} of {len(inputs)} videos done in {time.perf_counter() - start:.1f} s, {len(failed)} failed")
    for video, why in failed:
        print(f"  failed {video}: {why}")
    if done:
        print(f"outputs in {args.output or OUTPUT_DIR} (each video unchanged with its new track first; its own "
              f"audio: --audio {args.audio})")  # fmt: skip
        from avflow.data.mux import left_out

        skipped = {video for video, _ in failed}
        for video, mp4, _ in planned:
            dropped = left_out(video, mp4) if video not in skipped else []
            if dropped:
                print(f"  {video}: its {', '.join(dropped)} left out (the output's container cannot hold them)")
    return 1 if failed else 0
