"""Binaural rendering of moving mono sources.

`sphere`: Woodworth ITD + Brown-Duda single-pole/single-zero head shadow. The shadow filter
H = (2 w0 + alpha s) / (2 w0 + s) splits into a fixed low-pass plus alpha times a fixed high-pass, so a moving source
only needs alpha and the delay interpolated per sample between block values.
`kemar`: measured MIT KEMAR HRIRs (horizontal plane) from the data bundled in the `slab` package, cross-faded
between neighbouring directions per sample.

Conventions (docs/conventions.md): azimuth = (x / W - 0.5) * 90 deg, negative = left; ITD > 0 when the left ear leads.
"""

from __future__ import annotations

import bz2
import importlib
import importlib.util
import pickle
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.signal import fftconvolve, lfilter, resample_poly

from avflow.errors import ConfigError

HEAD_RADIUS = 0.0875  # m
SPEED_OF_SOUND = 343.0  # m/s
FIELD_OF_VIEW = 90.0  # degrees
BLOCK = 128  # samples between azimuth updates


def azimuth_deg(x: np.ndarray, width: int) -> np.ndarray:
    """Pixel x-centre -> azimuth in degrees (negative = left)."""
    return (np.asarray(x, dtype=np.float64) / width - 0.5) * FIELD_OF_VIEW


def woodworth_itd(azimuth: np.ndarray) -> np.ndarray:
    """ITD in seconds (> 0 when the left ear leads) for azimuth in degrees, negative = left."""
    theta = np.deg2rad(np.clip(np.abs(azimuth), 0, 90))
    return -np.sign(azimuth) * HEAD_RADIUS / SPEED_OF_SOUND * (theta + np.sin(theta))


def shadow_alpha(incidence: np.ndarray, alpha_min: float = 0.1, theta_min: float = 150.0) -> np.ndarray:
    """Brown-Duda zero coefficient for the angle (deg) between the source and the ear's axis."""
    return (1 + alpha_min / 2) + (1 - alpha_min / 2) * np.cos(np.asarray(incidence) / theta_min * np.pi)


def _shadow_filters(sample_rate: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Bilinear-transformed low-pass 2w0/(s+2w0) and high-pass s/(s+2w0), w0 = c / a."""
    w = 2 * SPEED_OF_SOUND / HEAD_RADIUS
    k = 2.0 * sample_rate
    a = np.array([1.0, (w - k) / (k + w)])
    return (np.array([w, w]) / (k + w), a), (np.array([k, -k]) / (k + w), a)


def block_to_samples(values: np.ndarray, n: int, block: int = BLOCK) -> np.ndarray:
    """Linear interpolation from block-centre values (centre b at b * block + block // 2) to n samples."""
    values = np.asarray(values, dtype=np.float64)
    ramp = np.arange(block) / block  # (block,)
    inner = (values[:-1, None] + np.diff(values)[:, None] * ramp[None, :]).ravel()  # from centre 0 to the last one
    head, tail = np.full(block // 2, values[0]), np.full(max(n, 0), values[-1])
    return np.concatenate([head, inner, tail])[:n]


def _per_sample(block_values: np.ndarray, n: int) -> np.ndarray:
    return block_to_samples(np.asarray(block_values, dtype=np.float64), n)


def block_times(n_samples: int, sample_rate: int) -> np.ndarray:
    """(B,) times of the block centres at which source positions are evaluated."""
    return (np.arange(int(np.ceil(n_samples / BLOCK))) * BLOCK + BLOCK / 2) / sample_rate


def fractional_delay(signal: np.ndarray, delay: np.ndarray) -> np.ndarray:
    """Time-varying fractional delay (samples, >= 0) by linear interpolation between integer shifts."""
    n = signal.shape[-1]
    out = np.zeros(n)
    for shift in range(int(np.floor(delay.min())), int(np.ceil(delay.max())) + 1):
        weight = np.maximum(1.0 - np.abs(delay[shift:] - shift), 0.0)
        out[shift:] += signal[: n - shift] * weight
    return out


# render_sphere works through the track this many samples at a time: whole-track float64 temporaries (low and high
# halves, per-sample gains and delays, each ear and its delayed sum) took 221 MB per minute at 48 kHz. Every sample is
# computed with the same operations in the same order as over the whole track (the filter's state carried between
# chunks, each delay's history kept), so the output is bit-identical.
RENDER_CHUNK = 1 << 16


def _per_sample_range(values: np.ndarray, n: int, start: int, stop: int, block: int = BLOCK) -> np.ndarray:
    """``block_to_samples(values, n)[start:stop]`` (float64), without the other samples."""
    values = np.asarray(values, dtype=np.float64)
    half, inner_n = block // 2, (len(values) - 1) * block
    out = np.empty(stop - start)
    if start < min(stop, half):
        out[: min(stop, half) - start] = values[0]
    i0, i1 = max(start, half) - half, min(stop, half + inner_n) - half  # positions in the interpolated part
    if i1 > i0:
        r0, r1 = i0 // block, -(-i1 // block)
        ramp = np.arange(block) / block
        inner = (values[r0:r1, None] + np.diff(values[r0 : r1 + 1])[:, None] * ramp[None, :]).ravel()
        out[i0 + half - start : i1 + half - start] = inner[i0 - r0 * block : i1 - r0 * block]
    if stop > max(start, half + inner_n):
        out[max(start, half + inner_n) - start :] = values[-1]
    return out


def render_sphere(source: np.ndarray, azimuth: np.ndarray, sample_rate: int, dtype=np.float64) -> np.ndarray:
    """source (N,), azimuth (B,) degrees at block centres -> (2, N) [left, right]; the shadow gain and the delay
    are computed per block and interpolated per sample. Rendered :data:`RENDER_CHUNK` samples at a time, each
    written as ``dtype`` (float32: what ``astype(np.float32)`` of the float64 result gives, without that copy)."""
    n = source.shape[-1]
    (b_lp, a_lp), _ = _shadow_filters(sample_rate)
    itd = woodworth_itd(azimuth) * sample_rate  # (B,) samples, > 0: left leads, so the right ear is delayed
    spans = [(a, min(a + RENDER_CHUNK, n)) for a in range(0, n, RENDER_CHUNK)]
    ears = []
    for alpha, delay in ((shadow_alpha(azimuth + 90.0), -itd), (shadow_alpha(90.0 - azimuth), itd)):
        delay = np.maximum(delay, 0.0)
        shifts = None  # fractional_delay's integer shifts, from the per-sample delays' range
        if np.any(delay > 1e-6):
            lo = min(float(_per_sample_range(delay, n, a, b).min()) for a, b in spans)
            hi = max(float(_per_sample_range(delay, n, a, b).max()) for a, b in spans)
            shifts = range(int(np.floor(lo)), int(np.ceil(hi)) + 1)
        ears.append((alpha, delay, shifts))
    out = np.empty((2, n), dtype=dtype)
    state = np.zeros(max(len(a_lp), len(b_lp)) - 1)  # the low-pass's state between chunks (zero at the start)
    history = [np.zeros(0), np.zeros(0)]  # each ear's samples before the chunk that its delays reach back to
    for a, b in spans:
        src = source[a:b]
        low, state = lfilter(b_lp, a_lp, src, zi=state)
        high = src - low  # the low-pass and high-pass halves sum to one
        for e, (alpha, delay, shifts) in enumerate(ears):
            ear = low + _per_sample_range(alpha, n, a, b) * high
            if shifts is None:
                out[e, a:b] = ear
                continue
            d = _per_sample_range(delay, n, a, b)
            sig = np.concatenate([history[e], ear])  # sig[j]: the ear's sample a - len(history) + j
            first = a - history[e].size
            acc = np.zeros(b - a)  # fractional_delay: the shifts' weighted samples, summed in the same order
            for shift in shifts:
                i0 = max(a, shift)
                if i0 < b:
                    weight = np.maximum(1.0 - np.abs(d[i0 - a :] - shift), 0.0)
                    acc[i0 - a :] += sig[i0 - shift - first : b - shift - first] * weight
            out[e, a:b] = acc
            history[e] = sig[max(0, sig.size - shifts[-1]) :]
    return out


class _SlabUnpickler(pickle.Unpickler):
    """Reads slab's bundled KEMAR pickle without importing slab (its import needs matplotlib and PortAudio)."""

    class Record:
        def __setstate__(self, state: dict) -> None:
            self.__dict__.update(state)

    def find_class(self, module: str, name: str):
        if (module, name) in (("slab.hrtf", "HRTF"), ("slab.filter", "Filter")):
            return self.Record
        if module in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray") and name in (
            "_reconstruct",
            "ndarray",
            "dtype",
            "scalar",
        ):
            return getattr(importlib.import_module(module.replace("numpy.core", "numpy._core")), name)
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in the KEMAR data")


def kemar_path() -> Path:
    spec = importlib.util.find_spec("slab")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("hrtf='kemar' needs the `slab` package (pip install 'avflow[hrtf]' or pip install slab)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "mit_kemar_normal_pinna.bz2"
    if not path.is_file():
        raise ConfigError(f"the KEMAR data is missing from the slab package: {path}")
    return path


@lru_cache(maxsize=4)
def kemar_hrirs(sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal-plane KEMAR HRIRs in the field of view: (azimuths deg ascending, negative = left; (A, 2, L)).
    The delay common to all directions is trimmed so the leading ear starts at the impact time."""
    with bz2.BZ2File(kemar_path()) as f:
        record = _SlabUnpickler(f).load()
    sources = np.asarray(record.sources, dtype=np.float64)  # (710, 3) azimuth ccw (left positive), elevation, dist
    rate = int(round(float(record.samplerate)))
    keep = np.abs(sources[:, 1]) < 1e-6
    az = -((sources[keep, 0] + 180.0) % 360.0 - 180.0)  # to our convention: negative = left
    irs = np.stack([np.asarray(record.data[i].data, dtype=np.float64).T for i in np.flatnonzero(keep)])  # (A, 2, L)
    inside = np.abs(az) <= FIELD_OF_VIEW / 2 + 5.0
    order = np.argsort(az[inside])
    az, irs = az[inside][order], irs[inside][order]
    g = np.gcd(sample_rate, rate)
    irs = resample_poly(irs, sample_rate // g, rate // g, axis=-1)
    env = np.abs(irs)
    lead = int(min(np.argmax(env[i, e] > 0.1 * env[i, e].max()) for i in range(len(az)) for e in range(2)))
    irs = irs[..., max(lead - 1, 0) :]
    return az, irs / np.abs(irs).sum(-1).max()


def render_kemar(source: np.ndarray, azimuth: np.ndarray, sample_rate: int) -> np.ndarray:
    """source (N,), azimuth (B,) degrees -> (2, N), cross-fading the two nearest measured directions."""
    n = source.shape[-1]
    az_grid, irs = kemar_hrirs(sample_rate)
    pos = np.interp(_per_sample(azimuth, n), az_grid, np.arange(len(az_grid)))  # fractional direction index
    lo = np.floor(pos).astype(np.int64)
    frac = pos - lo
    out = np.zeros((2, n))
    for j in np.unique(np.concatenate([lo, np.minimum(lo + 1, len(az_grid) - 1)])):
        weight = np.where(lo == j, 1 - frac, 0.0) + np.where(lo + 1 == j, frac, 0.0)
        if np.any(weight > 0):
            out += fftconvolve(source[None, :], irs[j], axes=-1)[:, :n] * weight
    return out


def render_binaural(sources: np.ndarray, x_centres: np.ndarray, width: int, sample_rate: int, hrtf: str = "sphere"):
    """sources (K, N) mono, x_centres (K, B) pixel x at `block_times` -> (2, N) float64."""
    render = {"sphere": render_sphere, "kemar": render_kemar}[hrtf]
    out = np.zeros((2, sources.shape[-1]))
    for src, x in zip(sources, x_centres):
        if np.any(src):
            out += render(src, azimuth_deg(x, width), sample_rate)
    return out
