"""Delaying one track of a finished mp4 by an empty edit, without touching its samples.

Why: AAC encoders put priming samples (1024) before the first real one, and an mp4 trims them with its edit list
(`elst` media_time). FFmpeg's mp4 muxer writes that trim only when a track starts at or before time 0; a track that
starts later gets an empty edit instead and its priming is presented. So a track that must start at t > 0 is written
from 0 (priming trimmed) and then delayed here by an empty edit in front of its edit list (ISO/IEC 14496-12 8.6.6):
the decoded track then starts at t with its first real sample.

Only the `moov` box changes (it must follow the media data, as FFmpeg writes it): the `elst` gains one entry; `elst`,
`edts`, `trak` and `moov` grow by its size; the track's `tkhd` and the movie's `mvhd` durations grow by the delay.
"""

from __future__ import annotations

import struct
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


def _read_duration(data: bytearray, at: int, wide: bool) -> int:
    return struct.unpack_from(">Q" if wide else ">I", data, at)[0]


def _write_duration(data: bytearray, at: int, wide: bool, value: int) -> None:
    struct.pack_into(">Q" if wide else ">I", data, at, value)


def _add_duration(data: bytearray, at: int, wide: bool, ticks: int) -> None:
    _write_duration(data, at, wide, _read_duration(data, at, wide) + ticks)
