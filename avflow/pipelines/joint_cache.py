"""`avflow cache joint`: the training file of the joint text-to-audio+video model from one's own clips.

The file has the layout `scripts/train_default_v2.py` (`cache_split`) writes for world clips, which `avflow train
default_joint_v2_cycle data.train.args.file=FILE` reads: `streams.video` (N, C, T', H', W') from the model's video
codec, `streams.left` / `streams.right` (N, n, C) from its binaural audio codec, `cond.text` (N, S, D) /
`cond.text_mask` (N, S) from its text encoder, and the codecs' checksum in the safetensors metadata. The clip format
(duration, fps, size, sample rate), the codecs and the text encoder are the model folder's, so the file fits it.

Each clip's first `duration` seconds are used; one up to `TOLERANCE_S` shorter is padded (audio with silence, video
with its last frame), as `avflow cache build` does; a shorter one, one without video or sound, or one that cannot be
read is skipped and listed in `OUT.failed.tsv`, as is a row of the caption table that is bad or names no file, and a
caption longer than the model's text encoder reads (it would be cut, as `avflow generate` refuses it). A frame of
another aspect is centre-cropped to the model's before it is scaled; a mono track is copied to both ears; a track of
more than two channels is downmixed to stereo from its channel layout (a 5.1 track's centre goes into both ears).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from avflow.data.cache import TOLERANCE_S
from avflow.data.datasets import ClipRecord, ReadReport
from avflow.errors import AvflowError, ConfigError, MediaError, first_line
from avflow.pipelines.default_model import DefaultModelConfig

CHUNK = 4  # clips read and encoded at a time: the memory of a few clips, not of the whole set
Progress = Callable[[int, int], None]  # (clips done, clips to read and encode)
Failed = tuple[str, str, str]  # a skipped clip or row of OUT.failed.tsv: (clip id, file, reason)


@dataclass(frozen=True, kw_only=True)
class ClipFormat:
    """What one clip of the training file is: the model folder's duration, frame rate, frame size, sample rate."""

    duration: float
    fps: float
    height: int
    width: int
    sample_rate: int

    @property
    def frames(self) -> int:
        return round(self.duration * self.fps)

    @property
    def samples(self) -> int:
        return round(self.duration * self.sample_rate)

    def size(self) -> str:
        return f"{self.width}x{self.height}"


def clip_format(config: DefaultModelConfig) -> ClipFormat:
    """The clip format of a model folder's config."""
    return ClipFormat(duration=config.duration, fps=config.fps, height=config.height, width=config.width,
                      sample_rate=config.sample_rate)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class UsableClip:
    """A clip that probing found usable: its record, and whether it is longer than the format or of another aspect."""

    record: ClipRecord
    longer: bool
    cropped: bool


@dataclass(frozen=True, kw_only=True)
class ClipData:
    """One clip read in the model's format: video (3, T, H, W) in [-1, 1], audio (2, samples); how its sound was
    made two ears (`mono`: one channel copied; `downmixed`: more than two channels mixed down to stereo)."""

    video: torch.Tensor
    audio: torch.Tensor
    mono: bool
    downmixed: bool


@dataclass
class JointCacheSummary:
    """What a build did, for its one summary line."""

    out: Path
    fmt: ClipFormat
    written: int = 0
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (clip id, file, reason)
    cut: int = 0  # clips longer than `duration`: their first `duration` s used
    cropped: int = 0  # frames of another aspect: centre-cropped to the model's
    mono: int = 0  # mono sound copied to both ears
    downmixed: int = 0  # more than two channels: downmixed to stereo from their layout
    failed_list: Path | None = None

    def line(self) -> str:
        d = f"{self.fmt.duration:g} s"
        listed = f" (listed in {self.failed_list})" if self.failed_list else ""
        parts = [f"{self.out}: {self.written} clips written", f"{len(self.failed)} skipped{listed}",
                 f"{self.cut} longer than {d} cut to their first {d}",
                 f"{self.cropped} of another aspect centre-cropped to {self.fmt.size()}",
                 f"{self.mono} mono copied to both ears"]  # fmt: skip
        if self.mono:  # the model learns binaural sound: say what a copied track teaches it
            parts[-1] += " (no left-right cues: the model learns binaural sound, these clips teach it centred sound)"
        if self.downmixed:
            parts.append(f"{self.downmixed} of more than 2 channels downmixed to stereo")
        return ", ".join(parts)


def failed_list_path(out: str | Path) -> Path:
    """`OUT.failed.tsv` beside the training file `OUT.safetensors`."""
    return Path(out).with_suffix(".failed.tsv")


def table_failures(report: ReadReport) -> list[Failed]:
    """The rows `read_captions` dropped, as rows of `OUT.failed.tsv`: a bad row (no clip id: the table and its line
    as the file) and a row naming no file in the media folder."""
    bad = [("", f"{report.source}:{line}", reason) for line, reason in report.bad_rows]
    return bad + [(clip_id, path, "file not found in the media folder") for clip_id, path in report.missing]


def check_captions(records: list[ClipRecord], text_encoder: str, most: int) -> tuple[list[ClipRecord], list[Failed]]:
    """The records whose caption the text encoder reads whole (`most` tokens, counted as `avflow generate` counts a
    prompt: its tokenizer alone, no weights), and (id, file, reason) of the others, which it would cut silently."""
    from avflow.pipelines.generate import check_prompt_tokens, prompt_tokens

    counts = {text: prompt_tokens(text, text_encoder) for text in {r.caption for r in records if r.caption}}
    kept, failed = [], []
    for record in records:
        try:
            if record.caption:
                check_prompt_tokens(counts[record.caption], most, "the caption")
        except AvflowError as exc:
            failed.append((str(record.id), str(record.video or record.audio), first_line(exc)))
        else:
            kept.append(record)
    return kept, failed


def probe_clip(record: ClipRecord, fmt: ClipFormat) -> UsableClip:
    """A clip's streams and length checked against the format without decoding it; a MediaError says why it is
    not usable (no video or sound, shorter than `duration` beyond the tolerance, unreadable)."""
    from avflow.data.media import probe

    path = record.video or record.audio
    info = probe(path)
    if not info.has_video or info.n_frames == 0:
        raise MediaError(f"{path}: no video stream")
    if not info.has_audio:
        raise MediaError(f"{path}: no audio stream")
    heard = info.audio_duration if info.audio_duration is not None else info.duration
    for what, seconds in (("video", info.duration), ("audio", heard)):
        if seconds < fmt.duration - TOLERANCE_S:
            raise MediaError(f"{path}: {what} shorter than {fmt.duration:g} s ({seconds:.2f} s)")
    longer = max(info.duration, heard) > fmt.duration + TOLERANCE_S
    cropped = info.width * fmt.height != info.height * fmt.width
    return UsableClip(record=record, longer=longer, cropped=cropped)


def probe_clips(records: list[ClipRecord], fmt: ClipFormat) -> tuple[list[UsableClip], list[tuple[str, str, str]]]:
    """The usable clips, and (id, file, reason) of every other one."""
    usable, failed = [], []
    for record in records:
        try:
            usable.append(probe_clip(record, fmt))
        except (AvflowError, OSError, ValueError) as exc:
            failed.append((str(record.id), str(record.video or record.audio), first_line(exc)))
    return usable, failed


def read_frames(path: Path, fmt: ClipFormat) -> torch.Tensor:
    """The first `duration` s of a video at the format's fps, centre-cropped to its aspect and scaled to its size,
    as (3, T, H, W) in [-1, 1]; up to `TOLERANCE_S` short: its last frame repeated."""
    from avflow.data.media import read_video

    frames = read_video(path, fps=fmt.fps, size=(fmt.height, fmt.width), mode="crop", duration=fmt.duration).frames
    short = fmt.frames - len(frames)
    if short > max(1, round(TOLERANCE_S * fmt.fps)):
        raise MediaError(f"{path}: only {len(frames)} of {fmt.frames} frames could be read at {fmt.fps:g} fps")
    if short > 0:
        frames = torch.cat([frames, frames[-1:].expand(short, *frames.shape[1:])])
    return frames[: fmt.frames].permute(3, 0, 1, 2).float() / 127.5 - 1.0


def read_sound(path: Path, fmt: ClipFormat) -> tuple[torch.Tensor, int]:
    """The first `duration` s of a file's sound at the format's sample rate as (2, samples) (up to `TOLERANCE_S`
    short: padded with silence), and its channel count (1: copied to both ears; more than 2: downmixed to stereo
    from its layout by `read_audio`, so a 5.1 track's centre, where speech usually is, is heard, not dropped)."""
    from avflow.data.audio import audio_channels
    from avflow.data.media import read_audio

    channels = audio_channels(path)  # from the header: the file is decoded once
    mixed = 2 if channels > 2 else None  # more than two: downmixed from its layout
    wave, _ = read_audio(path, fmt.sample_rate, mixed, seconds=fmt.duration)  # (C, n), at the model's rate
    have = wave.shape[1]
    if have < fmt.samples - round(TOLERANCE_S * fmt.sample_rate):
        raise MediaError(f"{path}: audio shorter than {fmt.duration:g} s ({have / fmt.sample_rate:.2f} s)")
    ears = wave.expand(2, -1) if channels == 1 else wave
    ears = torch.nn.functional.pad(ears, (0, max(0, fmt.samples - have)))
    return ears[:, : fmt.samples].contiguous(), channels


def read_clip(clip: UsableClip, fmt: ClipFormat) -> ClipData:
    """A usable clip's video and sound in the format (MediaError where decoding fails)."""
    path = clip.record.video or clip.record.audio
    video = read_frames(path, fmt)
    audio, channels = read_sound(path, fmt)
    return ClipData(video=video, audio=audio, mono=channels == 1, downmixed=channels > 2)


def encode_chunk(clips: list[ClipData], captions: list[str | None], codecs, text_encoder) -> dict[str, torch.Tensor]:
    """Latents and text states of a few clips (`cache_split`'s layout). A clip without a caption gets the empty
    condition (zero states, no token), as the model's `empty_conditions`."""
    video = torch.stack([c.video for c in clips])  # (B, 3, T, H, W)
    audio = torch.stack([c.audio for c in clips])  # (B, 2, samples)
    audio = audio[..., : codecs.audio.latent_length(audio.shape[-1]) * codecs.audio.samples_per_latent]
    ears = codecs.audio.encode(audio)
    states, mask = text_encoder([c or "" for c in captions])
    none = torch.tensor([c is None for c in captions])
    states, mask = states.masked_fill(none[:, None, None], 0.0), mask.masked_fill(none[:, None], False)
    return {"streams.video": codecs.video.encode(video), "streams.left": ears["left"], "streams.right": ears["right"],
            "cond.text": states, "cond.text_mask": mask}  # fmt: skip


def chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def write_failed(path: Path, failed: list[tuple[str, str, str]]) -> Path | None:
    """Every skipped clip (id, file, reason) into `path`, atomically; a list from an earlier build goes when none
    was skipped. The path written, else None."""
    from avflow.weights import atomic_write

    if not failed:
        path.unlink(missing_ok=True)
        return None

    def cell(value: str) -> str:  # one line, no tab: a reason or a name of several lines stays one cell
        return " ".join(str(value).replace("\t", " ").splitlines())

    rows = ["id\tfile\treason"] + ["\t".join(cell(x) for x in row) for row in failed]
    atomic_write(path, lambda f: f.write(("\n".join(rows) + "\n").encode()))
    return path


def build_joint_cache(
    out: Path,
    usable: list[UsableClip],
    failed: list[tuple[str, str, str]],
    *,
    config: DefaultModelConfig,
    codecs,
    text_encoder: Callable,
    chunk: int = CHUNK,
    progress: Progress | None = None,
) -> JointCacheSummary:
    """Read and encode the usable clips `chunk` at a time, then write `out` (atomically, with the codecs' checksum)
    and `OUT.failed.tsv`. A clip that fails to decode is skipped and listed too; none left is a one-line error.
    `progress(done, total)` after each chunk (clips read, whether written or skipped, of all usable ones)."""
    from avflow.weights import save_safetensors

    fmt = clip_format(config)
    summary = JointCacheSummary(out=out, fmt=fmt, failed=list(failed))
    parts: dict[str, list[torch.Tensor]] = {}
    done = 0
    if progress is not None:  # the bar shows before the first chunk is read
        progress(0, len(usable))
    with torch.no_grad():
        for group in chunks(usable, chunk):
            read, captions = [], []
            for clip in group:
                try:
                    data = read_clip(clip, fmt)
                except (AvflowError, OSError, ValueError) as exc:
                    path = clip.record.video or clip.record.audio
                    summary.failed.append((str(clip.record.id), str(path), first_line(exc)))
                    continue
                read.append(data)
                captions.append(clip.record.caption)
                summary.cut += clip.longer
                summary.cropped += clip.cropped
                summary.mono += data.mono
                summary.downmixed += data.downmixed
            if read:
                for key, value in encode_chunk(read, captions, codecs, text_encoder).items():
                    parts.setdefault(key, []).append(value)
                summary.written += len(read)
            done += len(group)
            if progress is not None:
                progress(done, len(usable))
    summary.failed_list = write_failed(failed_list_path(out), summary.failed)
    if not summary.written:
        raise ConfigError(no_usable_clip(out, summary.failed, summary.failed_list))
    tensors = {key: torch.cat(values) for key, values in parts.items()}
    metadata = {"codecs_checksum": codecs.checksum,
                "clip_format": json.dumps({"duration": fmt.duration, "fps": fmt.fps, "height": fmt.height,
                                           "width": fmt.width, "sample_rate": fmt.sample_rate,
                                           "text_encoder": config.text_encoder})}  # fmt: skip
    save_safetensors(tensors, out, metadata=metadata)
    return summary


def no_usable_clip(out: Path, failed: list[tuple[str, str, str]], listed: Path | None) -> str:
    """The one-line error when every clip was skipped (none: the table names none)."""
    if not failed:
        return f"no usable clip: the caption table names none; {out} not written"
    clip_id, file, reason = failed[0]
    first = f" (first: {clip_id or file}: {reason}; all listed in {listed})"
    return f"no usable clip: all {len(failed)} skipped{first}; {out} not written"
