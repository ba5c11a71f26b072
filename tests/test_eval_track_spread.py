"""Contacts only from frames where a track is one object: the tracker follows a colour, and two objects of near
colours share one track whose centroid jumps between them as one of them leaves the colour's tolerance. On the
real-sound clips (discs drifting at constant speed: no contact at all) such tracks made 46 contacts in 16 of 300
clips; `Tracks.spread` tells one compact object (1 for a disc) from pixels in separate places."""

from __future__ import annotations

import numpy as np

from avflow.eval.events import contact_events
from avflow.eval.physics import Tracks, track_objects

FPS = 20.0


def _discs(centres: list[tuple[float, float]], radius: float = 5.0, T: int = 6) -> np.ndarray:
    """(T, 64, 96, 3) uint8: discs of one colour moving down 8 px a frame on a dark background (so the median
    background holds none of them)."""
    ys, xs = np.mgrid[0:64, 0:96] + 0.5
    frames = np.full((T, 64, 96, 3), 20, dtype=np.uint8)
    for k in range(T):
        for cx, cy in centres:
            frames[k][np.hypot(xs - cx, ys - cy - 8 * k) <= radius] = (200, 60, 40)
    return frames


def test_spread_is_one_for_a_disc_and_large_for_two_places():
    one = track_objects(_discs([(30.0, 10.0)]))
    two = track_objects(_discs([(20.0, 10.0), (70.0, 10.0)]))
    assert one.spread.shape == one.areas.shape and two.centers.shape[1] == 1  # both discs in one colour track
    assert np.all(np.abs(one.spread - 1.0) < 0.25)
    assert np.all(two.spread > 10.0)


def _tracks(x: np.ndarray, spread: np.ndarray | None) -> Tracks:
    centers = np.stack([x, np.full_like(x, 30.0)], axis=-1)[:, None]  # (T, 1, 2)
    return Tracks(centers, np.full((x.size, 1), 150.0), (96, 128), None if spread is None else spread[:, None])


def test_a_centroid_jumping_between_two_objects_makes_no_contact():
    x = np.full(40, 34.0)
    x[[13, 19, 20, 21]] = 41.5  # the track takes in a second disc for a frame, then for three
    spread = np.where(x > 40, 12.0, 1.0)
    assert len(contact_events(_tracks(x, None), FPS)) >= 1  # read as impacts when nothing tells the frames apart
    assert len(contact_events(_tracks(x, spread), FPS)) == 0


def test_a_bounce_of_one_compact_object_stays():
    k = np.arange(40.0)
    x = 20.0 + np.where(k < 20, 4.0 * k, 160.0 - 4.0 * k)  # into a wall at frame 20 and back
    contacts = contact_events(_tracks(x, np.full(40, 1.1)), FPS)
    assert len(contacts) == 1 and abs(contacts.times[0] - 20 / FPS) < 0.5 / FPS
