"""Editing one track's edit list in a finished mp4, without touching its samples: delaying it by an empty edit, or
ending its presentation earlier.

Why delay: AAC encoders put priming samples (1024) before the first real one, and an mp4 trims them with its edit list
(`elst` media_time). FFmpeg's mp4 muxer writes that trim only when a track starts at or before time 0; a track that
starts later gets an empty edit instead and its priming is presented. So a track that must start at t > 0 is written
from 0 (priming trimmed) and then delayed here by an empty edit in front of its edit list (ISO/IEC 14496-12 8.6.6):
the decoded track then starts at t with its first real sample. (FFmpeg's demuxer reports such a track's duration as
its media's, the 1024 priming samples included: its bound from the edit list counts the empty edit. It decodes the
same samples as for a track at 0, and the edit list presents exactly the track's length.)

Why end earlier: an mp4 cut short holds frames decoded before its first missing one but shown after it; they stay
(frames shown before may reference them) and the edit list stops presenting the track where the frames held end.

Only the `moov` box changes (it must follow the media data, as FFmpeg writes it): entries of `elst` change or are
added (`elst`, `edts`, `trak` and `moov` growing by their size); the track's `tkhd` and the movie's `mvhd` durations
follow.
"""

from __future__ import annotations

import math
import struct
from fractions import Fraction
from typing import BinaryIO

from avflow.errors import MediaError

EMPTY_EDIT = -1  # media_time of an empty edit
MOVIE_TIMESCALE = 1000  # units per second of the movie timeline (FFmpeg's default, asked for explicitly when writing)


def _boxes(data: bytes | bytearray, start: int, end: int):
    """(type, box start, payload start, box end) of the boxes in data[start:end] (32-bit sizes only)."""
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        if size < 8:
            raise MediaError(f"mp4 box {kind!r} at {pos} has a size this writer does not handle ({size})")
        yield kind, pos, pos + 8, pos + size
        pos += size


def _child(data: bytearray, parent: tuple, kind: bytes) -> tuple:
    found = [b for b in _boxes(data, parent[2], parent[3]) if b[0] == kind]
    if not found:
        raise MediaError(f"mp4: no {kind.decode()} box in {parent[0].decode()}")
    return found[0]


def _movie(file: BinaryIO) -> tuple[int, bytearray, bytes]:
    """(offset, bytes, what follows it) of the top-level `moov` box, which must come after `mdat`."""
    file.seek(0, 2)
    size = file.tell()
    pos, seen_mdat = 0, False
    while pos + 8 <= size:
        file.seek(pos)
        length, kind = struct.unpack(">I4s", file.read(8))
        if length == 1:
            length = struct.unpack(">Q", file.read(8))[0]
        elif length == 0:
            length = size - pos
        if kind == b"mdat":
            seen_mdat = True
        if kind == b"moov":
            if not seen_mdat:
                raise MediaError("mp4: moov before mdat; cannot grow it without moving the media data")
            file.seek(pos)
            return pos, bytearray(file.read(length)), file.read()
        pos += length
    raise MediaError("mp4: no moov box")


def delay_track(file: BinaryIO, track: int, seconds: float) -> float:
    """Insert an empty edit of `seconds` (rounded down to the movie timescale) in front of the edit list of the
    `track`-th `trak` (0-based, in file order) of the mp4 open in `file` (read + write). Returns the delay written."""
    offset, moov, tail = _movie(file)
    root = (b"moov", 0, 8, len(moov))
    mvhd = _child(moov, root, b"mvhd")
    version = moov[mvhd[2]]
    timescale_at = mvhd[2] + (20 if version == 1 else 12)
    timescale = struct.unpack_from(">I", moov, timescale_at)[0]
    ticks = int(seconds * timescale)  # movie timescale units, rounded down
    if ticks <= 0:
        return 0.0
    traks = [b for b in _boxes(moov, root[2], root[3]) if b[0] == b"trak"]
    if track >= len(traks):
        raise MediaError(f"mp4: no track {track} (it has {len(traks)})")
    trak = traks[track]
    edts = _child(moov, trak, b"edts")
    elst = _child(moov, edts, b"elst")
    elst_version = moov[elst[2]]
    entry = struct.pack(">QqI" if elst_version == 1 else ">IiI", ticks, EMPTY_EDIT, 0x00010000)  # rate 1.0
    count_at = elst[2] + 4
    count = struct.unpack_from(">I", moov, count_at)[0]
    struct.pack_into(">I", moov, count_at, count + 1)
    tkhd = _child(moov, trak, b"tkhd")
    _add_duration(moov, tkhd[2] + (28 if moov[tkhd[2]] == 1 else 20), moov[tkhd[2]] == 1, ticks)
    track_duration = _read_duration(moov, tkhd[2] + (28 if moov[tkhd[2]] == 1 else 20), moov[tkhd[2]] == 1)
    movie_duration_at = timescale_at + 4
    if _read_duration(moov, movie_duration_at, version == 1) < track_duration:
        _write_duration(moov, movie_duration_at, version == 1, track_duration)
    for box in (elst, edts, trak, root):  # each grows by one entry
        size_at = box[1]
        struct.pack_into(">I", moov, size_at, struct.unpack_from(">I", moov, size_at)[0] + len(entry))
    moov[count_at + 4 : count_at + 4] = entry
    file.seek(offset)
    file.write(bytes(moov) + tail)
    file.truncate()
    return ticks / timescale


def shorten_track(file: BinaryIO, track: int, seconds: Fraction | float) -> Fraction:
    """End the presentation of the `track`-th `trak` (0-based, in file order) of the mp4 open in `file` (read + write)
    `seconds` earlier (rounded up to the movie timescale) by shortening its last edit; a track without an edit list
    (its media presented whole from 0) is given one. The movie's duration becomes its longest track's. Returns the
    time cut."""
    offset, moov, tail = _movie(file)
    root = (b"moov", 0, 8, len(moov))
    mvhd = _child(moov, root, b"mvhd")
    timescale_at = mvhd[2] + (20 if moov[mvhd[2]] == 1 else 12)
    timescale = struct.unpack_from(">I", moov, timescale_at)[0]
    ticks = math.ceil(Fraction(seconds) * timescale)
    if ticks <= 0:
        return Fraction(0)
    if not any(b[0] == b"edts" for b in _boxes(moov, *_trak(moov, track)[2:])):
        _add_edit_list(moov, track)
    trak = _trak(moov, track)
    elst = _child(moov, _child(moov, trak, b"edts"), b"elst")
    wide = moov[elst[2]] == 1
    count = struct.unpack_from(">I", moov, elst[2] + 4)[0]
    last_at = elst[2] + 8 + (count - 1) * (20 if wide else 12)
    if count == 0 or _read_duration(moov, last_at, wide) <= ticks:
        raise MediaError(f"mp4: track {track}'s last edit is not longer than the {ticks / timescale} s to cut")
    _add_duration(moov, last_at, wide, -ticks)
    _add_duration(moov, *_track_duration_at(moov, trak), -ticks)
    traks = [b for b in _boxes(moov, 8, len(moov)) if b[0] == b"trak"]
    longest = max(_read_duration(moov, *_track_duration_at(moov, b)) for b in traks)
    _write_duration(moov, timescale_at + 4, moov[mvhd[2]] == 1, longest)
    file.seek(offset)
    file.write(bytes(moov) + tail)
    file.truncate()
    return Fraction(ticks, timescale)


def _trak(moov: bytearray, track: int) -> tuple:
    traks = [b for b in _boxes(moov, 8, len(moov)) if b[0] == b"trak"]
    if track >= len(traks):
        raise MediaError(f"mp4: no track {track} (it has {len(traks)})")
    return traks[track]


def _track_duration_at(moov: bytearray, trak: tuple) -> tuple[int, bool]:
    """(offset, 64-bit) of a `trak`'s `tkhd` duration: its presentation's length in the movie timescale."""
    tkhd = _child(moov, trak, b"tkhd")
    wide = moov[tkhd[2]] == 1
    return tkhd[2] + (28 if wide else 20), wide


def _add_edit_list(moov: bytearray, track: int) -> None:
    """Give the `track`-th `trak`, which has no edit list, the one it stands for: its media from 0, for the track's
    duration, at rate 1 (an `edts` after its `tkhd`, growing `trak` and `moov`)."""
    trak = _trak(moov, track)
    duration = _read_duration(moov, *_track_duration_at(moov, trak))
    wide = duration >= 2**32
    entry = struct.pack(">QqI" if wide else ">IiI", duration, 0, 0x00010000)
    elst = struct.pack(">I4sBxxxI", 16 + len(entry), b"elst", 1 if wide else 0, 1) + entry
    edts = struct.pack(">I4s", 8 + len(elst), b"edts") + elst
    for size_at in (trak[1], 0):
        struct.pack_into(">I", moov, size_at, struct.unpack_from(">I", moov, size_at)[0] + len(edts))
    tkhd_end = _child(moov, trak, b"tkhd")[3]
    moov[tkhd_end:tkhd_end] = edts


def _read_duration(data: bytearray, at: int, wide: bool) -> int:
    return struct.unpack_from(">Q" if wide else ">I", data, at)[0]


def _write_duration(data: bytearray, at: int, wide: bool, value: int) -> None:
    struct.pack_into(">Q" if wide else ">I", data, at, value)


def _add_duration(data: bytearray, at: int, wide: bool, ticks: int) -> None:
    _write_duration(data, at, wide, _read_duration(data, at, wide) + ticks)
