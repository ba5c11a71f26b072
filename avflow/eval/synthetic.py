"""Small synthetic audio-visual clips with exact ground truth, for testing and benchmarking the metrics.

`bouncing_clip`: a square moves under gravity (or without), bounces on the floor and walls, and every contact emits a
modal click; `flash_clip`: squares on the left and right flash, each flash heard from its side. The sound is panned
binaurally after the source's azimuth. Frame ``k`` shows the state at ``k / fps``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# material -> (modal frequencies Hz, decay 1/s)
MATERIALS: dict[str, tuple[tuple[float, ...], float]] = {
    "wood": ((420.0, 1130.0, 2010.0), 45.0),
    "metal": ((1870.0, 3310.0, 5120.0), 6.0),
    "glass": ((2650.0, 4720.0, 6900.0), 12.0),
    "rubber": ((180.0, 410.0, 760.0), 70.0),
}


@dataclass
class SyntheticClip:
    audio: np.ndarray  # (2, N) float32 [left, right]
    sample_rate: int
    frames: np.ndarray  # (T, H, W, 3) uint8
    masks: np.ndarray  # (T, 1, H, W) bool
    fps: float
    events: np.ndarray  # (E,) contact times, s
    centers: np.ndarray  # (T, 2) true (x, y) px
    meta: dict = field(default_factory=dict)


def simulate(
    rng: np.random.Generator, duration: float, fps: float, size: int, half: float, gravity: float, restitution: float
) -> tuple[np.ndarray, np.ndarray]:
    """Exact event-driven flight of a square centre in a box: returns (centres at frame times (T, 2), contacts)."""
    lo, hi = half, size - half
    pos = np.array([rng.uniform(lo + 4, hi - 4), rng.uniform(lo + 2, 0.5 * size)])
    vel = np.array([rng.uniform(20, 40) * rng.choice([-1, 1]), rng.uniform(-30, 30)])
    t, contacts, states = 0.0, [], [(0.0, pos.copy(), vel.copy())]
    g = np.array([0.0, gravity])
    while t < duration:
        best, axis = duration - t, -1
        for ax in (0, 1):
            a, v, p = g[ax], vel[ax], pos[ax]
            for wall in (lo, hi):  # solve p + v·τ + ½a·τ² = wall for the first τ > 0
                roots = np.roots([0.5 * a, v, p - wall]) if a != 0 else (np.array([(wall - p) / v]) if v else [])
                for r in np.atleast_1d(roots):
                    if np.isreal(r) and 1e-9 < r.real < best:
                        dvel = v + a * r.real
                        if (wall == hi and dvel > 0) or (wall == lo and dvel < 0):
                            best, axis = float(r.real), ax
        pos = pos + vel * best + 0.5 * g * best**2
        vel = vel + g * best
        t += best
        if axis >= 0:
            vel[axis] *= -restitution if axis == 1 else -1.0
            if axis == 1 and abs(vel[1]) < 15.0 and gravity > 0:  # too slow to bounce again: kick it back up
                vel[1] = -rng.uniform(60, 90)
            contacts.append(t)
        states.append((t, pos.copy(), vel.copy()))
    times = np.arange(int(round(duration * fps))) / fps
    centres = np.zeros((times.size, 2))
    starts = np.array([s[0] for s in states])
    for i, tf in enumerate(times):
        j = int(np.searchsorted(starts, tf, side="right") - 1)
        t0, p0, v0 = states[j]
        d = tf - t0
        centres[i] = p0 + v0 * d + 0.5 * g * d**2
    return centres, np.array([c for c in contacts if c < duration])


def render(centres: np.ndarray, size: int, half: float, colour: np.ndarray, background: float = 40.0) -> np.ndarray:
    """Anti-aliased squares (exact area coverage) on a flat background: (T, H, W, 3) uint8."""
    edges = np.arange(size)
    out = []
    for cx, cy in centres:
        cov_x = np.clip(np.minimum(edges + 1, cx + half) - np.maximum(edges, cx - half), 0, 1)
        cov_y = np.clip(np.minimum(edges + 1, cy + half) - np.maximum(edges, cy - half), 0, 1)
        alpha = cov_y[:, None] * cov_x[None, :]  # (H, W)
        out.append(background + alpha[..., None] * (colour - background))
    return np.round(np.stack(out)).clip(0, 255).astype(np.uint8)


def modal_click(sample_rate: int, material: str, rng: np.random.Generator, length_s: float = 0.25) -> np.ndarray:
    """A struck-object sound: decaying sinusoids at the material's modes (±3 % jitter), starting at full amplitude."""
    freqs, decay = MATERIALS[material]
    t = np.arange(int(length_s * sample_rate)) / sample_rate
    out = np.zeros_like(t)
    for j, f in enumerate(freqs):
        f = f * rng.uniform(0.97, 1.03)
        out += (0.6**j) * np.sin(2 * np.pi * f * t + rng.uniform(0.3, 2.8)) * np.exp(-decay * (1 + 0.5 * j) * t)
    return out


def pan_binaural(mono: np.ndarray, sample_rate: int, azimuth_deg: np.ndarray) -> np.ndarray:
    """Spherical-head panning with per-sample azimuth (negative = left): Woodworth ITD, ILD = −10·sin θ dB.

    ITD ``= −(r/c)(θ + sin θ)`` (r = 8.75 cm, c = 343 m/s; > 0 when the left ear leads); the lagging ear is delayed by
    linear interpolation. Returns ``(2, N)`` [left, right]."""
    theta = np.deg2rad(np.asarray(azimuth_deg, dtype=np.float64))
    itd = -(0.0875 / 343.0) * (theta + np.sin(theta))
    ild = -10.0 * np.sin(theta)
    n = np.arange(mono.size) / sample_rate
    left = np.interp(n - np.maximum(0.0, -itd), n, mono, left=0.0) * 10 ** (ild / 40)
    right = np.interp(n - np.maximum(0.0, itd), n, mono, left=0.0) * 10 ** (-ild / 40)
    return np.stack([left, right])


def bouncing_clip(
    seed: int,
    duration: float = 4.0,
    fps: float = 16.0,
    size: int = 64,
    sample_rate: int = 16000,
    gravity: float = 300.0,
    material: str | None = None,
    audio_delay_s: float = 0.0,
    noise: float = 1e-4,
    restitution: float = 0.85,
) -> SyntheticClip:
    """One square bouncing in a box with modal clicks at its contacts (delayed by ``audio_delay_s``);
    ``restitution`` > 1 makes an unphysical clip whose bounces gain energy."""
    rng = np.random.default_rng(seed)
    half = float(rng.uniform(3.0, 5.0))
    material = material or str(rng.choice(list(MATERIALS)))
    centres, events = simulate(rng, duration, fps, size, half, gravity, restitution)
    colour = rng.uniform(120, 255, size=3)
    frames = render(centres, size, half, colour)
    masks = np.zeros(frames.shape[:3], dtype=bool)
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    for k, (cx, cy) in enumerate(centres):
        masks[k] = (np.abs(xs - cx) < half) & (np.abs(ys - cy) < half)
    n = int(duration * sample_rate)
    mono = noise * rng.standard_normal(n)
    for tc in events:
        start = int(round((tc + audio_delay_s) * sample_rate))
        if 0 <= start < n:
            click = modal_click(sample_rate, material, rng) * rng.uniform(0.3, 1.0)
            mono[start : start + click.size] += click[: n - start]
    # azimuth per sample from the frame-rate track (linear interpolation)
    t_frames = np.arange(len(centres)) / fps
    azimuth = (np.interp(np.arange(n) / sample_rate, t_frames, centres[:, 0]) / size - 0.5) * 90.0
    audio = pan_binaural(mono, sample_rate, azimuth).astype(np.float32)
    meta = {
        "events": [{"time": float(t), "material": material} for t in events],
        "gravity": gravity,
        "material": material,
    }
    return SyntheticClip(audio, sample_rate, frames, masks[:, None], fps, events, centres, meta)


def flash_clip(
    seed: int,
    audio_delay_s: float = 0.0,
    fps: float = 25.0,
    duration: float = 4.0,
    n_events: int = 5,
    onsets: tuple[float, ...] = (0.0,),
    flash_frames: int = 2,
    fade: bool = False,
    period_s: float | None = None,
    size: int = 64,
    sample_rate: int = 16000,
) -> SyntheticClip:
    """A grey frame with a dim square on the left and one on the right; at each event one of them flashes white for
    ``flash_frames`` frames (with ``fade``: the first frame at half strength and the rest decaying) and a modal click
    is heard from its side at every offset of ``onsets`` (s after the flash, the later ones louder), the whole track
    delayed by ``audio_delay_s``. Events are at random frames at least 0.5 s apart, or every ``period_s``.
    ``meta["events"]`` holds each event's visual ``time``, ``azimuth`` and ``side``."""
    rng = np.random.default_rng(seed)
    T = int(round(duration * fps))
    if period_s is not None:
        frames_at = np.arange(int(round(0.3 * fps)), T - 3, max(1, int(round(period_s * fps))))
    else:
        lo, hi, gap = int(0.35 * fps), T - int(0.6 * fps), int(np.ceil(0.5 * fps))  # events >= 0.5 s apart
        free = hi - lo - (n_events - 1) * gap
        if free < 0:
            raise ValueError(f"{n_events} events 0.5 s apart do not fit in {duration} s")
        frames_at = lo + np.sort(rng.integers(0, free + 1, n_events)) + gap * np.arange(n_events)
    half = size // 10
    squares = {"left": (int(0.25 * size), size // 2), "right": (int(0.75 * size), size // 2)}
    frames = np.full((T, size, size, 3), 50, dtype=np.float64)
    for cx, cy in squares.values():
        frames[:, cy - half : cy + half, cx - half : cx + half] = (90, 70, 60)
    n = int(round(duration * sample_rate))
    audio = np.zeros((2, n))
    events = []
    for k in frames_at:
        side = "left" if rng.random() < 0.5 else "right"
        cx, cy = squares[side]
        for i in range(flash_frames):
            strength = (0.5 if i == 0 else 1.0 - 0.6 * i / flash_frames) if fade and flash_frames > 1 else 1.0
            if k + i < T:
                frames[k + i, cy - half : cy + half, cx - half : cx + half] = 60 + 180 * strength
        azimuth = (cx / size - 0.5) * 90.0
        mono = np.zeros(n)
        for i, dt in enumerate(onsets):
            start = int(round((k / fps + dt + audio_delay_s) * sample_rate))
            if 0 <= start < n:
                click = modal_click(sample_rate, "wood", rng, 0.12) * (0.5 + 0.25 * i)
                mono[start : start + click.size] += click[: n - start]
        audio += pan_binaural(mono, sample_rate, np.full(n, azimuth))
        events.append({"time": k / fps, "azimuth": azimuth, "side": side})
    audio += 1e-4 * rng.standard_normal(audio.shape)
    frames = np.round(frames).clip(0, 255).astype(np.uint8)
    times = np.array([e["time"] for e in events])
    meta = {"events": events, "offset_ms": 1000.0 * audio_delay_s}
    no_masks = np.zeros((T, 0, size, size), dtype=bool)
    return SyntheticClip(
        audio.astype(np.float32), sample_rate, frames, no_masks, fps, times, np.full((T, 2), np.nan), meta
    )
