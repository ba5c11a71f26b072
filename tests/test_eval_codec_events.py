"""Visual events and object tracks of 64 px clips that went through H.264 (4:2:0 chroma), as `avflow world --preview`,
`avflow generate` and the shipped model write them: the same events and objects as the lossless frames."""

from __future__ import annotations

import numpy as np
import torch

from avflow.data.media import read_video, write_video
from avflow.eval.events import EventConfig, brightening_events, contact_events
from avflow.eval.physics import track_objects

FPS = 16.0


def _bounce(p: float, hi: float) -> int:
    """Position ``p`` folded into [0, hi] (an object bouncing between two walls)."""
    q = p % (2 * hi)
    return int(round(q if q < hi else 2 * hi - q))


def _clip(background, movers, appear, T: int = 24, appear_at: int = 16) -> np.ndarray:
    """(T, 64, 64, 3) uint8: squares ``movers`` = [(colour, size, x0, y0, vx, vy)] crossing the frame fast (5-7 px a
    frame, bouncing off the side walls) on a flat background, and ``appear`` = (colour, size, y, x) from frame
    ``appear_at`` on: the one event."""
    frames = np.tile(np.array(background, dtype=np.uint8), (T, 64, 64, 1))
    for k in range(T):
        for colour, size, x0, y0, vx, vy in movers:
            x, y = _bounce(x0 + vx * k, 64 - size), int(round(y0 + vy * k))
            frames[k, y : y + size, x : x + size] = colour
        if k >= appear_at:
            colour, size, y, x = appear
            frames[k, y : y + size, x : x + size] = colour
    return frames


def _h264(frames: np.ndarray, tmp_path) -> np.ndarray:
    """The frames written as the world previews are (`write_video`: libx264, yuv420p) and decoded back."""
    path = write_video(tmp_path / "clip.mp4", torch.from_numpy(frames), FPS)
    decoded = read_video(path).frames.numpy()
    assert decoded.shape == frames.shape
    return decoded


def test_h264_edges_of_fast_small_objects_make_no_flash(tmp_path):
    # before: the decoded clip had flashes at frames 1, 3, 6, 9, 11, 19, 21 and 23, and none at the appearance (16):
    # 4:2:0 chroma gives an object's edge pixels colours no frame held, and they moved with it
    movers = [((150, 60, 200), 7, 55.5, 2, -6.5, 0.5), ((245, 140, 30), 5, 51.2, 16, -6.6, -0.8),
              ((40, 210, 220), 6, 48.1, 44, -5.2, -0.2)]  # fmt: skip
    frames = _clip((46, 52, 20), movers, ((240, 220, 40), 6, 30, 28))
    lossless = brightening_events(frames, FPS)
    decoded = brightening_events(_h264(frames, tmp_path), FPS)
    assert np.allclose(lossless.times, [16 / FPS]), lossless.times * FPS
    assert np.allclose(decoded.times, [16 / FPS]), decoded.times * FPS
    assert abs(decoded.x[0] - lossless.x[0]) < 2.0


def test_h264_edge_colours_are_not_tracked_as_objects(tmp_path):
    # before: the decoded clip gave a 4th track, a dark red (108, 17, 18)-like colour of background pixels next to the
    # red square (its chroma, their luma), which stole pixels from the objects it was tracked beside
    movers = [((220, 40, 40), 7, 4, 10, 5, 0), ((50, 90, 230), 7, 4, 30, 7, 0)]
    frames = _clip((33, 50, 40), movers, ((245, 140, 30), 8, 48, 30))
    lossless, decoded = track_objects(frames), track_objects(_h264(frames, tmp_path))
    assert lossless.centers.shape[1] == decoded.centers.shape[1] == 3
    order = [int(np.nanargmin(np.nanmean(np.linalg.norm(decoded.centers - lossless.centers[:, [k]], axis=-1), axis=0)))
             for k in range(3)]  # fmt: skip
    assert sorted(order) == [0, 1, 2]
    assert np.nanmedian(np.linalg.norm(decoded.centers[:, order] - lossless.centers, axis=-1)) < 0.5


def _bouncing_square(size: int = 7, x0: float = 40.0, vx: float = -1.5, T: int = 32) -> np.ndarray:
    """(T, 64, 64, 3) uint8: an anti-aliased red square falling (1 px/frame²) and bouncing on a floor (restitution
    0.7) and drifting to the left wall, on a dark background."""
    frames = np.tile(np.array([51, 34, 32], np.float32), (T, 64, 64, 1))
    yy, xx = np.mgrid[0:64, 0:64] + 0.5
    y, vy, x, floor, steps = 5.0, 0.0, x0, 54.0, 8
    for k in range(T):
        cover = (np.clip(np.minimum(yy + 0.5 - y, y + size - yy + 0.5), 0, 1)
                 * np.clip(np.minimum(xx + 0.5 - x, x + size - xx + 0.5), 0, 1))[..., None]  # fmt: skip
        frames[k] = frames[k] * (1 - cover) + np.array([220, 40, 40]) * cover
        for _ in range(steps):
            vy, x = vy + 1.0 / steps, x + vx / steps
            y += vy / steps
            if y + size > floor:
                y, vy = 2 * (floor - size) - y, -0.7 * vy
            if x < 0:  # the left wall
                x, vx = -x, -vx
    return np.round(frames).astype(np.uint8)


def test_h264_small_bouncing_object_keeps_its_area_and_contacts(tmp_path):
    # before: the decoded clip gave a second track (edge colours) and its square's area jumped by up to 11 % from
    # frame to frame (the colour projection of edge pixels whose chroma leans to the background): 2 contacts of 3
    frames = _bouncing_square()
    lossless, decoded = track_objects(frames), track_objects(_h264(frames, tmp_path))
    assert lossless.centers.shape[1] == decoded.centers.shape[1] == 1
    area = decoded.areas[:, 0]
    assert np.max(np.abs(np.diff(area)) / area[1:]) < 0.08
    want = contact_events(lossless, FPS).times
    got = contact_events(decoded, FPS).times
    assert want.size == 3 and got.size == 3 and np.max(np.abs(got - want)) < 0.005, (want, got)


def test_an_object_appearing_beside_one_of_its_colour_is_a_flash(tmp_path):
    # before: the new square's colour and luma level were half present already (the slow square of the same colour:
    # new fraction about 0.42 per pixel), so the 4:2:0 rule took its own pixels as the old colours it mixed from and
    # the appearance made no event, lossless or decoded
    twin = (60, 170, 230)
    movers = [(twin, 7, 8.0, 40, 0.4, 0.0), ((245, 140, 30), 5, 51.2, 16, -6.6, -0.8)]
    frames = _clip((30, 34, 52), movers, (twin, 6, 12, 40))
    for name, clip in (("lossless", frames), ("decoded", _h264(frames, tmp_path))):
        events = brightening_events(clip, FPS)
        assert events.times.size == 1 and events.times[0] == 16 / FPS, (name, events.times * FPS)
        assert abs(events.x[0] - 43.0) < 2.0, (name, events.x)


def test_an_object_appearing_beside_one_of_a_near_colour_is_a_flash(tmp_path):
    # before: a near colour already on screen (the larger slow square, within the 3x3x3 colour bins) made the new
    # square's colour only about 0.3 new, under `novel_fraction`; so its pixels were taken as old colours to mix from
    # and the appearance made no event, lossless or decoded (as `appear_fraction` = 1.1 still does)
    movers = [((60, 170, 230), 9, 8.0, 40, 0.4, 0.0), ((245, 140, 30), 5, 51.2, 16, -6.6, -0.8)]
    frames = _clip((30, 34, 52), movers, ((72, 162, 220), 6, 12, 40))
    for name, clip in (("lossless", frames), ("decoded", _h264(frames, tmp_path))):
        assert brightening_events(clip, FPS, EventConfig(appear_fraction=1.1)).times.size == 0, name
        events = brightening_events(clip, FPS)
        assert events.times.size == 1 and events.times[0] == 16 / FPS, (name, events.times * FPS)
        assert abs(events.x[0] - 43.0) < 2.0, (name, events.x)


def test_a_square_whose_pixel_count_wobbles_makes_no_appearance():
    # a fast square covering 12 x 12 px in some frames and 10 x 10 in the others (as a world square's pure colour
    # does with its sub-pixel position): its leading edge is 0.3 new at the large frames, enough for a patch that
    # may appear (without the lasting check, `appear_growth` = -10, each is a flash), but it does not last
    T, big = 24, (3, 10, 15)
    frames = np.tile(np.array((30, 34, 52), dtype=np.uint8), (T, 64, 64, 1))
    for k in range(T):
        size = 12 if k in big else 10
        x = _bounce(4 + 6.0 * k, 64 - size)
        frames[k, 26 - size // 2 : 26 - size // 2 + size, x : x + size] = (60, 170, 230)
        frames[k, 50:57, 40:47] = (245, 140, 30)
    assert brightening_events(frames, FPS, EventConfig(appear_growth=-10.0)).times.size > 0
    events = brightening_events(frames, FPS)
    assert events.times.size == 0, events.times * FPS


def _fade_in(first_alpha: float, T: int = 24, at: int = 15) -> np.ndarray:
    """(T, 64, 64, 3) uint8: a square appearing at frame ``at`` at ``first_alpha`` opacity, whole from ``at + 1`` on,
    while a square of its first frame's colour (its blend with the background) has been on screen all along."""
    background, colour = np.array((30, 34, 52), np.float32), np.array((230, 120, 40), np.float32)
    blend = np.round(first_alpha * colour + (1 - first_alpha) * background).astype(np.uint8)
    frames = np.tile(background.astype(np.uint8), (T, 64, 64, 1))
    frames[:, 8:18, 44:54] = blend
    frames[at, 40:47, 12:19] = blend
    frames[at + 1 :, 40:47, 12:19] = colour.astype(np.uint8)
    return frames


def test_a_fade_in_found_at_its_second_frame_is_timed_at_its_first(tmp_path):
    # before (as `fade_share` = 1.1 still does): the first frame's colour, a blend already on screen, was no new
    # colour, so the fade-in was found a frame late, and its sound, played at its first frame, a frame early
    frames = _fade_in(0.45)
    for name, clip in (("lossless", frames), ("decoded", _h264(frames, tmp_path))):
        late = brightening_events(clip, FPS, EventConfig(fade_share=1.1))
        assert late.times.size == 1 and late.times[0] == 16 / FPS, (name, late.times * FPS)
        events = brightening_events(clip, FPS)
        assert events.times.size == 1 and events.times[0] == 15 / FPS, (name, events.times * FPS)
        assert abs(events.x[0] - 15.5) < 2.0, (name, events.x)


def test_a_fast_square_that_flashes_is_timed_at_its_flash(tmp_path):
    # guard: a square moving 6.5 px a frame (beyond the rise radius, so its leading edge rises every frame) that
    # flashes from frame 16 on is one event at 16; its edge rose at 15 too, so a rule on that share alone (without
    # `fade_step`/`fade_tolerance`: the pixels at 15 must be a blend of 14 and 16) put the event at 15
    T = 24
    frames = np.tile(np.array((30, 34, 52), dtype=np.uint8), (T, 64, 64, 1))
    for k in range(T):
        x = _bounce(4 + 6.5 * k, 64 - 8)
        frames[k, 28:36, x : x + 8] = (250, 230, 160) if k >= 16 else (150, 110, 40)
    for name, clip in (("lossless", frames), ("decoded", _h264(frames, tmp_path))):
        events = brightening_events(clip, FPS)
        assert events.times.size == 1 and events.times[0] == 16 / FPS, (name, events.times * FPS)
