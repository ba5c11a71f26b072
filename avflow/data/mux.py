"""Write mp4s: encode frames (h264 + AAC), or remux a video's packets unchanged with a new AAC track (keeping,
replacing or mixing with the video's own audio)."""

from __future__ import annotations

import io
import math
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from fractions import Fraction
from pathlib import Path
from typing import IO

import av
import numpy as np
import torch

from avflow.data.audio import as_channels_first, resample
from avflow.data.audio_tracks import DEFAULT_EXISTING_AUDIO, EXISTING_AUDIO, mix_rate
from avflow.data.mp4_edits import MOVIE_TIMESCALE, delay_track, shorten_track
from avflow.data.video import (
    check_video,
    held_samples,
    main_video,
    open_media,
    probe,
    stream_origin,
    video_span,
)
from avflow.errors import MediaError, MediaWarning
from avflow.weights import atomic_write

MUX_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov"}
MP4_OPTIONS = {"movie_timescale": str(MOVIE_TIMESCALE)}
# x264's macroblock tree reads memory it never wrote: where the heap held other data (glibc with `avflow.heap`, or
# `glibc.malloc.perturb`), the same frames gave other bytes from run to run (decoded pixels up to 32/255 apart at
# 64x64 and 320x240). Without it the bytes are the same whatever the heap held.
X264_PARAMS = "mbtree=0"
AAC_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
# FFmpeg's AAC encoder defaults to 128 kb/s for stereo, which moved weak events' interaural cues (8 events of 4
# real-sound clips, docs/metrics.md: up to 2.45 dB of ILD and 205 us of ITD off the lossless mix, two sides flipped);
# at 128 kb/s per channel they stayed within 0.25 dB and 5 us. Binaural output keeps its image.
AAC_BITS_PER_CHANNEL = 128_000
AAC_LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}  # channel counts written as AAC as they are (others: mixed to stereo)
# a user's sound copied into a clip packet for packet: AAC, whose priming the mp4 muxer keeps in its edit list (decoded
# sample-exact); MP3's encoder delay it does not keep (the copy plays 1105 samples late), so MP3 is encoded afresh
COPIED_AUDIO_CODECS = ("aac",)
_NTSC = (Fraction(24000, 1001), Fraction(30000, 1001), Fraction(60000, 1001))
# "mix" over a source whose audio goes on this much past the video's end says so: the output's audio outlasts the
# video. Less is the usual (a camera's audio ends within a frame or an AAC frame of its video) and not worth a line.
MIX_PAST_END_NOTE_S = 0.1


def frame_rate(fps: float | Fraction) -> Fraction:
    """fps as an exact fraction; floats within 1e-3 of the NTSC rates (23.976, 29.97, 59.94) snap to them."""
    if isinstance(fps, Fraction):
        return fps
    for rate in _NTSC:
        if abs(float(rate) - fps) < 1e-3:
            return rate
    return Fraction(fps).limit_denominator(1001)


def _fit_length(audio: np.ndarray, n_samples: int) -> np.ndarray:
    """Trim, or pad with silence at the end, to exactly n_samples."""
    if audio.shape[1] >= n_samples:
        return audio[:, :n_samples]
    return np.concatenate([audio, np.zeros((audio.shape[0], n_samples - audio.shape[1]), np.float32)], axis=1)


def _encode_aac(
    output: av.container.OutputContainer, audio: np.ndarray, sample_rate: int, duration: Fraction, start: Fraction
) -> tuple[list[av.Packet], Fraction]:
    """Add an AAC stream to `output` holding `audio` fitted to `duration` seconds from `start`; return its packets and
    the delay that `avflow.data.mp4_edits.delay_track` must give the track once the file is written.

    AAC encoders put priming samples (1024 here) before the first real one; the mp4 muxer trims them only for a track
    that starts at or before 0. So a track that starts later is encoded from 0 (led by the sub-tick rest of `start` in
    silence) and delayed by an empty edit: its first sample of `audio` is presented at `start`, within a sample."""
    if sample_rate not in AAC_RATES:  # AAC only has these rates: go up to the next one
        target = next((r for r in AAC_RATES if r >= sample_rate), 96000)
        audio, sample_rate = resample(audio, sample_rate, target), target
    audio = _fit_length(audio, round(duration * sample_rate))
    delay = Fraction(math.floor(start * MOVIE_TIMESCALE), MOVIE_TIMESCALE) if start > 0 else Fraction(0)
    lead = round((start - delay) * sample_rate) if start > 0 else 0  # < 1 / MOVIE_TIMESCALE s of silence
    audio = np.concatenate([np.zeros((audio.shape[0], lead), np.float32), audio], axis=1)
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    layout = AAC_LAYOUTS[audio.shape[0]]
    stream = output.add_stream("aac", rate=sample_rate, layout=layout)
    stream.bit_rate = AAC_BITS_PER_CHANNEL * audio.shape[0]
    frame = av.AudioFrame.from_ndarray(audio, format="fltp", layout=layout)
    frame.sample_rate, frame.time_base = sample_rate, Fraction(1, sample_rate)
    frame.pts = round(min(start, Fraction(0)) * sample_rate)  # a start before 0 is trimmed with the priming
    return list(stream.encode(frame)) + list(stream.encode(None)), delay


def _packet_time(packet: av.Packet) -> Fraction:
    return Fraction(packet.dts if packet.dts is not None else packet.pts or 0) * packet.time_base


def _mux_interleaved(
    output: av.container.OutputContainer,
    source_packets: Iterable[av.Packet],
    audio_packets: list[av.Packet],
    audio_delay: Fraction = Fraction(0),
) -> Counter[int]:
    """Mux the source's packets in order, slipping each new audio packet in before the first later source packet
    (new audio packets are presented `audio_delay` after their timestamps). A damaged source packet the muxer refuses
    (an AAC frame whose ADTS header a broken MPEG-TS mangled: its bitstream filter fails) is skipped, as players skip
    it; returned: the count skipped per output stream index."""
    skipped: Counter[int] = Counter()
    pending = iter(audio_packets)
    audio_next = next(pending, None)
    for packet in source_packets:
        while audio_next is not None and _packet_time(audio_next) + audio_delay <= _packet_time(packet):
            output.mux(audio_next)
            audio_next = next(pending, None)
        try:
            output.mux(packet)
        except av.InvalidDataError:
            skipped[packet.stream.index] += 1
    while audio_next is not None:
        output.mux(audio_next)
        audio_next = next(pending, None)
    return skipped


def _mix_with_source(video_path: Path, audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int]:
    """`audio` (C, N) at `sample_rate` plus the source's first audio track (sample 0 at the first video frame), and
    the rate of the sum: the higher of the two (`mix_rate`; the source's top octaves are kept), over the
    longer of the two (the source goes on after a shorter new track, and past the video's end where it does), at the
    wider channel count (a source of more than two channels mixed down to stereo first), scaled down only if the sum
    would clip."""
    from avflow.data.audio import audio_channels, convert_channels, read_audio

    channels = max(audio.shape[0], min(audio_channels(video_path), 2))
    source, source_rate = read_audio(video_path, channels=channels)
    rate = mix_rate(sample_rate, source_rate)
    source, audio = resample(source.numpy(), source_rate, rate), resample(audio, sample_rate, rate)
    n = max(audio.shape[1], source.shape[1])
    mixed = convert_channels(_fit_length(audio, n), channels) + convert_channels(_fit_length(source, n), channels)
    peak = float(np.abs(mixed).max()) if mixed.size else 0.0
    return (mixed * (0.99 / peak) if peak > 0.99 else mixed).astype(np.float32), rate


ORDERED_LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1", 8: "7.1"}  # channel count -> FFmpeg's usual layout of it
# Tags each muxer writes for itself; every other file tag (title, comment, creation_time, location...) is copied.
MUXER_TAGS = frozenset({"major_brand", "minor_version", "compatible_brands", "encoder"})


def _os_error(exc: BaseException) -> OSError | None:
    """The operating system's refusal behind `exc`: itself, or for PyAV's "Error in PyAV callback" (our file object's
    write failed inside FFmpeg) the OSError it was raised while handling; None for FFmpeg's own errors."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and not isinstance(exc, av.FFmpegError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _write_file(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """`atomic_write(path, write)`, where the system refusing the bytes (a full disk, a quota, a read-only folder) is a
    one-line MediaError, "no space left on device writing OUT", not PyAV's "[Errno 1447131472] Error in PyAV callback:
    '.OUT.tmp3914'" (the OSError hidden in its context) or a traceback. Nothing is left at `path` either way."""
    try:
        atomic_write(path, write)
    except (av.error.PyAVCallbackError, OSError) as exc:
        cause = _os_error(exc)
        if cause is None:
            raise
        reason = (cause.strerror or str(cause) or type(cause).__name__).strip()
        raise MediaError(f"{reason[:1].lower()}{reason[1:]} writing {path}") from None


def _container_format(path: Path) -> str:
    """The muxer for an output file's suffix, or a one-line MediaError."""
    container_format = MUX_FORMATS.get(path.suffix.lower())
    if container_format is None:
        raise MediaError(f"{path}: can only write {', '.join(MUX_FORMATS)} videos")
    return container_format


def _extra_streams(source: av.container.InputContainer) -> list[av.stream.Stream]:
    """The streams besides the first video and the audio that `mux_audio` copies where the output can hold them:
    subtitles, cover art, further video tracks (another angle), data tracks (telemetry, KLV) and attachments (an
    MKV's subtitle fonts; no mp4 or mov holds them, so they are named as left out). A timecode track is not among
    them where the first video carries its `timecode` tag: the muxer writes the track again from that; nor is a
    chapter track (chapters are copied as chapters)."""
    first = main_video(source)
    timecode = "timecode" in first.metadata
    videos = [s for s in source.streams.video if s.index != first.index]  # cover art and further tracks
    data = [s for s in source.streams.data if not (timecode and "timecode" in s.metadata) and not _read_as_chapters(s)]
    return [*source.streams.subtitles, *videos, *data, *getattr(source.streams, "attachments", ())]


def _read_as_chapters(stream: av.stream.Stream) -> bool:
    """Whether the demuxer reads the stream itself, discarding its packets: an mp4's chapter track (the chapters are
    copied as such). PyAV before 18 does not tell; there such a track is named as a data track left out."""
    discard = getattr(av.stream, "Discard", None)
    return discard is not None and getattr(stream, "discard", None) == discard.all


def _stream_name(stream: av.stream.Stream) -> str:
    """What a stream is, for a message: "srt subtitles", "png cover art", "aac audio track", "klv data track",
    "attachment DejaVuSans.ttf"."""
    if stream.type == "data":
        return f"{stream.name} data track" if stream.name else "data track"
    if stream.type == "attachment":
        return f"attachment {stream.metadata['filename']}" if "filename" in stream.metadata else "attachment"
    if stream.type == "subtitle":
        return f"{stream.codec_context.name} subtitles"
    if stream.type == "audio":
        return f"{stream.codec_context.name} audio track"
    cover = stream.disposition & av.stream.Disposition.attached_pic
    return f"{stream.codec_context.name} {'cover art' if cover else 'video track'}"


def _metadata_options(metadata: dict[str, str]) -> dict[str, str]:
    """Muxer options that keep the source's file tags: a phone's keys in reverse-DNS form (an iPhone's
    `com.apple.quicktime.location.ISO6709`, an Android's `com.android.version`) live in QuickTime's `mdta` metadata,
    which the muxer writes only when asked (it dropped them, the place a video was shot among them)."""
    return {"movflags": "use_metadata_tags"} if any("." in key for key in _tags(metadata)) else {}


def _tags(metadata: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in metadata.items() if key not in MUXER_TAGS}


def _copy_stream(output: av.container.OutputContainer, stream: av.stream.Stream) -> av.stream.Stream:
    """A stream added to `output` for `stream`'s packets unchanged, with its tags (language, title) and disposition.
    Audio whose channels have no stated order (PCM in an AVI) is given the usual layout of its channel count: an mp4
    cannot describe "2 channels" and failed at its very end; a ValueError where there is none."""
    copy = _stream_like(output, stream)
    tag = _kept_tag(stream, output.format.name)
    if tag:
        copy.codec_context.codec_tag = tag
    if stream.type == "audio" and stream.codec_context.layout.name.endswith(" channels"):
        channels = stream.codec_context.channels
        if channels not in ORDERED_LAYOUTS:
            raise ValueError(f"{channels} audio channels in no stated order")
        copy.codec_context.layout = ORDERED_LAYOUTS[channels]
    copy.metadata.update(_track_tags(stream))
    copy.disposition = stream.disposition
    return copy


def _track_tags(stream: av.stream.Stream) -> dict[str, str]:
    """A source track's tags (language, title) as an output track is given them."""
    tags = _tags(stream.metadata)
    if "name" in tags:  # an mp4 track's title reads back as "name" and is written from "title"
        tags.setdefault("title", tags.pop("name"))
    return tags


def _kept_audio(source: av.container.InputContainer, existing_audio: str) -> list[av.stream.Stream]:
    """The source's audio tracks copied unchanged after the new one: all with "keep", all but the first (which
    the new track holds) with "mix", none with "replace"."""
    tracks = list(source.streams.audio)
    return {"keep": tracks, "mix": tracks[1:]}.get(existing_audio, [])


def _stream_like(output: av.container.OutputContainer, stream: av.stream.Stream) -> av.stream.Stream:
    """A stream added to `output` with `stream`'s codec parameters. PyAV looks up an encoder by the decoder's name,
    and a stream read by a decoder no encoder shares a name with (AV1 through libdav1d) takes the decoder's codec,
    which carries the same codec id: packets are copied, never encoded."""
    try:
        return output.add_stream_from_template(stream)
    except av.codec.codec.UnknownCodecError:
        return output.add_stream_from_template(stream, opaque=True)


def _muxer_takes(container_format: str, add: Callable[[av.container.OutputContainer], object]) -> bool:
    """Whether `container_format`'s muxer writes its header with the stream `add` puts into it: the muxer's own answer,
    on an empty file in memory (some streams are taken when added and refused only at the header)."""
    probe_output = av.open(io.BytesIO(), "w", format=container_format)
    try:
        add(probe_output)
        probe_output.start_encoding()
    except (ValueError, av.FFmpegError):
        return False
    finally:
        try:
            probe_output.close()
        except av.FFmpegError:  # a header that was never written
            pass
    return True


def _kept_tag(stream: av.stream.Stream, container_format: str) -> str | None:
    """The source video's codec tag where `container_format` takes it, else None (the muxer picks its own). A phone's
    HEVC is tagged 'hvc1', which Apple's players need; the mp4 muxer writes 'hev1' unless told. A tag the container
    does not take (an AVI's 'MJPG') is left to the muxer."""
    cover = stream.disposition & av.stream.Disposition.attached_pic
    tag = stream.codec_context.codec_tag.strip("\x00 ") if stream.type == "video" and not cover else ""

    def tagged(output: av.container.OutputContainer) -> None:
        _stream_like(output, stream).codec_context.codec_tag = tag

    return tag if tag and _muxer_takes(container_format, tagged) else None


def _fits(stream: av.stream.Stream, container_format: str) -> bool:
    """Whether `container_format` can hold `stream`'s packets unchanged."""
    return _muxer_takes(container_format, lambda output: _copy_stream(output, stream))


def _cut_at(source: av.container.InputContainer, stream: av.stream.Stream) -> int | None:
    """Of an mp4 / mov cut short, the file position of the stream's first sample not whole in the file (its index at
    the front lists more): that packet (part of a sample) and any after it are not copied, as the readers hold the
    samples before it (`avflow.data.video`). None where every sample is whole or the container has no such index."""
    held = held_samples(source, stream)
    if held is None:
        return None
    return stream.index_entries[held].pos if len(stream.index_entries) else 0


def _timed(packets: Iterable[av.Packet]) -> Iterable[av.Packet]:
    """`packets` where each data packet of no duration (KLV from an MPEG-TS) is given the time to the next one of its
    stream (the last one, the step before it): the mov muxer drops a last sample of no duration. Each such packet is
    held until the next of its stream comes (the muxer interleaves by time)."""
    held: dict[int, av.Packet] = {}
    steps: dict[int, int] = {}
    for packet in packets:
        if packet.stream.type != "data" or packet.duration or packet.dts is None:
            yield packet
            continue
        index = packet.stream_index
        before = held.pop(index, None)
        if before is not None:
            steps[index] = max(1, packet.dts - before.dts)
            before.duration = steps[index]
            yield before
        held[index] = packet
    for index, packet in held.items():
        packet.duration = steps.get(index, 1)
        yield packet


def left_out(video_path: str | Path, out_path: str | Path) -> list[str]:
    """The streams of `video_path` besides its video and audio that `mux_audio` cannot copy into `out_path`'s
    container (SRT subtitles from an mkv, a KLV data track from an MPEG-TS into an mp4), e.g. ["srt subtitles"]; the
    commands say so in their last line."""
    container_format = _container_format(Path(out_path))
    with open_media(Path(video_path)) as source:
        return [_stream_name(s) for s in _extra_streams(source) if not _fits(s, container_format)]


def check_copyable(
    video_path: str | Path,
    out_path: str | Path,
    existing_audio: str = DEFAULT_EXISTING_AUDIO,
    *,
    suggest_mov=True,
    audio_hint: str = "use --audio replace",
) -> None:
    """A one-line MediaError, before any work, when the streams `mux_audio` copies unchanged from `video_path` (its
    video; its audio tracks with "keep") cannot go into `out_path`'s container (VP8 or Theora video into an mp4;
    `suggest_mov`: saying so where a .mov would hold them, for a caller that can write one), ending with what to do
    (`audio_hint` for audio kept: the command line's option, or a page's words for its choice). Tried on an empty
    container in memory: the muxer's own answer, not a list of ours."""
    video_path, out_path = Path(video_path), Path(out_path)
    container_format = _container_format(out_path)
    with open_media(video_path) as source:
        video = main_video(source)
        if video is None:
            raise MediaError(f"{video_path}: no video stream")
        copied = [video, *_kept_audio(source, existing_audio)]
        for stream in copied:
            if not _fits(stream, container_format):
                hint = "convert the video first (e.g. to h264)" if stream.type == "video" else audio_hint
                if suggest_mov and container_format != "mov" and _fits(stream, "mov"):  # ProRes, PCM: QuickTime codecs
                    hint = f"write a .mov, which holds it, or {hint}"
                raise MediaError(f"{video_path}: its {stream.codec_context.name} {stream.type} cannot be copied "
                                 f"unchanged into an {out_path.suffix} file; {hint}")  # fmt: skip


def holding_suffix(video_path: str | Path, existing_audio: str = DEFAULT_EXISTING_AUDIO) -> str:
    """The suffix of an output named for the user (none given): ".mp4", or ".mov" where only a QuickTime file holds
    the streams `mux_audio` copies from `video_path` (ProRes, PCM kept with "keep": an editor's export). An unreadable
    file gets ".mp4": the checks that follow say what is wrong with it."""
    for suffix in (".mp4", ".mov"):
        try:
            check_copyable(video_path, Path(f"out{suffix}"), existing_audio)
        except MediaError:
            continue
        return suffix
    return ".mp4"


def mux_audio(
    video_path: str | Path,
    audio: torch.Tensor | np.ndarray,
    sample_rate: int,
    out_path: str | Path,
    *,
    existing_audio: str = DEFAULT_EXISTING_AUDIO,
    notes: list[str] | None = None,
) -> Path:
    """Write out_path with video_path's video packets unchanged (no re-encode) and `audio` (C, N) as a new AAC track,
    the first and default one, padded with silence or trimmed to exactly the video's span: its sample 0 is presented
    with the first video frame, whatever time that frame starts at. Of an mp4 cut short, the packets whose bytes are
    all in the file are copied, and the video is presented for the span the readers give it (`video_span`; frames
    held but shown after a missing one stay, unshown, as frames before them may reference them).

    `existing_audio` says what happens to the source's own audio tracks: "keep" copies them unchanged after the new
    track, "replace" drops them, "mix" adds the first one into the new track (fitted to the video's span) over the
    longer of the two, past the video's end where the source's audio goes on (as "keep" keeps it; said where it is
    over MIX_PAST_END_NOTE_S), at the higher sample rate (the new track takes its language and title) and copies the
    others unchanged after it.
    Subtitles, cover art, further video tracks and data tracks are copied where out_path's container can hold them
    (`left_out` names those it cannot), and the chapters and the file's and tracks' tags always. The file is written
    atomically: on any failure nothing is left at out_path. What is handled rather than refused (a damaged source
    packet the muxer cannot take is skipped) is said in a `MediaWarning`, or appended to `notes` where given
    (without the file's name)."""
    video_path, out_path = Path(video_path), Path(out_path)
    if existing_audio not in EXISTING_AUDIO:
        raise MediaError(f"existing audio policy must be one of {', '.join(EXISTING_AUDIO)}, got {existing_audio!r}")
    container_format = _container_format(out_path)
    data = as_channels_first(audio, str(out_path))
    if out_path.resolve() == video_path.resolve():
        raise MediaError(f"{out_path}: output must differ from the input video")
    info = probe(video_path)
    check_video(info)
    check_copyable(video_path, out_path, existing_audio)
    start, end = video_span(video_path)
    length, said = end - start, []
    if existing_audio == "mix" and info.has_audio:
        fitted = _fit_length(data, round(length * int(sample_rate)))
        data, sample_rate = _mix_with_source(video_path, fitted, int(sample_rate))
        past = Fraction(data.shape[1], sample_rate) - length
        if past > MIX_PAST_END_NOTE_S:
            said.append(f"its audio goes on {float(past):.2f} s past the video's end, and so does the mixed track")
        length = max(length, Fraction(data.shape[1], sample_rate))

    def write(file) -> None:
        with open_media(video_path) as source:
            options = {**MP4_OPTIONS, **_metadata_options(source.metadata)}
        output = av.open(file, "w", format=container_format, options=options)
        # opened afresh: demuxing starts at the file's first packet, so kept audio from before the first frame stays
        with open_media(video_path) as source, output:
            in_video = main_video(source)
            kept = _kept_audio(source, existing_audio)
            extras = [s for s in _extra_streams(source) if _fits(s, container_format)]
            output.metadata.update(_tags(source.metadata))
            output.set_chapters(source.chapters())  # the muxer writes its own chapter track
            out_streams = {in_video.index: _copy_stream(output, in_video)}
            audio_packets, delay = _encode_aac(output, data, int(sample_rate), length, start)
            output.streams.audio[0].disposition = av.stream.Disposition.default
            if existing_audio == "mix" and source.streams.audio:  # the sum is the first track's, with the new sound
                output.streams.audio[0].metadata.update(_track_tags(source.streams.audio[0]))
            for stream in kept:
                out_streams[stream.index] = _copy_stream(output, stream)
                out_streams[stream.index].disposition = av.stream.Disposition(0)
            for stream in extras:  # after the audio (an mp4 keeps cover art as a tag, not a track)
                out_streams[stream.index] = _copy_stream(output, stream)

            cuts = {s.index: cut for s in (in_video, *kept, *extras) if (cut := _cut_at(source, s)) is not None}
            video_end = start  # the end of the last frame copied

            def source_packets() -> Iterable[av.Packet]:
                nonlocal video_end
                for packet in source.demux(in_video, *kept, *extras):
                    if packet.dts is None and packet.pts is None:  # end-of-stream marker, or the cover's one picture
                        if packet.stream.disposition & av.stream.Disposition.attached_pic and packet.size:
                            packet.stream = out_streams[packet.stream_index]
                            output.mux(packet)  # the muxer keeps it as the cover; it has no time to interleave by
                        continue
                    if packet.pos >= cuts.get(packet.stream_index, math.inf):  # not whole: an mp4 cut short
                        continue
                    if packet.stream_index == in_video.index and packet.pts is not None:
                        shown_to = Fraction(packet.pts + (packet.duration or 0)) * packet.time_base
                        video_end = max(video_end, shown_to)
                    packet.stream = out_streams[packet.stream_index]
                    yield packet

            names = {copy.index: _stream_name(source.streams[index]) for index, copy in out_streams.items()}
            skipped = _mux_interleaved(output, _timed(source_packets()), audio_packets, delay)
            for index, n in skipped.items():
                damaged[names[index]] = damaged.get(names[index], 0) + n
            cut_short = in_video.index in cuts
        if cut_short and video_end > end:  # frames held but shown after a missing one: presented up to it
            shorten_track(file, 0, video_end - end)
        if delay > 0:  # the new track is the file's second (after the video)
            written = delay_track(file, 1, float(delay))
            if abs(written - delay) > Fraction(1, 10 * MOVIE_TIMESCALE):
                raise MediaError(f"{out_path}: the muxer wrote an unexpected movie timescale; audio delay {written} s")

    damaged: dict[str, int] = {}
    _write_file(out_path, write)
    for name, n in damaged.items():
        packets = f"{n} damaged packet{'s' if n > 1 else ''}"
        said.append(f"{packets} of its {name} skipped (the muxer refused them; players skip them too)")
    for note in said:
        if notes is not None:
            notes.append(note)
        else:
            warnings.warn(MediaWarning(f"{video_path}: {note}"), stacklevel=2)
    return out_path


def _checked_frames(path: Path, frames: torch.Tensor | np.ndarray, fps: float | Fraction) -> np.ndarray:
    """(T, H, W, 3) uint8 frames as numpy, else a one-line MediaError (h264's yuv420p needs an even size)."""
    frames = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise MediaError(f"{path}: frames must be uint8 (T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
    n, height, width = frames.shape[:3]
    if n == 0:
        raise MediaError(f"{path}: no frames to write")
    if height % 2 or width % 2:
        raise MediaError(f"{path}: h264 (yuv420p) needs an even width and height, got {width}x{height}")
    if not fps > 0:
        raise MediaError(f"{path}: fps must be > 0, got {fps}")
    return frames


def _h264(output: av.container.OutputContainer, frames: np.ndarray, rate: Fraction, crf: int,
          preset: str) -> Callable[[], Iterable[av.Packet]]:  # fmt: skip
    """Add an h264 stream to `output` (the file's first, added before any other) and return what yields its packets:
    frame k at k / rate."""
    n, height, width = frames.shape[:3]
    stream = output.add_stream("libx264", rate=rate)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.options = {"crf": str(crf), "preset": preset, "x264-params": X264_PARAMS}

    def packets() -> Iterable[av.Packet]:
        for k in range(n):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[k]), format="rgb24")
            frame.pts, frame.time_base = k, 1 / rate
            yield from stream.encode(frame)
        yield from stream.encode(None)

    return packets


def write_video(
    path: str | Path,
    frames: torch.Tensor | np.ndarray,
    fps: float | Fraction,
    audio: torch.Tensor | np.ndarray | None = None,
    sample_rate: int | None = None,
    *,
    crf: int = 18,
    preset: str = "medium",
) -> Path:
    """Encode (T, H, W, 3) uint8 frames as h264 (yuv420p) at fps; `audio` (C, N) becomes an AAC track fitted to the
    video's duration T / fps. Frame k has pts k / fps. H and W must be even (a yuv420p requirement). Written
    atomically."""
    path = Path(path)
    frames = _checked_frames(path, frames, fps)
    if audio is not None and not sample_rate:
        raise MediaError(f"{path}: audio given without a sample_rate")
    container_format = _container_format(path)
    rate = frame_rate(fps)

    def write(file) -> None:
        with av.open(file, "w", format=container_format, options=MP4_OPTIONS) as output:
            video_packets = _h264(output, frames, rate, crf, preset)
            audio_packets = []
            if audio is not None:
                data = as_channels_first(audio, str(path))
                audio_packets, _ = _encode_aac(output, data, int(sample_rate), len(frames) / rate, Fraction(0))
            _mux_interleaved(output, video_packets(), audio_packets)

    _write_file(path, write)
    return path


def _copies_whole(source: Path, seconds: float | None, container_format: str) -> bool:
    """Whether the first audio track of `source` goes into a clip packet for packet: all of it is used (`seconds`
    None, or not less than it lasts), its codec is one copied exactly (COPIED_AUDIO_CODECS), the output's container
    holds it, and its first sample is at 0 (and so is the first video frame of a file with video), where the clip's
    first frame is."""
    info = probe(source)
    if seconds is not None and seconds < (info.audio_duration or 0.0) - 1e-3:
        return False
    with open_media(source) as container:
        stream, video = container.streams.audio[0], main_video(container)
        if stream.codec_context.name not in COPIED_AUDIO_CODECS or stream_origin(stream) != 0:
            return False
        if video is not None and stream_origin(video) != 0:
            return False
        return _fits(stream, container_format)


def write_video_with_audio_of(
    path: str | Path,
    frames: torch.Tensor | np.ndarray,
    fps: float | Fraction,
    source: str | Path,
    *,
    seconds: float | None = None,
    crf: int = 18,
    preset: str = "medium",
) -> str:
    """Encode frames as `write_video` does, with the first audio track of `source` as the user gave it, not a copy
    at a model's rate: its packets unchanged where all of it is used and they can be copied exactly
    (`_copies_whole`), else all of it or its first `seconds` (sample 0 at the first video frame of a file with
    video, as `read_audio` reads it) encoded as AAC at its own sample rate and channels (mono, stereo or 5.1; others
    mixed to stereo). Written atomically. Returned: what the file's audio is, for the command's last line, e.g.
    "the aac track of song.m4a copied unchanged (44100 Hz, mono)"."""
    from avflow.data.audio import audio_channels, read_audio

    path, source = Path(path), Path(source)
    frames = _checked_frames(path, frames, fps)
    container_format = _container_format(path)
    rate = frame_rate(fps)
    if _copies_whole(source, seconds, container_format):
        with open_media(source) as container:
            codec = container.streams.audio[0].codec_context
            said = f"the {codec.name} track of {source.name} copied unchanged ({codec.sample_rate} Hz, "
            said += f"{codec.layout.name})"

        def write(file) -> None:
            with av.open(file, "w", format=container_format, options=MP4_OPTIONS) as output, \
                    open_media(source) as container:  # fmt: skip
                video_packets = _h264(output, frames, rate, crf, preset)
                heard = container.streams.audio[0]
                track = _copy_stream(output, heard)
                track.disposition = av.stream.Disposition.default
                packets = [p for p in container.demux(heard) if p.dts is not None or p.pts is not None]
                for packet in packets:
                    packet.stream = track
                _mux_interleaved(output, video_packets(), packets)

        _write_file(path, write)
        return said
    channels = audio_channels(source)
    audio, sample_rate = read_audio(source, channels=None if channels in AAC_LAYOUTS else 2, seconds=seconds)
    data = audio.numpy()
    layout = AAC_LAYOUTS[data.shape[0]]
    first = "" if seconds is None else f"the first {data.shape[1] / sample_rate:.2f} s of "
    mixed = "" if channels in AAC_LAYOUTS else f" (its {channels} channels mixed to stereo)"
    encoded = next((r for r in AAC_RATES if r >= sample_rate), 96000)
    at = f" at {encoded} Hz" if encoded != sample_rate else ""
    said = f"{first}the {sample_rate} Hz {layout} audio of {source.name}{mixed} encoded as AAC{at}"

    def write(file) -> None:
        with av.open(file, "w", format=container_format, options=MP4_OPTIONS) as output:
            video_packets = _h264(output, frames, rate, crf, preset)
            length = Fraction(data.shape[1], sample_rate)  # its own length: not padded to the last frame's end
            audio_packets, _ = _encode_aac(output, data, sample_rate, length, Fraction(0))
            _mux_interleaved(output, video_packets(), audio_packets)

    _write_file(path, write)
    return said
