"""Visual events that a sound can be synchronised to: flashes and appearances (brightening), cuts, and contacts.

Not any change is an event. A flash turning off, a fade-out, a slow drift of the light or an object sliding by make
no event; a flash turning on, an object appearing, a cut to new content and a bounce do.

Brightening (flashes, appearances, cuts): frames are block-averaged to at most ``analysis_width`` pixels wide. A pixel
of frame ``k`` rises when some colour channel exceeds by more than ``threshold`` the largest value of that channel
within ``radius·W`` pixels in frame ``k − 1`` (``max_c [f_k(p, c) − max_{|q − p| ≤ r} f_{k−1}(q, c)]``, so noise and
darkening never rise). It brightens in proportion to how new its colour is to the whole frame: with ``h_k(b)`` the
number of pixels whose colour falls in the 3×3×3 colour bins (``bin`` levels wide) around bin ``b``, the new fraction
is ``max(0, h_k(b) − h_{k−1}(b)) / h_k(b)``. An object that moves keeps its colours (its leading edge rises, but the
frame holds no more of its colour than before), one that appears or flashes adds colours. Decoded video (H.264 and
most codecs store 4:2:0: luma per pixel, chroma once per 2×2 pixels, interpolated back) gives the pixels near an edge
the luma of their own side and the chroma of both sides: colours no frame held, which change as the object moves (a
64 px clip's 4-7 px objects are mostly edge; such pixels made flashes out of motion, :func:`_mixes_old`). So a pixel
counts as old, whatever its colour's new fraction, when its luma level is mostly old (the same new fraction over
``bin``-wide luma levels, below ½) and its chroma (``B − Y``, ``R − Y``) lies within the range of the old colours
within ``chroma_reach`` source pixels: the mostly old pixels of frame ``k`` (new fraction below ½, itself included) and
all of frame ``k − 1``. A pixel of frame ``k`` that rises with a new fraction of at least ``novel_fraction`` is no old
colour to mix from, even below ½: an object appearing beside one of its colour (its colour then half present, about
0.4 new per pixel) would otherwise lend its own chroma to itself and make no event. An object beside one of a near
colour (within the 3×3×3 bins) is less new still, 0.3-0.4, as is the leading edge of a square whose pixel count
wobbles with its sub-pixel position (an 11 px square covers 100 to 144 pixels of its colour): a rising patch whose
inner pixels (all 8 neighbours rising) are at least ``appear_fraction`` new is no old colour either when it lasts
(:func:`_appearing`): the pixels near its colour, fewest over the ``appear_frames + 1`` frames from ``k`` on, exceed
the most over the ``appear_frames`` before by ``appear_growth`` of the patch. Frame ``k`` is an event when
the brightened area is at least ``min_area`` of the frame and frame ``k − 1`` was not one (a fade-in is one event, at
its first frame); covering ``global_area`` or more it is a cut or a full-frame flash, with no side. The event time is
``k / fps`` (the frame's start), its ``x`` the brightening-weighted centroid. A fade-in's first frame can brighten too
little to count (an object at 40-70 % opacity: its blend with the background is no new colour), so it would be found
a frame late; where at least ``fade_share`` of the pixels that frame ``k`` brightens already rose (by ``threshold``)
in frame ``k − 1`` on their way to their colour in ``k`` (a blend of their colours in ``k − 2`` and ``k``:
:func:`_fade_share`), the event time is ``(k − 1) / fps``. The blend test keeps an object that moves faster than the
radius (its leading edge rises by its own colour) and then flashes at its flash; of about 2100 event starts on
real-sound and world clips only the two fade-ins had a share above 0.05 of pixels that rose the frame before (0.22
and 0.49; docs/metrics.md).

Contacts: abrupt velocity changes of tracked objects (bounces, walls, collisions), located to sub-frame precision
by intersecting the motion before and after (:func:`contact_events`). What moves a tracked centroid without an impact
is left out: a change of the visible area (occlusion, a flash), a track that jitters more than it moves, a change
the object did not move into, and anything around a brightening (:func:`detect`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import label, maximum_filter, minimum_filter, uniform_filter

from avflow.eval.inputs import check_frames
from avflow.eval.physics import LUMA, Tracks, _chunks, track_objects

KINDS = ("flash", "global", "contact", "truth")


@dataclass(frozen=True, kw_only=True)
class EventConfig:
    analysis_width: int = 64  # frames are block-averaged to at most this width for brightening
    radius: float = 0.06  # neighbourhood (fraction of the frame width) a pixel must outshine to rise
    threshold: float = 24.0  # rise above the neighbourhood (0..255)
    bin: float = 16.0  # colour bin width (0..255 per channel) of the colour-mass comparison
    chroma_reach: float = 2.0  # source px whose colours 4:2:0 chroma mixes into a pixel (2×2 samples, interpolated)
    novel_fraction: float = 0.4  # a rising pixel whose colour is this new lends no chroma to the 4:2:0 mix test
    appear_fraction: float = 0.25  # a rising patch whose inner pixels' colour is this new may be an appearance
    appear_colour: float = 20.0  # its colour's pixels: within this RGB distance (0..255) of its inner pixels' median
    appear_frames: int = 3  # ... counted in this many frames before it and (one more) from it on
    appear_growth: float = 0.5  # an appearance: the fewest from it on exceed the most before by this share of it
    min_area: float = 0.002  # brightened fraction of the frame that makes an event
    fade_share: float = 0.1  # an event whose brightened pixels this share faded in the frame before starts there
    fade_step: tuple[float, float] = (0.1, 0.9)  # part of the way to its colour a fading pixel went the frame before
    fade_tolerance: float = 16.0  # ... along the line between its colours, off it by at most this (RGB distance)
    global_area: float = 0.3  # from this fraction on: a cut or full-frame flash (no side)
    contact_threshold: float = 0.045  # velocity change (fraction of the width per frame) that makes an impact
    contact_area_change: float = 0.2  # largest frame-to-frame change of an object's visible area around an impact
    contact_max_jitter: float = 2.0  # tracks jittering more than this (see `jitter`) give no contacts
    contact_max_spread: float = 2.0  # frames where a track's pixels spread more (`Tracks.spread`) are no position
    contacts: bool = True  # also detect contacts of tracked objects
    flash_frames: int = 5  # contacts from 2 frames before to this many + 1 after a brightening are tracker glitches

    def __post_init__(self) -> None:
        if self.appear_frames < 1 or self.appear_colour <= 0:
            raise ValueError("event config needs appear_frames >= 1 and appear_colour > 0")


@dataclass(frozen=True)
class VisualEvents:
    """Events of one clip, all ``(E,)``, sorted by time: ``times`` (s), ``kinds`` (one of :data:`KINDS`), ``x`` (px
    from the left, NaN when the event has no side), ``width`` of the frames (px); ``curve`` is the brightened area per
    frame (for timelines)."""

    times: np.ndarray
    kinds: np.ndarray
    x: np.ndarray
    width: int
    curve: np.ndarray

    def __len__(self) -> int:
        return int(self.times.size)

    @property
    def azimuth(self) -> np.ndarray:
        """Degrees, negative = left (docs/conventions.md: ``(x / W − 0.5)·90°``); NaN without a side."""
        return (self.x / self.width - 0.5) * 90.0


def _block_mean(frames: np.ndarray, width: int) -> tuple[np.ndarray, int]:
    """(T, H, W, 3) -> (T, H/f, W/f, 3) float32 averaged over f×f blocks, f = ceil(W / width); returns the factor."""
    f = max(1, int(np.ceil(frames.shape[2] / width)))
    if f == 1:
        return np.asarray(frames, dtype=np.float32), 1
    T, H, W, C = frames.shape
    h, w = H // f, W // f
    out = np.zeros((T, h, w, C), dtype=np.float32)
    for i in range(f):
        for j in range(f):
            out += frames[:, i : h * f : f, j : w * f : f]
    return out / (f * f), f


class BlockMeans:
    """``frames`` ``(T, H, W, 3)`` block-averaged as :func:`_block_mean` does, computed for the frames asked for
    (``view[a:b]``, ``view[::k]``) rather than for the whole clip at once: a float copy of a long video's analysis
    frames is no longer held (287 MB per minute of 64 px frames, for the brightening and again for the tracker)."""

    def __init__(self, frames: np.ndarray, width: int):
        self.frames, self.width = frames, width
        T, H, W, C = frames.shape
        self.factor = max(1, int(np.ceil(W / width)))
        f = self.factor
        self.shape = (T, H // f, W // f, C) if f > 1 else (T, H, W, C)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: slice) -> np.ndarray:
        if not isinstance(index, slice):
            raise TypeError("BlockMeans takes slices of frames")
        return _block_mean(self.frames[index], self.width)[0]


def _rise(plane: np.ndarray, r: int) -> np.ndarray:
    """``plane[k] − max of plane[k − 1] within at least r pixels`` for ``plane`` ``(T, h, w)`` with even ``h, w``:
    the neighbourhood maximum runs on 2×2 max-pooled frames with radius ``ceil(r / 2)`` (a quarter of the work; the
    box grows by at most a pixel). Returns ``(T − 1, h, w)``."""
    T, h, w = plane.shape
    pooled = plane[:-1].reshape(T - 1, h // 2, 2, w // 2, 2).max(axis=(2, 4))  # (T-1, h/2, w/2)
    r2 = -(-r // 2)
    near = maximum_filter(pooled, size=(1, 2 * r2 + 1, 2 * r2 + 1), mode="nearest")
    return (plane[1:].reshape(T - 1, h // 2, 2, w // 2, 2) - near[:, :, None, :, None]).reshape(T - 1, h, w)


def _new_fraction(codes: np.ndarray, bins: tuple[int, ...]) -> np.ndarray:
    """Per pixel of frames 1..t, the new fraction of its colour (module docstring): ``codes`` ``(t + 1, h, w)`` are
    flat indices into a histogram of shape ``bins`` (``(n, n, n)`` colours, ``(n,)`` luma levels); the mass of a bin
    is the pixel count of the 3 (per axis) bins around it. Returns ``(t, h, w)`` float32 in [0, 1]."""
    t = codes.shape[0] - 1
    size = int(np.prod(bins))
    offsets = (np.arange(t + 1, dtype=np.int64) * size)[:, None, None]
    hist = np.bincount((codes + offsets).ravel(), minlength=(t + 1) * size).reshape((t + 1,) + bins)
    mass = uniform_filter(hist.astype(np.float32), size=(1,) + (3,) * len(bins), mode="constant") * 3 ** len(bins)
    del hist
    new = (np.maximum(mass[1:] - mass[:-1], 0.0) / np.maximum(mass[1:], 1.0)).reshape(t, -1)  # (t, size)
    return np.take_along_axis(new, codes[1:].reshape(t, -1), axis=1).reshape(codes[1:].shape)


def _luma(frames: np.ndarray) -> np.ndarray:
    """BT.601 luma ``(..., h, w)`` of float frames ``(..., h, w, 3)`` (one plane at a time)."""
    r, g, b = (float(v) for v in LUMA)
    return r * frames[..., 0] + g * frames[..., 1] + b * frames[..., 2]


def _mixes_old(
    pair: np.ndarray, luma: np.ndarray, fresh: np.ndarray, old_luma: np.ndarray, reach: int, novel: np.ndarray
) -> np.ndarray:
    """``(h, w)`` bool: the pixels of frame ``pair[1]`` (``pair`` ``(2, h, w, 3)``: a frame and the one before, with
    their ``luma`` ``(2, h, w)``) that 4:2:0 video could have mixed from old colours: a mostly old luma level
    (``old_luma``) and each chroma difference (``B − Y``, ``R − Y``) within the range of the old colours within
    ``reach`` px — the pixels of the frame whose colour is mostly old (``fresh < ½``, the pixel itself included) and
    not ``novel`` (rising with a colour partly new, ``(h, w)`` bool: an object that appears beside one of its colour),
    and every pixel of the frame before (what an object that moved, or the edge of the picture, left). A decoded pixel
    keeps its own luma but takes its chroma from the 2×2 blocks around it: at an object's edge a mix of object and
    background, a colour no frame held that is no flash. A flash or an object that appears has a new luma level, or
    chroma that no old colour nearby has."""
    old = (fresh < 0.5) & ~novel
    size = 2 * reach + 1
    ok = old_luma.copy()
    for channel in (2, 0):
        diff = pair[..., channel] - luma  # (2, h, w)
        hi = np.maximum(maximum_filter(np.where(old, diff[1], -np.inf), size=size, mode="nearest"),
                        maximum_filter(diff[0], size=size, mode="nearest"))  # fmt: skip
        lo = np.minimum(minimum_filter(np.where(old, diff[1], np.inf), size=size, mode="nearest"),
                        minimum_filter(diff[0], size=size, mode="nearest"))  # fmt: skip
        ok &= (diff[1] >= lo) & (diff[1] <= hi)
    return ok


def _appearing(x, k: int, up: np.ndarray, fresh: np.ndarray, cfg: EventConfig) -> np.ndarray:
    """``(h, w)`` bool: the rising pixels (``up``) of frame ``k`` of ``x`` ``(T, h, w, 3)`` in patches that appear
    (module docstring): connected patches of rising pixels at least ``appear_fraction`` new (``fresh``) that hold
    such a pixel with all 8 neighbours rising, and after which the frame keeps more of the patch's colour."""
    partly = up & (fresh >= cfg.appear_fraction)
    inner = minimum_filter(up, size=3, mode="nearest") & partly
    out = np.zeros_like(up)
    if not inner.any():
        return out
    patches, n = label(partly & maximum_filter(inner, size=3, mode="nearest"), structure=np.ones((3, 3)))
    m = cfg.appear_frames
    before, after = np.asarray(x[max(0, k - m) : k]), np.asarray(x[k : k + m + 1])  # (<=m, h, w, 3), (<=m+1, ...)
    for i in range(1, n + 1):
        patch = patches == i
        colour = np.median(after[0][patch & inner], axis=0)  # (3,)
        near = [int((np.linalg.norm(f - colour, axis=-1) < cfg.appear_colour).sum()) for f in (*before, *after)]
        if min(near[len(before) :]) - max(near[: len(before)]) >= cfg.appear_growth * patch.sum():
            out |= patch
    return out


def _fade_share(x, k: int, rose: np.ndarray, lit: int, cfg: EventConfig) -> float:
    """Of the ``lit`` pixels that frame ``k`` of ``x`` ``(T, h, w, 3)`` brightens, the share that rose in frame
    ``k − 1`` (``rose`` ``(h, w)`` bool) on the way to their colour in frame ``k``: a step of ``fade_step`` of the
    change from frame ``k − 2`` to ``k``, off that line by at most ``fade_tolerance`` (a blend of the two, as a fade
    draws; not the edge of an object that moved in before it flashed)."""
    if k < 2:
        return 0.0
    f = np.asarray(x[k - 2 : k + 1], dtype=np.float32)[:, rose]  # (3, n, 3): frames k − 2, k − 1, k at those pixels
    d, e = f[2] - f[0], f[1] - f[0]  # (n, 3)
    alpha = (e * d).sum(-1) / np.maximum((d * d).sum(-1), 1e-6)  # (n,)
    off = np.linalg.norm(e - alpha[:, None] * d, axis=-1)
    lo, hi = cfg.fade_step
    return float(((alpha >= lo) & (alpha <= hi) & (off <= cfg.fade_tolerance)).sum() / max(1, lit))


def _brightening(x, factor: int, width: int, fps: float, cfg: EventConfig) -> VisualEvents:
    """Brightening events of block-averaged frames ``x`` ``(T, h, w, 3)`` (``factor`` px per block, ``width`` of the
    original frames): an array or a :class:`BlockMeans`, read in chunks of frames (each quantity is per frame or per
    pair of frames, so the chunks give the whole clip's values exactly)."""
    T, h, w, _ = x.shape
    if T < 2:
        return VisualEvents(np.zeros(0), np.zeros(0, dtype=object), np.zeros(0), width, np.zeros(T))
    r = max(1, int(round(cfg.radius * w)))
    n = int(np.ceil(256 / cfg.bin))
    reach = max(1, int(np.ceil(cfg.chroma_reach / factor)))  # in analysis pixels
    he, we = h + h % 2, w + w % 2
    area = np.zeros(T)  # (T,) brightened area of each frame (frame 0: none)
    weights: dict[int, np.ndarray] = {}  # frame -> (w,) column weights of its brightening, where it may be an event
    lead: dict[int, tuple] = {}  # frame -> ((h, w) its brightened pixels that rose in the frame before too, lit count)
    rose = None  # (h, w) the pixels that rose in the last frame of the previous chunk
    for part in _chunks(T - 1, h, w):
        a, b = part.start, part.stop  # transitions a..b-1: frame k + 1 against frame k
        xs = np.asarray(x[a : b + 1])  # (t + 1, h, w, 3)
        t = b - a
        if (he, we) != (h, w):
            xs = np.pad(xs, ((0, 0), (0, he - h), (0, we - w), (0, 0)), mode="edge")
        rise = np.full((t, he, we), -np.inf, dtype=np.float32)
        codes = np.zeros((t + 1, he, we), dtype=np.int32)
        for c in range(3):  # one contiguous colour plane at a time
            plane = np.ascontiguousarray(xs[..., c])  # (t + 1, he, we)
            np.maximum(rise, _rise(plane, r), out=rise)
            codes = codes * n + np.minimum((plane * (1.0 / cfg.bin)).astype(np.int32), n - 1)
        del plane
        rise, codes = rise[:, :h, :w], np.ascontiguousarray(codes[:, :h, :w])
        fresh = _new_fraction(codes, (n, n, n))  # (t, h, w)
        del codes
        seen = xs[:, :h, :w]  # (t + 1, h, w, 3)
        y = _luma(seen)  # (t + 1, h, w)
        luma_fresh = _new_fraction(np.minimum((y * (1.0 / cfg.bin)).astype(np.int32), n - 1), (n,))  # (t, h, w)
        for j in np.flatnonzero(((rise > cfg.threshold) & (fresh > 0.0)).any(axis=(1, 2))):  # frames that may brighten
            up = rise[j] > cfg.threshold
            novel = (up & (fresh[j] >= cfg.novel_fraction)) | _appearing(x, a + j + 1, up, fresh[j], cfg)
            mixed = _mixes_old(seen[j : j + 2], y[j : j + 2], fresh[j], luma_fresh[j] < 0.5, reach, novel)
            fresh[j][mixed] = 0.0
        del xs, seen, y, luma_fresh
        rising = rise > cfg.threshold  # (t, h, w)
        bright = np.where(rising, fresh, 0.0)  # (t, h, w) brightened fraction of each pixel
        del fresh
        area[a + 1 : b + 1] = bright.mean(axis=(1, 2))
        for j in np.flatnonzero(area[a + 1 : b + 1] >= cfg.min_area):
            weights[a + 1 + int(j)] = (bright[j] * rise[j]).sum(axis=0)  # (w,)
            if area[a + int(j)] >= cfg.min_area:
                continue  # the frame before is an event too: this one starts none (no fade share needed)
            lit, before = bright[j] > 0, rising[j - 1] if j else rose
            if before is not None and (before & lit).any():
                lead[a + 1 + int(j)] = (before & lit, int(lit.sum()))
        rose = rising[-1].copy()
    hit = area >= cfg.min_area
    starts = np.flatnonzero(hit & ~np.concatenate([[False], hit[:-1]]))
    first = [k - 1 if k in lead and _fade_share(x, int(k), *lead[k], cfg) >= cfg.fade_share else k for k in starts]
    kinds, xs = [], []
    cols = (np.arange(w) + 0.5) * factor
    for k in starts:
        if area[k] >= cfg.global_area:
            kinds.append("global")
            xs.append(np.nan)
        else:
            weight = weights[int(k)]  # (w,)
            kinds.append("flash")
            xs.append(float((weight * cols).sum() / weight.sum()))
    return VisualEvents(
        np.array(first, dtype=float) / fps, np.array(kinds, dtype=object), np.array(xs, dtype=float), width, area
    )


def brightening_events(frames: np.ndarray, fps: float, config: EventConfig | None = None) -> VisualEvents:
    """Flashes, appearances and cuts of ``frames`` ``(T, H, W, 3)`` uint8 (see the module docstring)."""
    cfg = config or EventConfig()
    x = BlockMeans(frames, cfg.analysis_width)
    return _brightening(x, x.factor, int(frames.shape[2]), fps, cfg)


def _line(t: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares line ``p ≈ a + b·t`` per column: (a, b), each (2,)."""
    A = np.stack([np.ones_like(t), t], axis=1)
    (a, b) = np.linalg.lstsq(A, p, rcond=None)[0]
    return a, b


def _object_impacts(
    t: np.ndarray, centers: np.ndarray, areas: np.ndarray, threshold: float, max_area_change: float,
    min_approach: float = 0.25,
) -> list[tuple[float, float]]:  # fmt: skip
    """(time, x) of the impacts of one track ``centers (T, 2)`` (px, NaN where unseen), ``areas (T,)``.

    Steps ``v_i = c_{i+1} − c_i`` (px/frame); the free acceleration ``g`` per frame² is the median step change
    (gravity on y, none on x). Across step ``i`` the velocity changes by ``Δ_i = v_{i+1} − v_{i−1} − 2g``; an impact is
    a local maximum of ``|Δ_i| ≥ threshold`` with two visible frames on each side, over which the visible area changes
    by at most ``max_area_change`` from frame to frame (a flash, an occlusion or a tracker glitch moves the centroid of
    what is seen, not the object). The motion before (frames up to ``i``) and after (from ``i + 1``) are lines
    ``a + b·τ`` after removing ``½gτ²``; the object must have moved into what it hit: ``−b_0·Δb ≥ min_approach·|Δb|²``
    (a bounce with restitution e ≤ 1 gives ``|Δb|/(1 + e) ≥ |Δb|/2``; jitter of a slow object gives about 0). The
    impact time is where the two lines meet: the ``τ`` minimising ``|Δa + Δb·τ|²``, kept within step ``i``."""
    T = centers.shape[0]
    if T < 4:
        return []
    v = np.diff(centers, axis=0)  # (T-1, 2)
    acc = np.diff(v, axis=0)  # (T-2, 2)
    ok = np.isfinite(acc).all(axis=1)
    if ok.sum() < 2:
        return []
    g = np.array([0.0, float(np.median(acc[ok, 1]))])
    jump = np.full(T - 1, 0.0)
    both = np.isfinite(v[2:]).all(axis=1) & np.isfinite(v[:-2]).all(axis=1)
    jump[1:-1] = np.where(both, np.linalg.norm(v[2:] - v[:-2] - 2 * g, axis=1), 0.0)  # (T-1,): change across step i
    out: list[tuple[float, float]] = []
    dt = t[1] - t[0]
    for i in np.flatnonzero(jump >= threshold):
        if jump[i] < jump[max(i - 1, 0)] or jump[i] < jump[min(i + 1, T - 2)] or (i > 0 and jump[i] == jump[i - 1]):
            continue
        seen = areas[i - 1 : i + 3]
        if np.max(np.abs(np.diff(seen)) / np.maximum(seen[1:], 1.0)) > max_area_change:
            continue
        pre = [j for j in range(i - 1, i + 1)]
        post = [j for j in range(i + 1, i + 3)]
        for j in range(i - 2, max(i - 4, -1), -1):  # extend while the motion stays free
            if j < 0 or not np.isfinite(centers[j]).all() or (j >= 1 and jump[j] >= threshold):
                break
            pre.insert(0, j)
        for j in range(i + 3, min(i + 5, T)):
            if not np.isfinite(centers[j]).all() or jump[j - 1] >= threshold:
                break
            post.append(j)
        tau = (np.arange(T) - i) * dt  # seconds from frame i
        free = centers - 0.5 * g[None, :] * (np.arange(T) - i)[:, None] ** 2  # gravity removed
        a0, b0 = _line(tau[pre], free[pre])
        a1, b1 = _line(tau[post], free[post])
        dp, dv = a0 - a1, b0 - b1
        if -(b0 @ (b1 - b0)) < min_approach * float((b1 - b0) @ (b1 - b0)):
            continue  # it did not move into what it hit fast enough to change its velocity this much
        tc = float(np.clip(-(dp @ dv) / max(float(dv @ dv), 1e-12), 0.0, dt))
        out.append((t[i] + tc, float(a0[0] + b0[0] * tc)))
    return out


def jitter(centers: np.ndarray) -> float:
    """``median |Δ²c| / median |Δc|`` of a track ``(T, 2)``: well below 1 for motion (free flight, rolling, bounces
    every few frames), about 1.4 or more for a centroid that jumps around (a tracker following scattered pixels)."""
    step = np.linalg.norm(np.diff(centers, axis=0), axis=1)
    turn = np.linalg.norm(np.diff(centers, 2, axis=0), axis=1)
    step, turn = step[np.isfinite(step)], turn[np.isfinite(turn)]
    if turn.size < 3:
        return float("inf")
    return float(np.median(turn) / max(float(np.median(step)), 1e-9))


def contact_events(
    tracks: Tracks, fps: float, threshold: float = 0.045, max_area_change: float = 0.2, max_jitter: float = 2.0,
    max_spread: float = 2.0,
) -> VisualEvents:  # fmt: skip
    """Impacts (bounces, collisions) of every tracked object (:func:`_object_impacts` with a velocity change of at
    least ``threshold·W`` px per frame), sorted; of impacts closer than half a frame the first stays. Tracks whose
    :func:`jitter` exceeds ``max_jitter`` are not an object's motion and give none. Frames where a track's pixels
    spread more than ``max_spread`` (:attr:`Tracks.spread`: 1 for a disc; a 4:1 ellipse is 2.1) hold more than one
    object (the tracker follows a colour, and two objects of near colours share it): their centroid is no object's
    position, so they count as unseen (a 3:1 ellipse, 1.7, is still one object)."""
    T = tracks.centers.shape[0]
    t = np.arange(T) / fps
    W = int(tracks.frame_size[1])
    centers = tracks.centers
    if tracks.spread is not None:
        centers = np.where((tracks.spread > max_spread)[..., None], np.nan, centers)  # (T, K, 2)
    found = sorted(
        c
        for k in range(centers.shape[1])
        if jitter(centers[:, k]) <= max_jitter
        for c in _object_impacts(t, centers[:, k], tracks.areas[:, k], threshold * W, max_area_change)
    )
    keep = [c for j, c in enumerate(found) if j == 0 or c[0] - found[j - 1][0] > 0.5 / fps]
    times = np.array([c[0] for c in keep])
    return VisualEvents(times, np.full(times.size, "contact", dtype=object), np.array([c[1] for c in keep]), W,
                        np.zeros(T))  # fmt: skip


def merge_events(*parts: VisualEvents) -> VisualEvents:
    """Union of event lists of the same clip, sorted by time."""
    times = np.concatenate([p.times for p in parts])
    order = np.argsort(times, kind="stable")
    return VisualEvents(times[order], np.concatenate([p.kinds for p in parts])[order],
                        np.concatenate([p.x for p in parts])[order], parts[0].width, parts[0].curve)  # fmt: skip


def truth_events(times: np.ndarray, azimuth: np.ndarray | None = None) -> VisualEvents:
    """Ground-truth event times (s) and azimuths (degrees, NaN for none) as :class:`VisualEvents` (kind "truth")."""
    t = np.asarray(times, dtype=np.float64)
    az = np.full(t.size, np.nan) if azimuth is None else np.asarray(azimuth, dtype=np.float64)
    order = np.argsort(t, kind="stable")
    return VisualEvents(t[order], np.full(t.size, "truth", dtype=object), az[order] + 45.0, 90, np.zeros(0))


def is_blank(frames: np.ndarray, tolerance: float = 3.0) -> bool:
    """True when the video shows one flat colour throughout: every frame's spatial std and the spread of the frame
    means over time below ``tolerance`` levels (0..255) in every channel (on every 4th pixel). A flat frame that
    flashes is not blank. ``frames`` ``(T, H, W, 3)`` uint8: float frames in [0, 1] would all look blank, so other
    dtypes and layouts are a ValueError (:func:`avflow.eval.inputs.check_frames`)."""
    frames = check_frames(frames, "frames")
    T, H, W, _ = frames.shape
    if T == 0 or -(-H // 4) * -(-W // 4) == 0:
        return True
    means, spread = np.zeros((T, 3), dtype=np.float32), np.zeros((T, 3), dtype=np.float32)
    for part in _chunks(T, -(-H // 4), -(-W // 4)):  # per frame: a chunk of frames at a time, never a whole float copy
        f = np.asarray(frames[part, ::4, ::4], dtype=np.float32).reshape(part.stop - part.start, -1, 3)
        means[part], spread[part] = f.mean(axis=1), f.std(axis=1)
    return bool(spread.max() < tolerance and np.ptp(means, axis=0).max() < tolerance)


def detect(
    frames: np.ndarray, fps: float, tracks: Tracks | None = None, config: EventConfig | None = None
) -> tuple[VisualEvents, Tracks]:
    """Brightening events and (unless ``config.contacts`` is off) contacts, merged, and the object tracks they came
    from (in pixels of ``frames``). Objects are tracked on the block-averaged frames (``analysis_width``) unless
    ``tracks`` are given. A flash changes the colour of what the tracker follows and so moves its centroid: contacts
    from 2 frames before a brightening to ``flash_frames + 1`` after it are dropped."""
    cfg = config or EventConfig()
    x = BlockMeans(frames, cfg.analysis_width)  # block-averaged a chunk of frames at a time, never whole
    factor = x.factor
    H, W = int(frames.shape[1]), int(frames.shape[2])
    bright = _brightening(x, factor, W, fps, cfg)
    if tracks is None:
        small = track_objects(x) if cfg.contacts else Tracks(np.zeros((len(x), 0, 2)), np.zeros((len(x), 0)), (H, W))
        tracks = Tracks(small.centers * factor, small.areas * factor**2, (H, W), small.spread)
    if not cfg.contacts:
        return bright, tracks
    contacts = contact_events(tracks, fps, cfg.contact_threshold, cfg.contact_area_change, cfg.contact_max_jitter,
                              cfg.contact_max_spread)  # fmt: skip
    lag = (contacts.times[:, None] - bright.times[None, :]) * fps  # (C, B) frames after each brightening
    keep = ~((lag > -2.0) & (lag < cfg.flash_frames + 1.0)).any(axis=1)  # a flash moves the centroid it tracks
    contacts = VisualEvents(contacts.times[keep], contacts.kinds[keep], contacts.x[keep], W, contacts.curve)
    return merge_events(bright, contacts), tracks


def visual_events(
    frames: np.ndarray, fps: float, tracks: Tracks | None = None, config: EventConfig | None = None
) -> VisualEvents:
    """The visual events of :func:`detect`."""
    return detect(frames, fps, tracks, config)[0]
