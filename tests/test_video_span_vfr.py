"""The end of a video read from its packets: the frame with the latest pts, not the longest pts + duration."""

from __future__ import annotations

from fractions import Fraction
from types import SimpleNamespace

from avflow.data import video


def _packet(pts, duration):
    return SimpleNamespace(pts=pts, duration=duration, is_discard=False)


def test_vfr_with_b_frames_ends_at_the_last_shown_frame():
    # as in an mp4 of variable rate with B-frames: durations are DTS differences, so a frame before a gap in the
    # decoding order "lasts" past the last frame (pts 31744 + 15872 = 3.1 s, the last frame ends at 2.967 s)
    stream = SimpleNamespace(time_base=Fraction(1, 15360), average_rate=Fraction(450, 29))
    packets = [_packet(14848, 512), _packet(30720, 512), _packet(31744, 15872), _packet(44032, 1024),
               _packet(45056, 512)]  # fmt: skip
    assert video._last_packet_end(packets, stream) == Fraction(45056 + 512, 15360)


def test_last_packet_without_duration_gets_one_frame():
    stream = SimpleNamespace(time_base=Fraction(1, 1000), average_rate=Fraction(25))
    packets = [_packet(0, 40), _packet(80, 40), _packet(40, 40), _packet(120, 0)]
    assert video._last_packet_end(packets, stream) == Fraction(120, 1000) + Fraction(1, 25)
    assert video._last_packet_end([], stream) is None
