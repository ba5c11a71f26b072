"""`avflow cache build|info`: precompute MMAudio latents and conditioning features into a feature cache;
`avflow cache joint`: the training file of the joint text-to-audio+video model from one's own clips."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from avflow.commands.options import add_device, check_folder, resolve_device
from avflow.errors import ConfigError, MediaWarning, WeightsError

HELP = (
    "build or inspect a feature cache (VAE latents + CLIP/Synchformer/text features per clip; torchrun-parallel), "
    "or make the joint model's training file from one's own clips"
)

SOURCES = ("vggsound", "audiocaps", "captions", "world")


def _naming_itself(parser_class: type[argparse.ArgumentParser]) -> type[argparse.ArgumentParser]:
    """`parser_class` whose unrecognized arguments are its own error, so the line names `avflow cache build --help`
    (argparse leaves them to the parent parser, whose line would name `avflow cache --help`)."""

    class Subparser(parser_class):
        def parse_known_args(self, args=None, namespace=None):
            namespace, extras = super().parse_known_args(args, namespace)
            if extras:
                self.error(f"unrecognized arguments: {' '.join(extras)}")
            return namespace, extras

    return Subparser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # the metavar names the choices in the error when none is given (else 'required: action', its dest)
    sub = parser.add_subparsers(dest="action", metavar="{build,info,joint}", required=True,
                                parser_class=_naming_itself(type(parser)))  # fmt: skip
    build = sub.add_parser("build", help="extract features (resumes; run under torchrun for many processes)")
    build.add_argument("out", help="cache folder")
    build.add_argument("--source", choices=SOURCES, required=True, help="layout of the dataset")
    build.add_argument("--table", help="caption table (CSV/TSV) for vggsound, audiocaps and captions")
    build.add_argument("--media", help="folder of mp4/wav files, or the world dataset root for --source world")
    build.add_argument("--split", default=None, help="VGGSound split column value / world split (default train)")
    build.add_argument("--clip-weights", required=True, help="open_clip DFN5B-CLIP-ViT-H-14-384 weights")
    build.add_argument("--synchformer-weights", required=True, help="synchformer_state_dict.pth")
    build.add_argument("--vae-weights", required=True, help="MMAudio VAE v1-16.pth / v1-44.pth")
    build.add_argument("--mode", choices=("16k", "44k"), default="16k", help="mel + VAE front end")
    build.add_argument("--duration", type=float, default=8.0,
                       help="seconds per clip: of a longer clip the first DURATION s are used (counted in the "
                       "summary); one up to 0.05 s shorter is padded (audio with silence, video with its last "
                       "frame); a shorter one is skipped and listed in OUT/failed.tsv")  # fmt: skip
    build.add_argument("--shard-size", type=int, default=256, help="clips per shard")
    add_device(build, autocast=False)
    build.add_argument("-y", "--overwrite", action="store_true",
                       help="extract every clip again into a fresh cache, also one made with other weights, --mode "
                       "or --duration (the old cache stays readable, and is deleted once every clip is written; "
                       "rerun an interrupted --overwrite with --overwrite to go on). Without it a rebuild extracts "
                       "only new clips and those whose caption or file changed")  # fmt: skip
    info = sub.add_parser("info", help="print a cache's clip count, streams and weights checksum")
    info.add_argument("out", help="cache folder")
    add_joint_arguments(sub)


def add_joint_arguments(sub) -> None:
    """`avflow cache joint`: one's own clips (video with sound) and captions into the training file of the joint
    model (`avflow train default_joint_v2_cycle data.train.args.file=OUT`)."""
    joint = sub.add_parser("joint", help="one's own clips + captions into a training file of the joint "
                           "text-to-audio+video model (avflow train default_joint_v2_cycle)")  # fmt: skip
    joint.add_argument("out", help="the training file to write (.safetensors); skipped clips go to OUT.failed.tsv")
    joint.add_argument("--table", required=True, help="caption table (CSV/TSV: file,caption), as for --source "
                       "captions")  # fmt: skip
    joint.add_argument("--media", required=True, help="folder of the clips (video files with sound)")
    joint.add_argument("--model", default=None,
                       help="model folder whose clip format (duration, fps, size, sample rate), codecs and text "
                       "encoder the file is made for (default: the shipped default model)")  # fmt: skip
    joint.add_argument("-y", "--overwrite", action="store_true", help="replace OUT if it exists")


def _records(args: argparse.Namespace):
    from avflow.data import datasets as ds

    if args.media is None:
        raise ConfigError("--media is required")
    if args.source == "world":
        return ds.read_world(args.media, args.split or "train")
    if args.table is None:
        raise ConfigError(f"--table is required for --source {args.source}")
    if args.source == "vggsound":
        return ds.read_vggsound(args.table, args.media, args.split)
    if args.source == "audiocaps":
        return ds.read_audiocaps(args.table, args.media)
    return ds.read_captions(args.table, args.media)


def check_unused(args: argparse.Namespace) -> None:
    """An option its --source does not read is a one-line error, not silently dropped (`--source world --table
    x.csv` would build from the world's manifest, never reading x.csv)."""
    if args.source == "world" and args.table is not None:
        raise ConfigError("--table is not used with --source world (the world's manifest lists its clips): drop it")
    if args.source in ("audiocaps", "captions") and args.split is not None:
        raise ConfigError(f"--split is only for --source vggsound and world, not {args.source}: drop it")


def check_build_arguments(args: argparse.Namespace) -> None:
    """The options --source reads, the clip duration, the three weights files and the cache folder, before the table
    is read or torch imported (one-line errors)."""
    from avflow.pipelines.foley_variants import check_weights_file
    from avflow.pipelines.inputs import check_duration

    check_unused(args)
    check_duration(args.duration)
    for what, path in (("--clip-weights", args.clip_weights), ("--synchformer-weights", args.synchformer_weights),
                       ("--vae-weights", args.vae_weights)):  # fmt: skip
        check_weights_file(path, what)
    if args.shard_size < 1:
        raise ConfigError(f"--shard-size must be at least 1, got {args.shard_size}")
    check_folder(args.out, "OUT")


def video_lengths(encoders, duration: float) -> dict[str, int]:
    """The rows of `clip_f` and `sync_f` that `duration` seconds of video give (what a clip a little short is
    padded to, so every clip of a cache has the same shapes)."""
    from avflow.encoders.preprocess import frame_counts
    from avflow.encoders.synchformer import SEGMENT_FRAMES, SEGMENT_STEP

    n_clip, n_sync = frame_counts(duration)
    segments = (n_sync - SEGMENT_FRAMES) // SEGMENT_STEP + 1
    return {"clip_f": n_clip, "sync_f": encoders.synchformer.config.temporal_resolution * segments}


def run_joint(args: argparse.Namespace) -> int:
    """`avflow cache joint`: every input checked and every clip probed before a codec loads."""
    from avflow.commands.options import StepBar, check_output
    from avflow.data.datasets import read_captions
    from avflow.encoders.text import check_text_extra
    from avflow.pipelines.default_model import default_model_dir, read_default_config

    out = check_output(args.out, (".safetensors",), overwrite=args.overwrite, inputs=(args.table,), what="OUT")
    folder = Path(args.model) if args.model is not None else default_model_dir()
    if args.model is not None and not folder.exists():
        raise WeightsError(f"--model {folder}: not found (a model folder holds config.json and joint.safetensors; "
                           "leave --model out for the shipped model)")  # fmt: skip
    try:
        config = read_default_config(folder)
    except WeightsError as exc:  # its line names the folder only: say it is --model's
        raise (type(exc)(f"--model {exc}") if args.model is not None else exc) from None
    check_text_extra(config.text_encoder)
    # the file stores rows, not ids: `dog/001.mp4` and `cat/001.mp4` are two clips
    records, report = read_captions(args.table, args.media, unique_ids=False)  # bad rows, missing files: one note

    from avflow.pipelines import joint_cache as jc

    records, too_long = jc.check_captions(records, config.text_encoder, config.joint.text_len)
    usable, unusable = jc.probe_clips(records, jc.clip_format(config))
    failed = jc.table_failures(report) + too_long + unusable  # each skipped, listed and counted
    if not usable:
        listed = jc.write_failed(jc.failed_list_path(out), failed)
        raise ConfigError(jc.no_usable_clip(out, failed, listed))

    from avflow.codecs.world import load_world_codecs
    from avflow.encoders.text import load_text_encoder
    from avflow.pipelines.default_model import check_codecs

    codecs = load_world_codecs(config.codec_dir(folder))
    codecs.check_trained_with(config.codecs_checksum, f"the model in {folder}")
    check_codecs(config, codecs, folder)
    text_encoder = load_text_encoder(config.text_encoder, max_len=config.joint.text_len)
    bar = StepBar("cache joint", unit="clip")  # on stderr: 10k clips are an hour of reading and encoding
    try:
        summary = jc.build_joint_cache(out, usable, failed, config=config, codecs=codecs, text_encoder=text_encoder,
                                       progress=bar)  # fmt: skip
    finally:
        bar.close()
    print(summary.line())
    return 0


def run(args: argparse.Namespace) -> int:
    from avflow.data.cache import FeatureCache

    if args.action == "joint":
        return run_joint(args)
    if args.action == "info":
        cache = FeatureCache(args.out)  # every shard's streams and shapes (headers only)
        streams = sorted(cache.streams)
        line = f"{cache.folder}: {len(cache)} clips, streams {', '.join(streams)}, weights {cache.checksum}"
        if cache.settings:
            line += ", " + ", ".join(f"{k} {v}" for k, v in cache.settings.items())
        partial = [f"{k} {cache.stream_counts[k]}/{len(cache)}" for k in streams if cache.stream_counts[k] < len(cache)]
        if partial:
            line += f" (clips with: {', '.join(partial)})"
        if cache.left_out:
            line += f"; {len(cache.left_out)} cached clips left out (no longer in the table)"
        print(line)
        return 0
    check_build_arguments(args)
    device = resolve_device(args.device)  # before the table is read (imports torch, not weights)

    import torch

    from avflow.codecs.audio_vae import AUDIO_VAE_CONFIGS, AudioVAE
    from avflow.codecs.mel import MEL_CONFIGS, MelSpectrogram
    from avflow.data.cache import MediaExtractor, build_cache, check_manifest, weights_checksum
    from avflow.encoders.features import Encoders
    from avflow.train import distributed as dist

    records, report = _records(args)
    if not records:  # before the models load and before anything in OUT is touched
        raise ConfigError(f"{report.summary()}: no usable clips, nothing built; the cache in {args.out} is unchanged")
    checksum = weights_checksum(args.clip_weights, args.synchformer_weights, args.vae_weights)
    settings = {"mode": args.mode, "duration": args.duration}
    check_manifest(args.out, checksum, f"mmaudio-{args.mode}", settings, args.overwrite)
    if args.source == "world" and records and not any(r.world.with_suffix(".mp4").is_file() for r in records):
        warnings.warn(MediaWarning(f"{args.media}: no mp4 previews (the world was made without --preview), so the "
                                   "cache gets audio and text features only, no CLIP or Synchformer features; "
                                   "`avflow world ... --preview` makes them"), stacklevel=1)  # fmt: skip
    info = dist.setup("cuda" if device.startswith("cuda") else "cpu")
    try:
        if info.is_main and not (report.bad_rows or report.missing):  # else its note has said it
            print(report.summary())
        device = info.device
        encoders = Encoders.from_pretrained(args.clip_weights, args.synchformer_weights, device=device)
        vae = AudioVAE.from_file(args.vae_weights, AUDIO_VAE_CONFIGS[args.mode]).to(device)
        mel = MelSpectrogram(MEL_CONFIGS[args.mode]).to(device)
        extractor = MediaExtractor(encoders, vae, mel, args.duration, device, video_lengths(encoders, args.duration))
        with torch.inference_mode():
            summary = build_cache(
                args.out,
                records,
                extractor,
                checksum,
                extractor_name=f"mmaudio-{args.mode}",
                settings=settings,
                shard_size=args.shard_size,
                rank=info.rank,
                world_size=info.world_size,
                overwrite=args.overwrite,
            )
        notes = extractor.notes()
        print(f"rank {info.rank}: {summary.line()}" + (f"; {notes}" if notes else ""))
    finally:
        dist.cleanup()
    return 0
