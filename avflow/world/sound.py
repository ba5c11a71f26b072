"""Impact sounds by modal synthesis, rolling/scraping noise and ambience, one mono source per object."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.signal import butter, lfilter

from avflow.world.binaural import BLOCK, block_times, block_to_samples
from avflow.world.scene import Scene


@dataclass(frozen=True)
class MaterialModes:
    """Modal recipe: base frequency range (Hz), partial ratios, per-partial T60 (s) and amplitudes."""

    f0: tuple[float, float]
    ratios: tuple[float, ...]
    t60: tuple[float, ...]
    amps: tuple[float, ...]
    click_ms: float  # contact transient decay; short for hard materials
    click_gain: float
    rolling_band: tuple[float, float]  # Hz, for rolling/scraping noise


MATERIAL_MODES: dict[str, MaterialModes] = {
    "wood": MaterialModes((250, 600), (1.0, 2.61, 4.12, 5.93), (0.09, 0.06, 0.04, 0.03), (1.0, 0.6, 0.4, 0.25),
                          0.4, 0.5, (150, 900)),
    "metal": MaterialModes((400, 900), (1.0, 1.004, 2.76, 5.40, 8.93), (1.4, 1.3, 1.0, 0.7, 0.45),
                           (1.0, 0.5, 0.7, 0.5, 0.35), 0.1, 0.3, (800, 3000)),
    "glass": MaterialModes((900, 1800), (1.0, 2.32, 4.25, 6.63), (0.7, 0.5, 0.35, 0.25), (1.0, 0.6, 0.45, 0.3),
                           0.1, 0.3, (1500, 5000)),
    "rubber": MaterialModes((90, 180), (1.0, 1.93, 3.1), (0.05, 0.035, 0.02), (1.0, 0.5, 0.3), 1.5, 0.8, (80, 400)),
}  # fmt: skip


def object_modes(scene: Scene, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(freqs Hz, decay times tau s, amplitudes) of object k, fixed per object; modes above 0.45 sr are dropped."""
    obj, config = scene.objects[k], scene.config
    recipe = MATERIAL_MODES[obj.material]
    rng = np.random.default_rng([scene.seed, 1, k])
    size_ref = 0.085 * min(config.width, config.height)
    f0 = rng.uniform(*recipe.f0) * size_ref / obj.size
    freqs = f0 * np.asarray(recipe.ratios) * rng.uniform(0.98, 1.02, len(recipe.ratios))
    tau = np.asarray(recipe.t60) / 6.91 * rng.uniform(0.85, 1.15, len(recipe.ratios))
    amps = np.asarray(recipe.amps) * rng.uniform(0.8, 1.2, len(recipe.ratios))
    keep = freqs < 0.45 * config.sample_rate
    return freqs[keep], tau[keep], amps[keep]


def impact_gain(speed: float, height: int) -> float:
    """Loudness grows with the normal impact speed (in frame heights per second)."""
    return float((speed / height / 3.0) ** 1.2)


def object_sources(scene: Scene, events: list[int] | None = None, rolling: bool | None = None) -> np.ndarray:
    """(K, N) mono signal radiated by each object: its impacts (all, or only `events` indices) plus rolling noise."""
    config = scene.config
    N, K = config.n_samples, len(scene.objects)
    rolling = config.rolling_sound if rolling is None else rolling
    chosen = range(len(scene.events)) if events is None else events
    hits: list[list[tuple[int, float, float]]] = [[] for _ in range(K)]  # per object: (event index, time, gain)
    for e in chosen:
        ev = scene.events[e]
        for k in (ev.object, ev.other):
            if k is not None:
                hits[k].append((e, ev.time, impact_gain(ev.speed, config.height)))
    out = np.zeros((K, N))
    for k in range(K):
        if hits[k]:
            out[k] += _modal(scene, k, hits[k])
            out[k] += _clicks(scene, k, hits[k])
        if rolling:
            out[k] += _rolling(scene, k)
    return out


def _modal(scene: Scene, k: int, hits: list[tuple[int, float, float]]) -> np.ndarray:
    """Sum over hits of g a exp(-(t - t0) / tau) cos(2 pi f (t - t0)) for t >= t0 (sub-sample accurate onsets).
    Each mode keeps one complex state that is carried from hit to hit, so the cost is one pass over the samples."""
    sr, N = scene.config.sample_rate, scene.config.n_samples
    freqs, tau, amps = object_modes(scene, k)
    hits = sorted(hits, key=lambda h: h[1])
    starts = [int(np.ceil(t * sr - 1e-9)) for _, t, _ in hits]
    jitter = [np.random.default_rng([scene.seed, 2, e, k]).uniform(0.7, 1.3, len(freqs)) for e, _, _ in hits]
    out = np.zeros(N)
    for m, (f, ta, a) in enumerate(zip(freqs, tau, amps)):
        s = -1.0 / ta + 2j * np.pi * f
        length = min(N, int(np.ceil(np.log(1e4) * ta * sr)))  # until -80 dB
        ramp = _powers(np.exp(s / sr), length)
        re, im = ramp.real.copy(), ramp.imag.copy()
        state, last = 0j, 0
        for h, ((_, t0, g), n0) in enumerate(zip(hits, starts)):
            if n0 >= N:
                break
            state = state * np.exp(s * (n0 - last) / sr) + g * a * jitter[h][m] * np.exp(s * (n0 / sr - t0))
            last = n0
            stop = min(starts[h + 1] if h + 1 < len(starts) else N, N, n0 + length)
            out[n0:stop] += state.real * re[: stop - n0] - state.imag * im[: stop - n0]
    return out


def _powers(p: complex, length: int, chunk: int = 256) -> np.ndarray:
    """p ** arange(length) as an outer product of two short power tables (cheaper than a long complex exp)."""
    inner = p ** np.arange(chunk)
    outer = (p**chunk) ** np.arange(-(-length // chunk))
    return (outer[:, None] * inner[None, :]).ravel()[:length]


def _clicks(scene: Scene, k: int, hits: list[tuple[int, float, float]]) -> np.ndarray:
    """Short noisy contact transients starting at each impact time."""
    config = scene.config
    sr, N = config.sample_rate, config.n_samples
    recipe = MATERIAL_MODES[scene.objects[k].material]
    tau = recipe.click_ms / 1000.0
    length = int(np.ceil(6 * tau * sr)) + 2
    out = np.zeros(N)
    for e, t0, g in hits:
        n0 = int(np.ceil(t0 * sr - 1e-9))
        n = np.arange(n0, min(n0 + length, N))
        if n.size == 0:
            continue
        noise = np.random.default_rng([scene.seed, 3, e, k]).uniform(-1, 1, n.size)
        noise[0] = 1.0  # a definite leading edge
        out[n] += g * recipe.click_gain * np.exp(-(n / sr - t0) / tau) * noise
    return out


def _rolling(scene: Scene, k: int) -> np.ndarray:
    """Band-limited noise while the object moves along the floor; louder when faster. Squares scrape (brighter)."""
    config = scene.config
    sr, N = config.sample_rate, config.n_samples
    t_blocks = block_times(N, sr)
    vel = scene.trajectories.velocity_at(t_blocks)[k]  # (B, 2)
    on_floor = scene.trajectories.floor_at(t_blocks)[k]
    speed = np.where(on_floor, np.abs(vel[:, 0]) / config.width, 0.0)
    active = np.flatnonzero(speed > 1e-3)
    if active.size == 0:
        return np.zeros(N)
    env = block_to_samples(0.03 * speed, N)
    lo_n, hi_n = max(active[0] - 1, 0) * BLOCK, min((active[-1] + 2) * BLOCK, N)
    obj = scene.objects[k]
    lo, hi = MATERIAL_MODES[obj.material].rolling_band
    if obj.shape == "square":
        lo, hi = lo * 2, hi * 2
    hi = min(hi, 0.45 * sr)
    b, a = butter(2, [lo / (sr / 2), hi / (sr / 2)], btype="band")
    noise = np.random.default_rng([scene.seed, 4, k]).standard_normal(hi_n - lo_n)
    out = np.zeros(N)
    out[lo_n:hi_n] = lfilter(b, a, noise) * env[lo_n:hi_n]
    return out


@lru_cache(maxsize=4)
def _ambience_bank(sample_rate: int) -> np.ndarray:
    """(2, 8 s) unit-rms, softly low-passed noise shared by all clips; clips read it at seeded offsets."""
    noise = np.random.default_rng(12345).standard_normal((2, 8 * sample_rate))
    noise = lfilter([0.15], [1.0, -0.85], noise, axis=-1)
    return noise / np.sqrt(np.mean(noise**2, axis=-1, keepdims=True))


def ambience(scene: Scene) -> np.ndarray:
    """(2, N) diffuse background noise of rms `config.ambience`, independent per ear (seeded slices of a bank)."""
    config = scene.config
    N = config.n_samples
    if config.ambience <= 0:
        return np.zeros((2, N))
    bank = _ambience_bank(config.sample_rate)
    rng = np.random.default_rng([scene.seed, 5])
    out = np.empty((2, N))
    for ear in range(2):
        pos, filled = int(rng.integers(bank.shape[1])), 0
        while filled < N:  # wrap around the bank for clips longer than it
            take = min(N - filled, bank.shape[1] - pos)
            out[ear, filled : filled + take] = bank[ear, pos : pos + take]
            filled, pos = filled + take, 0
    return out * config.ambience
