"""Physical plausibility of a video: colour-segmentation tracking, gravity-and-bounce fits, permanence, energy.

Pixel coordinates: ``x`` to the right, ``y`` down (gravity is ``+y``), both in pixels; times in seconds, frame ``k``
at ``k / fps``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Tracks:
    """Object tracks: ``centers (T, K, 2)`` (x, y) in pixels, NaN where not visible; ``areas (T, K)`` in pixels."""

    centers: np.ndarray
    areas: np.ndarray
    frame_size: tuple[int, int]  # (H, W)
    # (T, K) 2π·E[|p − c|²]/area of each object's weighted pixels: 1 for a disc, 1.05 for a square, 1.67 for a 3:1
    # ellipse, far more where the pixels of one colour lie in two places (two objects of near colours); None: unknown
    spread: np.ndarray | None = None


def _shift_max(mask: np.ndarray) -> np.ndarray:
    """3×3 binary dilation over the last two axes."""
    out = mask.copy()
    out[..., 1:, :] |= mask[..., :-1, :]
    out[..., :-1, :] |= mask[..., 1:, :]
    grown = out.copy()
    grown[..., :, 1:] |= out[..., :, :-1]
    grown[..., :, :-1] |= out[..., :, 1:]
    return grown


def tracks_from_masks(masks: np.ndarray, min_area: float = 2.0) -> Tracks:
    """Centroids of per-object boolean masks ``(T, K, H, W)``."""
    m = np.asarray(masks, dtype=np.float64)
    T, K, H, W = m.shape
    area = m.sum(axis=(2, 3))  # (T, K)
    ys, xs = np.arange(H) + 0.5, np.arange(W) + 0.5
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = (m.sum(axis=2) * xs).sum(axis=-1) / area
        cy = (m.sum(axis=3) * ys).sum(axis=-1) / area
    centers = np.stack([cx, cy], axis=-1)
    centers[area < min_area] = np.nan
    return Tracks(centers=centers, areas=area, frame_size=(H, W))


def _refine(colours: np.ndarray, centres: np.ndarray, radius: float, iters: int = 3) -> np.ndarray:
    """Trimmed k-means: each centre moves to the mean of the colours within ``radius`` of it (edge blends ignored)."""
    for _ in range(iters):
        for j in range(len(centres)):
            near = np.linalg.norm(colours - centres[j], axis=1) < radius
            if near.any():
                centres[j] = colours[near].mean(0)
    return centres


# BT.601 luma weights (H.264's default matrix): luma and the chroma differences B − Y, R − Y of an RGB colour
LUMA = np.array([0.299, 0.587, 0.114])


def _luma_chroma(c: np.ndarray) -> tuple[float, np.ndarray]:
    """Luma and (B − Y, R − Y) of an RGB colour ``(3,)``."""
    y = float(c @ LUMA)
    return y, np.array([c[2] - y, c[0] - y])


def _is_blend(c: np.ndarray, s: np.ndarray, bg: np.ndarray, tol: float) -> bool:
    """True if colour ``c`` is an edge pixel between background ``bg`` and object colour ``s``: its luma between
    theirs and its chroma near the segment between theirs, mixed in any proportions (within ``0.5·tol`` in all).
    Anti-aliasing mixes luma and chroma alike (``c`` on the RGB segment); 4:2:0 video (H.264: chroma once per 2×2
    pixels, interpolated back) gives an edge pixel its own side's luma and a mix of both sides' chroma — at 64 px
    such colours (a dark pixel tinted by a red object beside it) were dense enough to be tracked as objects."""
    yc, cc = _luma_chroma(c)
    ys, cs = _luma_chroma(s)
    yb, cb = _luma_chroma(bg)
    off_luma = max(0.0, min(ys, yb) - yc, yc - max(ys, yb))
    d = cs - cb
    a = float(np.clip(np.dot(cc - cb, d) / max(float(np.dot(d, d)), 1e-6), 0.0, 1.0))
    return float(np.hypot(off_luma, np.linalg.norm(cc - cb - a * d))) < 0.5 * tol


def _coverage(diff: np.ndarray, d: np.ndarray, min_luma: float) -> np.ndarray:
    """How much of each edge pixel an object covers, ``(R,)`` (unclipped): ``diff`` ``(R, 3)`` is the pixel minus the
    background, ``d`` ``(R, 3)`` the object's colour minus the background. By luma where the object's differs from
    the background's by more than ``min_luma``: 4:2:0 video (H.264) keeps each pixel's luma but mixes the chroma of
    2×2 blocks, so an edge pixel's colour leans to the other side while its luma still says how much the object
    covers (at 64 px the colour projection made a small object's area jump by 10–26 % from frame to frame, and its
    bounces were taken for glitches). Elsewhere the projection of the colour on the background–object segment."""
    w = LUMA.astype(np.float32)
    dy = d @ w
    by_luma = np.abs(dy) > min_luma
    colour = (diff * d).sum(-1) / np.maximum((d * d).sum(-1), 1e-6)
    return np.where(by_luma, (diff @ w) / np.where(by_luma, dy, 1.0), colour)


# Frames are tracked in chunks of about this many pixels (frames × H × W): the float copies of a chunk (frames,
# background, difference, colour distances) are a few tens of MB whatever the clip's length, where whole-video copies
# took 287 MB per minute of 64 px frames (a 5 min clip 1.4 GB). Every quantity is per frame, so the chunks give the
# same tracks, bit for bit, as the whole clip at once.
TRACK_CHUNK_PIXELS = 1 << 20


def _chunks(T: int, H: int, W: int, pixels: int | None = None) -> list[slice]:
    """Consecutive frame ranges of about ``pixels`` (default TRACK_CHUNK_PIXELS) pixels each, at least one frame."""
    step = max(1, (pixels or TRACK_CHUNK_PIXELS) // max(1, H * W))
    return [slice(a, min(a + step, T)) for a in range(0, T, step)]


def track_objects(
    frames: np.ndarray,
    max_objects: int = 4,
    threshold: float = 40.0,
    min_area: float = 3.0,
    merge_distance: float = 60.0,
) -> Tracks:
    """Track uniformly coloured objects over a static background by colour segmentation.

    Background ``B`` = per-pixel temporal median (of at most 64 evenly spaced frames) plus each frame's median
    deviation from it (global drift, over every 4th pixel);
    foreground = ``‖f − B‖ > threshold`` (RGB 0..255). Object colours = the densest coarse colour bins of the
    foreground (merged within ``merge_distance``; background colours and edge blends dropped), refined by a trimmed
    mean. Object ``k``'s core = pixels within ``min(threshold, ½·gap to the nearest other object colour)`` of its
    colour ``c`` (so objects at rest stay found); its 1-pixel ring adds the soft coverage ``α``, clipped to [0, 1]:
    ``(Y(f) − Y(B)) / (Y(c) − Y(B))`` in luma where the object's and the background's differ by more than
    ``threshold / 2`` (decoded 4:2:0 video mixes chroma across edges, not luma: :func:`_coverage`), else
    ``((f − B)·(c − B)) / ‖c − B‖²``; so anti-aliased edges give sub-pixel centroids.
    Visible where the weight ``Σ ≥ min_area``.

    ``frames`` ``(T, H, W, 3)``: any array (uint8 or float) or an object with ``shape`` and slicing along the frames
    (e.g. frames computed on demand); it is read in chunks of frames (``TRACK_CHUNK_PIXELS``), never copied whole.
    """
    T, H, W, _ = frames.shape
    chunks = _chunks(T, H, W)
    bg = np.median(np.asarray(frames[:: -(-T // 64)], dtype=np.float32), axis=0)  # (H, W, 3) over <= 64 frames
    drift = np.zeros((T, 3), dtype=np.float32)  # each frame's median deviation, on every 4th pixel
    found: list[np.ndarray] = []  # the foreground pixels' colours, as stored in `frames` (uint8: 3 bytes each)
    codes_parts: list[np.ndarray] = []
    for part in chunks:
        raw = np.asarray(frames[part])
        f = raw.astype(np.float32)  # (t, H, W, 3)
        n = f.shape[0]
        drift[part] = np.median((f[:, ::2, ::2] - bg[::2, ::2]).reshape(n, -1, 3), axis=1)
        diff = f - (bg + drift[part][:, None, None, :])  # (t, H, W, 3)
        fg = np.einsum("thwc,thwc->thw", diff, diff) > threshold**2
        del diff
        colours = f[fg]  # (p, 3)
        bins = np.floor(colours / 32.0).astype(int)
        codes_parts.append((bins[:, 0] * 64 + bins[:, 1] * 8 + bins[:, 2]).astype(np.int16))
        found.append(raw[fg])
        del f, fg, colours, bins
    empty = Tracks(np.full((T, 0, 2), np.nan), np.zeros((T, 0)), (H, W), np.zeros((T, 0)))
    n_fg = sum(c.size for c in codes_parts)
    if n_fg < min_area:
        return empty
    colours = np.concatenate(found).astype(np.float32)  # (P, 3), in the order of the whole clip's f[fg]
    del found
    codes = np.concatenate(codes_parts)
    del codes_parts
    keys, counts = np.unique(codes, return_counts=True)
    bg_first = (bg + drift[0]).reshape(-1, 3)
    bg_mean = bg_first.mean(0)  # blends of objects with it are edges
    seeds: list[np.ndarray] = []
    for key in keys[np.argsort(-counts)]:
        sel = colours[codes == key]
        if sel.shape[0] < max(min_area, 0.02 * colours.shape[0]):
            break
        c = sel.mean(0)
        if np.mean(np.linalg.norm(bg_first - c, axis=-1) < threshold) > 0.1:  # a background colour (uncovered)
            continue
        if all(np.linalg.norm(c - s) > merge_distance and not _is_blend(c, s, bg_mean, merge_distance) for s in seeds):
            seeds.append(c)
        if len(seeds) == max_objects:
            break
    if not seeds:
        return empty
    centres = _refine(colours[:: max(1, colours.shape[0] // 20000)], np.array(seeds), 0.5 * threshold)  # (K, 3)
    del colours, codes
    K = len(centres)
    gaps = np.linalg.norm(centres[:, None] - centres[None], axis=-1) + np.eye(K) * 1e9
    c32 = centres.astype(np.float32)
    tols = [min(threshold, 0.5 * float(gaps[k].min())) for k in range(K)]
    ys, xs = np.mgrid[0:H, 0:W] + 0.5
    centers = np.full((T, K, 2), np.nan)
    areas = np.zeros((T, K))
    spread = np.full((T, K), np.nan)
    for part in chunks:
        f = np.asarray(frames[part], dtype=np.float32)  # (t, H, W, 3)
        bgt = bg + drift[part][:, None, None, :]  # (t, H, W, 3) follows global drift
        diff = f - bgt
        d2 = np.zeros(f.shape[:3] + (K,), dtype=np.float32)  # squared colour distance, one channel at a time
        for ch in range(3):
            d2 += (np.ascontiguousarray(f[..., ch])[..., None] - c32[:, ch]) ** 2
        del f
        nearest = d2.argmin(-1)  # (t, H, W)
        for k in range(K):
            core = (d2[..., k] < tols[k] ** 2) & (nearest == k)  # (t, H, W); also when at rest
            ring = np.nonzero(_shift_max(core) & ~core)
            d = c32[k] - bgt[ring]  # (R, 3) object colour minus background, on the ring only
            dd = (d * d).sum(-1)
            alpha = np.where(dd > threshold**2, np.clip(_coverage(diff[ring], d, 0.5 * threshold), 0.0, 1.0), 0.0)
            weight = core.astype(np.float32)
            weight[ring] = alpha
            area = weight.sum(axis=(1, 2))
            with np.errstate(invalid="ignore", divide="ignore"):
                cx = (weight * xs).sum(axis=(1, 2)) / area  # (t,)
                cy = (weight * ys).sum(axis=(1, 2)) / area
                second = (weight * (xs * xs + ys * ys)).sum(axis=(1, 2)) / area - cx * cx - cy * cy  # E|p − c|²
                spread[part, k] = 2 * np.pi * np.maximum(second, 0.0) / area
            centers[part, k, 0], centers[part, k, 1] = cx, cy
            areas[part, k] = area
        del bgt, diff, d2, nearest
    for k in range(K):
        centers[areas[:, k] < min_area, k] = np.nan
    return Tracks(centers=centers, areas=areas, frame_size=(H, W), spread=spread)


def reversals(pos: np.ndarray, min_speed: float = 0.3, down_up_only: bool = False) -> list[tuple[int, int]]:
    """Velocity reversals of a 1-D track as ``(last_before, first_after)`` frame pairs: the per-frame velocity
    ``v[i] = pos[i+1] − pos[i]`` changes sign between two steps with ``|v| ≥ min_speed`` and only slower steps
    between them; the contact lies in ``(last_before, first_after)``. ``down_up_only`` keeps + → − (floor bounces
    in image coordinates, y down)."""
    v = np.diff(pos)
    sig = [i for i in range(len(v)) if np.isfinite(v[i]) and abs(v[i]) >= min_speed]
    out = []
    for a, b in zip(sig[:-1], sig[1:]):
        if np.sign(v[a]) != np.sign(v[b]) and (not down_up_only or v[a] > 0) and np.isfinite(pos[a : b + 2]).all():
            out.append((a, b + 1))
    return out


def _segments(n: int, splits: list[tuple[int, int]]) -> list[np.ndarray]:
    """Index runs between reversals; the frames strictly inside a reversal (contact within them) are left out."""
    starts = [0] + [b for _, b in splits]
    ends = [a for a, _ in splits] + [n - 1]
    return [np.arange(s, e + 1) for s, e in zip(starts, ends) if e >= s]


def _runs(mask: np.ndarray) -> list[np.ndarray]:
    idx = np.flatnonzero(mask)
    return [r for r in np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1) if r.size] if idx.size else []


def _cut(seg: np.ndarray, splits: list[tuple[int, int]]) -> list[np.ndarray]:
    """Pieces of an index run between reversals, leaving out the frames strictly inside each reversal."""
    out, start = [], seg[0]
    for before, after in splits:
        if seg[0] <= before and after <= seg[-1]:
            out.append(np.arange(start, before + 1))
            start = after
    out.append(np.arange(start, seg[-1] + 1))
    return [o for o in out if o.size]


def _line_residual(t: np.ndarray, p: np.ndarray, deg: int) -> np.ndarray:
    if t.size <= deg + 1:
        return np.zeros(0)
    return p - np.polyval(np.polyfit(t - t.mean(), p, deg), t - t.mean())


def fit_trajectory(
    t: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    gravity: float | None = None,
    min_speed: float = 0.3,
    rest_speed: float = 0.3,
) -> dict[str, float]:
    """Gravity-and-bounce fit of one visible trajectory.

    Resting frames (``|Δy| < rest_speed`` px on both sides; free flight cannot do that, its second difference is
    ``g/fps²``) fit ``y`` = const and ``x`` = a parabola while rolling (friction), a constant once stopped. The other
    frames are cut at bounces (down→up reversals of ``y``) into flight segments with ``y = a_s + b_s·t + ½·g·t²``
    (one ``g`` for the track: fitted when ``gravity`` is None, else fixed) and, cut at ``x`` reversals (walls),
    ``x`` = a line. ``residual`` = RMS of all residuals (px); ``gravity_fit`` = least-squares shared ``g``
    (px/s²) of the flight segments; ``n_bounces`` = number of ``y`` bounces. Object-object collisions that do not
    reverse a velocity are not modelled and show up as residual.
    """
    n = len(y)
    dy = np.abs(np.diff(y))
    still = np.zeros(n, dtype=bool)
    if n >= 2:
        left = np.concatenate([[np.inf], dy])
        right = np.concatenate([dy, [np.inf]])
        still = (
            (np.minimum(left, right) < rest_speed)
            & (np.where(np.isinf(left), right, left) < rest_speed)
            & (np.where(np.isinf(right), left, right) < rest_speed)
        )
        # a frame next to a resting one, one slow step from it, is at the rest position already: a landing (or a
        # lift-off) happens in the step on its other side, so it is fitted with the rest, never across the contact
        # (a last low bounce that ends at rest was fitted as flight through the landing)
        still = still | np.concatenate([still[1:], [False]]) | np.concatenate([[False], still[:-1]])
    yb = reversals(y, min_speed, down_up_only=True)
    xb = reversals(x, min_speed)
    flight = [p for run in _runs(~still) for p in _cut(run, yb) if p.size >= 3]
    res: list[np.ndarray] = []
    for run in _runs(still):  # resting / rolling on a support
        res.append(y[run] - y[run].mean())
        rolling = np.concatenate([np.abs(np.diff(x[run])) >= rest_speed, [False]])
        for part in _runs(rolling):  # indices into `run`
            res.append(_line_residual(t[run[part]], x[run[part]], 2))
        for part in _runs(~rolling):
            res.append(x[run[part]] - x[run[part]].mean())
    g_fit = float("nan")
    n_pts = sum(s.size for s in flight)
    if flight and n_pts > 2 * len(flight) + 1:
        A = np.zeros((n_pts, 1 + 2 * len(flight)))
        row = 0
        for j, s in enumerate(flight):
            tau = t[s] - t[s].mean()
            A[row : row + s.size, [0, 1 + 2 * j, 2 + 2 * j]] = np.stack([0.5 * tau**2, np.ones_like(tau), tau], 1)
            row += s.size
        g_fit = float(np.linalg.lstsq(A, np.concatenate([y[s] for s in flight]), rcond=None)[0][0])
    g = g_fit if gravity is None else float(gravity)
    for s in flight:
        if np.isfinite(g):
            tau = t[s] - t[s].mean()
            res.append(_line_residual(t[s], y[s] - 0.5 * g * tau**2, 1))
        for part in _cut(s, xb):
            res.append(_line_residual(t[part], x[part], 1))
    r = np.concatenate(res) if res else np.zeros(0)
    return {
        "residual": float(np.sqrt(np.mean(r**2))) if r.size else float("nan"),
        "gravity_fit": g_fit,
        "n_bounces": float(len(yb)),
    }


def _visible_runs(ok: np.ndarray) -> list[np.ndarray]:
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return []
    return [r for r in np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1) if r.size]


def trajectory_residual(tracks: Tracks, fps: float, gravity: float | None = None) -> dict[str, float]:
    """Point-weighted RMS of :func:`fit_trajectory` residuals over every visible run of every object (px), the
    median fitted gravity (px/s²) and the total bounce count."""
    t_all = np.arange(tracks.centers.shape[0]) / fps
    sq, n, gs, bounces = 0.0, 0, [], 0.0
    for k in range(tracks.centers.shape[1]):
        ok = np.isfinite(tracks.centers[:, k, 0])
        for run in _visible_runs(ok):
            if run.size < 4:
                continue
            fit = fit_trajectory(t_all[run], tracks.centers[run, k, 0], tracks.centers[run, k, 1], gravity)
            if np.isfinite(fit["residual"]):
                sq += fit["residual"] ** 2 * run.size
                n += run.size
            if np.isfinite(fit["gravity_fit"]):
                gs.append(fit["gravity_fit"])
            bounces += fit["n_bounces"]
    return {
        "residual_px": float(np.sqrt(sq / n)) if n else float("nan"),
        "gravity_fit": float(np.median(gs)) if gs else float("nan"),
        "n_bounces": bounces,
    }


def object_permanence(tracks: Tracks, margin: float = 2.0) -> float:
    """Fraction of an object's lifetime frames (first to last visible) in which it is visible, or out of view
    because it last left near a border (centre within ``margin`` px of the edge ± half its size). 1 = no object
    vanishes or pops up mid-frame; NaN without objects."""
    H, W = tracks.frame_size
    scores = []
    for k in range(tracks.centers.shape[1]):
        ok = np.isfinite(tracks.centers[:, k, 0])
        idx = np.flatnonzero(ok)
        if idx.size == 0:
            continue
        life = np.arange(idx[0], idx[-1] + 1)
        good = ok[life].copy()
        for j, f in enumerate(life):
            if good[j]:
                continue
            prev = idx[idx < f].max()
            cx, cy = tracks.centers[prev, k]
            half = 0.5 * np.sqrt(max(tracks.areas[prev, k], 1.0)) + margin
            good[j] = cx < half or cy < half or cx > W - half or cy > H - half
        scores.append(good.mean())
    return float(np.mean(scores)) if scores else float("nan")


def object_contacts(tracks: Tracks, margin_px: float = 1.0) -> np.ndarray:
    """``(T, K)`` bool: frames next to a possible contact of object ``k`` with another tracked object. Each object is
    a disc of the area it shows (radius ``sqrt(median area / π)``; a square of half side ``s`` gets ``1.13·s``). Two
    objects touch in the step from frame ``i`` to ``i + 1`` (both frames flagged) when their relative position comes
    within the sum of the radii plus ``margin_px`` at a frame, or on the line of their relative motion before the
    step carried on into it, or on that after the step carried back into it (between objects in flight gravity
    cancels, so a collision lies on both lines; objects that only pass close by come near on neither)."""
    c = tracks.centers
    T, K = c.shape[:2]
    out = np.zeros((T, K), dtype=bool)
    radius = np.zeros(K)
    for k in range(K):
        seen = np.isfinite(c[:, k, 0])
        radius[k] = np.sqrt(np.median(tracks.areas[seen, k]) / np.pi) if seen.any() else 0.0

    def closest(p: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Distance from 0 of the segments ``p + τ·v``, ``τ ∈ [0, 1]`` (rows; NaN where unseen)."""
        tau = np.clip(-(p * v).sum(-1) / np.maximum((v * v).sum(-1), 1e-12), 0.0, 1.0)
        return np.linalg.norm(p + tau[:, None] * v, axis=-1)

    for i in range(K):
        for j in range(i + 1, K):
            reach = radius[i] + radius[j] + margin_px
            rel = c[:, j] - c[:, i]  # (T, 2), NaN where either is unseen
            step = np.diff(rel, axis=0)  # (T-1, 2): step s goes from frame s to s + 1
            touch = np.zeros(max(T - 1, 0), dtype=bool)  # contact within step s
            with np.errstate(invalid="ignore"):
                at = np.linalg.norm(rel, axis=1) <= reach
                touch[1:] |= closest(rel[1:-1], step[:-1]) <= reach  # the motion before step s, carried on
                touch[:-1] |= closest(rel[1:-1], -step[1:]) <= reach  # the motion after step s, carried back
            near = at.copy()
            near[:-1] |= touch
            near[1:] |= touch
            out[:, i] |= near
            out[:, j] |= near
    return out


def energy_growth(tracks: Tracks, fps: float, gravity: float, tolerance: float = 0.1) -> float:
    """Fraction of bounce-to-bounce intervals whose specific mechanical energy grows by more than ``tolerance``.

    ``E(t) = g·(H − y) + ½·(ẋ² + ẏ²)`` (px²/s², central differences); per interval between ``y`` bounces the
    median ``E`` is compared with the previous interval's. A pair of intervals during which the object may touch
    another (:func:`object_contacts`, from the first interval's first frame to the second's last) is not compared: a
    collision between objects moves energy from one to the other. 0 = energy never grows; NaN with no pair of
    intervals to compare."""
    H = tracks.frame_size[0]
    touching = object_contacts(tracks)  # (T, K)
    grown, total = 0, 0
    for k in range(tracks.centers.shape[1]):
        ok = np.isfinite(tracks.centers[:, k, 0])
        for run in _visible_runs(ok):
            if run.size < 6:
                continue
            x, y = tracks.centers[run, k, 0], tracks.centers[run, k, 1]
            vx, vy = np.gradient(x) * fps, np.gradient(y) * fps
            energy = gravity * (H - y) + 0.5 * (vx**2 + vy**2)
            for before, after in reversals(x, 0.3):  # a wall: the central differences around it mix both sides
                energy[before : after + 1] = np.nan
            segs = [s for s in _segments(len(y), reversals(y, 0.3, down_up_only=True)) if s.size >= 3]
            meds = [float(np.nanmedian(energy[s[1:-1]])) if np.isfinite(energy[s[1:-1]]).any() else np.nan
                    for s in segs]  # fmt: skip
            for a, b, e0, e1 in zip(segs[:-1], segs[1:], meds[:-1], meds[1:]):
                if not np.isfinite(e0 + e1) or touching[run[a[0]] : run[b[-1]] + 1, k].any():
                    continue  # a contact with another object within or between the two intervals
                total += 1
                grown += int(e1 > (1 + tolerance) * e0)
    return grown / total if total else float("nan")
