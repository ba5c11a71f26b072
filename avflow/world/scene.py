"""Scene configuration and event-driven 2-D physics with exact contact times.

Units are pixels and seconds; x grows to the right, y grows downwards, the floor is y = H. Between events every
object moves on a polynomial of degree two (gravity while flying, rolling friction on the floor), so contact times
are roots of polynomials and are solved for directly instead of being found on a time grid.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from avflow.errors import ConfigError

MATERIALS = ("wood", "metal", "glass", "rubber")
SHAPES = ("circle", "square")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 70),
    "blue": (50, 90, 230),
    "yellow": (240, 220, 40),
    "orange": (245, 140, 30),
    "purple": (150, 60, 200),
    "white": (245, 245, 245),
    "cyan": (40, 210, 220),
    "pink": (245, 120, 190),
}
# restitution range per material (bounciness)
RESTITUTION = {"wood": (0.45, 0.6), "metal": (0.55, 0.7), "glass": (0.6, 0.75), "rubber": (0.75, 0.88)}
MAX_STEPS = 400  # event budget per clip; beyond it object-object contacts are ignored (no Zeno loops)


@dataclass
class WorldConfig:
    """Everything that shapes a clip except the seed."""

    width: int = 64
    height: int = 64
    fps: int = 16
    duration: float = 4.0
    sample_rate: int = 16000
    min_objects: int = 1
    max_objects: int = 4
    materials: tuple[str, ...] = MATERIALS
    gravity: float = 5.0  # frame heights per s^2
    rolling_friction: float = 0.6  # frame widths per s^2 of deceleration on the floor
    rest_speed: float = 0.35  # floor impacts slower than this (frame heights per s) stop bouncing
    min_event_speed: float = 0.05  # impacts slower than this (frame heights per s) make no sound and no event
    background: str = "drift"  # "static" or "drift" (slowly changing colours)
    rolling_sound: bool = True
    ambience: float = 0.002  # rms of the diffuse background noise; 0 disables it
    hrtf: str = "sphere"  # "sphere" (Woodworth + Brown-Duda) or "kemar" (measured, needs the `slab` package)
    gain: float = 0.12  # overall output gain before peak protection

    def __post_init__(self) -> None:
        for name in (f.name for f in fields(self) if f.type in ("int", "float")):  # NaN passes every comparison
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ConfigError(f"world {name} must be a finite number, got {value!r}")
        if not math.isfinite(self.duration * max(self.fps, self.sample_rate)):
            raise ConfigError(f"world duration {self.duration:g} s is too long to count its frames and samples")
        if self.width < 8 or self.height < 8:
            raise ConfigError(f"world size must be at least 8x8 pixels, got {self.width}x{self.height}")
        if self.fps <= 0 or self.duration <= 0 or self.sample_rate < 4000:
            raise ConfigError("world fps and duration must be positive and sample_rate at least 4000")
        if self.n_frames < 2:  # one frame shows no motion, and none writes no clip
            raise ConfigError(f"a world clip needs at least 2 frames: {self.duration:g} s at {self.fps} fps gives "
                              f"{self.n_frames}")  # fmt: skip
        if not 1 <= self.min_objects <= self.max_objects <= len(COLOURS):
            raise ConfigError(f"need 1 <= min_objects <= max_objects <= {len(COLOURS)}")
        if bad := [m for m in self.materials if m not in MATERIALS]:
            raise ConfigError(f"unknown material(s) {bad}; choose from {MATERIALS}")
        if self.background not in ("static", "drift"):
            raise ConfigError(f"background must be 'static' or 'drift', got {self.background!r}")
        if self.hrtf not in ("sphere", "kemar"):
            raise ConfigError(f"hrtf must be 'sphere' or 'kemar', got {self.hrtf!r}")

    @property
    def n_frames(self) -> int:
        return int(round(self.duration * self.fps))

    @property
    def n_samples(self) -> int:
        return int(round(self.duration * self.sample_rate))


@dataclass
class SceneObject:
    shape: str
    colour: str
    size: float  # radius of a circle or half side of a square, pixels
    material: str
    restitution: float
    position: tuple[float, float]  # initial centre (x, y), pixels
    velocity: tuple[float, float]  # initial (vx, vy), pixels / s

    @property
    def rgb(self) -> tuple[int, int, int]:
        return COLOURS[self.colour]


@dataclass
class Event:
    """One audible contact. `other` is the second object of an object-object collision, else None."""

    time: float
    object: int
    surface: str  # "floor", "wall", "ceiling" or "object"
    position: tuple[float, float]  # contact point, pixels
    speed: float  # normal impact speed, pixels / s
    other: int | None = None


@dataclass
class Trajectories:
    """Piecewise quadratic motion: object k follows p0 + v0 (t - t0) + a (t - t0)^2 / 2 on each of its segments."""

    starts: list[np.ndarray]  # per object (S,) segment start times
    p0: list[np.ndarray]  # (S, 2)
    v0: list[np.ndarray]  # (S, 2)
    acc: list[np.ndarray]  # (S, 2)
    on_floor: list[np.ndarray]  # (S,) bool: rolling or resting on the floor

    def at(self, times: np.ndarray) -> np.ndarray:
        """Positions (K, len(times), 2) at the given times."""
        out = []
        for starts, p0, v0, acc in zip(self.starts, self.p0, self.v0, self.acc):
            idx = np.clip(np.searchsorted(starts, times, side="right") - 1, 0, len(starts) - 1)
            dt = (times - starts[idx])[:, None]
            out.append(p0[idx] + v0[idx] * dt + 0.5 * acc[idx] * dt**2)
        return np.stack(out)

    def velocity_at(self, times: np.ndarray) -> np.ndarray:
        """Velocities (K, len(times), 2)."""
        out = []
        for starts, v0, acc in zip(self.starts, self.v0, self.acc):
            idx = np.clip(np.searchsorted(starts, times, side="right") - 1, 0, len(starts) - 1)
            out.append(v0[idx] + acc[idx] * (times - starts[idx])[:, None])
        return np.stack(out)

    def floor_at(self, times: np.ndarray) -> np.ndarray:
        """(K, len(times)) bool: on the floor."""
        out = []
        for starts, on_floor in zip(self.starts, self.on_floor):
            out.append(on_floor[np.clip(np.searchsorted(starts, times, side="right") - 1, 0, len(starts) - 1)])
        return np.stack(out)


@dataclass
class Scene:
    config: WorldConfig
    seed: int
    objects: list[SceneObject]
    events: list[Event] = field(default_factory=list)
    trajectories: Trajectories | None = None
    background: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "seed": self.seed,
            "objects": [asdict(o) for o in self.objects],
            "events": [asdict(e) for e in self.events],
        }


def sample_scene(config: WorldConfig, rng: np.random.Generator, seed: int = 0) -> Scene:
    """Draw objects (without overlaps) and simulate them."""
    W, H = config.width, config.height
    n = int(rng.integers(config.min_objects, config.max_objects + 1))
    colours = rng.choice(list(COLOURS), size=n, replace=False)
    objects: list[SceneObject] = []
    for k in range(n):
        material = str(rng.choice(list(config.materials)))
        size = float(rng.uniform(0.06, 0.11) * min(W, H))
        for _ in range(50):
            pos = (float(rng.uniform(size, W - size)), float(rng.uniform(size, 0.55 * H)))
            if all(np.hypot(pos[0] - o.position[0], pos[1] - o.position[1]) > size + o.size + 1 for o in objects):
                break
        lo, hi = RESTITUTION[material]
        objects.append(
            SceneObject(
                shape=str(rng.choice(SHAPES)),
                colour=str(colours[k]),
                size=size,
                material=material,
                restitution=float(rng.uniform(lo, hi)),
                position=pos,
                velocity=(float(rng.uniform(-0.9, 0.9) * W), float(rng.uniform(-0.6, 0.3) * H)),
            )
        )
    background = {
        "sky": rng.uniform(20, 90, size=3).round().tolist(),
        "ground": rng.uniform(30, 110, size=3).round().tolist(),
        "horizon": float(rng.uniform(0.55, 0.8)),
        "drift": rng.uniform(-6, 6, size=3).round(2).tolist() if config.background == "drift" else [0.0, 0.0, 0.0],
    }
    scene = Scene(config, seed, objects, background=background)
    simulate(scene)
    return scene


def _first_root(coeffs: tuple[float, ...], eps: float) -> float:
    """Smallest real root > eps of a polynomial (highest power first, degree <= 4), or inf."""
    while coeffs and coeffs[0] == 0.0:
        coeffs = coeffs[1:]
    if len(coeffs) <= 1:
        return math.inf
    if len(coeffs) == 2:
        t = -coeffs[1] / coeffs[0]
        return t if t > eps else math.inf
    if len(coeffs) == 3:
        a, b, c = coeffs
        disc = b * b - 4 * a * c
        if disc < 0:
            return math.inf
        sq = math.sqrt(disc)
        q = -0.5 * (b + math.copysign(sq, b))  # numerically stable pair of roots
        roots = [q / a] + ([c / q] if q != 0 else [])
        roots = [t for t in roots if t > eps]
        return min(roots) if roots else math.inf
    roots = np.roots(coeffs)
    real = roots[np.abs(roots.imag) < 1e-7 * (1 + np.abs(roots.real))].real
    real = real[real > eps]
    return float(real.min()) if real.size else math.inf


def simulate(scene: Scene) -> None:
    """Event-driven simulation filling `scene.events` and `scene.trajectories`."""
    config = scene.config
    W, H, T = float(config.width), float(config.height), float(config.duration)
    g, mu = config.gravity * H, config.rolling_friction * W
    v_rest, v_event = config.rest_speed * H, config.min_event_speed * H
    objs = scene.objects
    K = len(objs)
    r = [o.size for o in objs]
    inv_mass = [1.0 / o.size**2 for o in objs]
    px, py = [o.position[0] for o in objs], [o.position[1] for o in objs]
    vx, vy = [o.velocity[0] for o in objs], [o.velocity[1] for o in objs]
    floor = [False] * K
    segs: list[list[tuple]] = [[] for _ in range(K)]
    events: list[Event] = []
    eps = 1e-9

    t, steps = 0.0, 0
    while t < T:
        ax = [(-math.copysign(mu, vx[k]) if vx[k] != 0 else 0.0) if floor[k] else 0.0 for k in range(K)]
        ay = [0.0 if floor[k] else g for k in range(K)]
        for k in range(K):
            segs[k].append((t, px[k], py[k], vx[k], vy[k], ax[k], ay[k], floor[k]))
        best, what = T - t, None
        for k in range(K):
            for side, target in (("left", r[k]), ("right", W - r[k])):
                dt = _first_root((0.5 * ax[k], vx[k], px[k] - target), eps)
                if dt < best and ((vx[k] + ax[k] * dt < 0) if side == "left" else (vx[k] + ax[k] * dt > 0)):
                    best, what = dt, ("wall", k, side)
            if floor[k]:
                if vx[k] != 0 and (dt := abs(vx[k]) / mu) < best:
                    best, what = dt, ("stop", k, None)
                continue
            for side, target in (("floor", H - r[k]), ("ceiling", r[k])):
                dt = _first_root((0.5 * g, vy[k], py[k] - target), eps)
                if dt < best and ((vy[k] + g * dt > 0) if side == "floor" else (vy[k] + g * dt < 0)):
                    best, what = dt, (side, k, None)
        if steps < MAX_STEPS:
            for i in range(K):
                for j in range(i + 1, K):
                    dx, dy = px[j] - px[i], py[j] - py[i]
                    ux, uy = vx[j] - vx[i], vy[j] - vy[i]
                    bx, by = ax[j] - ax[i], ay[j] - ay[i]
                    R = r[i] + r[j]
                    dist = math.hypot(dx, dy)
                    if dist <= R and dx * ux + dy * uy < 0:
                        best, what = 0.0, ("object", i, j)
                        continue
                    if dist - R > math.hypot(ux, uy) * best + 0.5 * math.hypot(bx, by) * best**2:
                        continue  # cannot meet before the current best event
                    # |d + u t + b t^2 / 2|^2 - R^2 = 0
                    coeffs = (0.25 * (bx * bx + by * by), bx * ux + by * uy, ux * ux + uy * uy + bx * dx + by * dy,
                              2 * (dx * ux + dy * uy), dx * dx + dy * dy - R * R)  # fmt: skip
                    dt = _first_root(coeffs, eps)
                    if dt < best:
                        ex, ey = dx + ux * dt + 0.5 * bx * dt * dt, dy + uy * dt + 0.5 * by * dt * dt
                        if ex * (ux + bx * dt) + ey * (uy + by * dt) < 0:
                            best, what = dt, ("object", i, j)
        for k in range(K):  # advance everybody to the event
            px[k] += vx[k] * best + 0.5 * ax[k] * best * best
            py[k] += vy[k] * best + 0.5 * ay[k] * best * best
            vx[k] += ax[k] * best
            vy[k] += ay[k] * best
            if floor[k] and what is not None and what[0] == "stop" and what[1] == k:
                vx[k] = 0.0
        t += best
        steps += 1
        if what is None:
            break
        kind, k, extra = what
        if kind == "wall":
            px[k] = r[k] if extra == "left" else W - r[k]
            speed = abs(vx[k])
            vx[k] = -objs[k].restitution * vx[k]
            if speed >= v_event:
                events.append(Event(t, k, "wall", (0.0 if extra == "left" else W, py[k]), speed))
        elif kind in ("floor", "ceiling"):
            py[k] = H - r[k] if kind == "floor" else r[k]
            speed = abs(vy[k])
            vy[k] = -objs[k].restitution * vy[k]
            if kind == "floor" and abs(vy[k]) < v_rest:
                vy[k], floor[k] = 0.0, True
            if speed >= v_event:
                events.append(Event(t, k, kind, (px[k], H if kind == "floor" else 0.0), speed))
        elif kind == "object":
            i, j = k, extra
            dist = max(math.hypot(px[j] - px[i], py[j] - py[i]), 1e-12)
            nx, ny = (px[j] - px[i]) / dist, (py[j] - py[i]) / dist
            vn = (vx[i] - vx[j]) * nx + (vy[i] - vy[j]) * ny  # > 0 when approaching
            if vn > 0:
                # the floor takes the vertical part of an impulse that would push a resting object into it
                wi_y = 0.0 if floor[i] and ny < 0 else inv_mass[i]
                wj_y = 0.0 if floor[j] and ny > 0 else inv_mass[j]
                e = min(objs[i].restitution, objs[j].restitution)
                J = (1 + e) * vn / (inv_mass[i] * nx * nx + wi_y * ny * ny + inv_mass[j] * nx * nx + wj_y * ny * ny)
                vx[i] -= J * inv_mass[i] * nx
                vy[i] -= J * wi_y * ny
                vx[j] += J * inv_mass[j] * nx
                vy[j] += J * wj_y * ny
                for q in (i, j):
                    if floor[q] and vy[q] < -1e-9:
                        floor[q] = False  # kicked off the floor
                if vn >= v_event:
                    events.append(Event(t, i, "object", (px[i] + nx * r[i], py[i] + ny * r[i]), vn, other=j))
        for k in range(K):  # keep objects inside the box against round-off
            px[k] = min(max(px[k], r[k]), W - r[k])
            py[k] = min(max(py[k], r[k]), H - r[k])
    segments = [np.array([s[:7] for s in sk], dtype=np.float64) for sk in segs]
    scene.events = events
    scene.trajectories = Trajectories(
        starts=[s[:, 0] for s in segments],
        p0=[s[:, 1:3] for s in segments],
        v0=[s[:, 3:5] for s in segments],
        acc=[s[:, 5:7] for s in segments],
        on_floor=[np.array([s[7] for s in sk]) for sk in segs],
    )
