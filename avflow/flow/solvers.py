"""ODE solvers and the sampler for any generator implementing the `velocity` protocol.

Integrates from t = 0 (noise) to t = 1 (data). Clean-condition tokens (t_start = 1) are never changed.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from avflow.errors import ConfigError
from avflow.flow.guidance import GuidanceBranch, check_branches, checked_guided_velocity
from avflow.flow.streams import clean_mask
from avflow.flow.timesteps import shift_time

Streams = dict[str, torch.Tensor]
VelocityFn = Callable[[Streams, float], Streams]
Progress = Callable[[int, int], None]  # (steps done, steps in all), called after every fixed solver step

SOLVERS = ("euler", "heun", "midpoint", "dopri5")


@dataclass
class SampleResult:
    streams: Streams
    nfe: int


def time_grid(steps: int, shift: float = 1.0) -> torch.Tensor:
    """(steps + 1,) times from 0 to 1, uniform or shifted (`shift` > 1 puts more steps near noise)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    t = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    return shift_time(t, shift) if shift != 1.0 else t


def _axpy(x: Streams, h: float, *terms: tuple[float, Streams]) -> Streams:
    """x + h * sum_i c_i k_i for every stream."""
    out = {}
    for s, v in x.items():
        acc = None
        for c, k in terms:
            if c == 0.0:
                continue
            acc = c * k[s] if acc is None else acc + c * k[s]
        out[s] = v if acc is None else v + h * acc
    return out


def euler_step(f: VelocityFn, x: Streams, t: float, h: float) -> Streams:
    return _axpy(x, h, (1.0, f(x, t)))


def midpoint_step(f: VelocityFn, x: Streams, t: float, h: float) -> Streams:
    k1 = f(x, t)
    k2 = f(_axpy(x, 0.5 * h, (1.0, k1)), t + 0.5 * h)
    return _axpy(x, h, (1.0, k2))


def heun_step(f: VelocityFn, x: Streams, t: float, h: float) -> Streams:
    k1 = f(x, t)
    k2 = f(_axpy(x, h, (1.0, k1)), t + h)
    return _axpy(x, h, (0.5, k1), (0.5, k2))


FIXED_STEP = {"euler": euler_step, "heun": heun_step, "midpoint": midpoint_step}
EVALUATIONS_PER_STEP = {"euler": 1, "heun": 2, "midpoint": 2}  # velocity evaluations per fixed step

# Dormand-Prince 5(4) tableau.
_DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_DP_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_DP_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_DP_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)


MAX_EVALUATIONS = 100_000  # dopri5's velocity evaluations: far past any tolerance a flow needs, short of forever


def check_tolerances(rtol: float, atol: float) -> None:
    """A one-line ConfigError unless `rtol` and `atol` are finite numbers >= 0, one of them > 0 (at 0 and 0 no step
    is ever accurate enough: dopri5 would shrink its step forever)."""
    for name, value in (("rtol", rtol), ("atol", atol)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
    if rtol == 0 and atol == 0:
        raise ConfigError("rtol and atol are both 0: no step can meet that tolerance; give one of them > 0")


def _error_norm(x: Streams, x5: Streams, ks: list[Streams], h: float, rtol: float, atol: float) -> float:
    """The RMS of the 5(4) error estimate over every element, each in units of atol + rtol |x| (0 where it is 0);
    NaN where the estimate itself is not finite (a step too long, or a diverged velocity)."""
    err_sq, n = 0.0, 0
    for s in x:
        e = h * sum((b5 - b4) * k[s] for b5, b4, k in zip(_DP_B5, _DP_B4, ks) if b5 != b4)
        if not bool(torch.isfinite(e).all()):
            return math.nan
        scale = atol + rtol * torch.maximum(x[s].abs(), x5[s].abs())
        ratio = torch.where(e == 0, torch.zeros_like(e), e / scale)  # 0 / 0 where x and its error both vanish
        err_sq += float(ratio.square().sum())
        n += e.numel()
    return math.sqrt(err_sq / max(n, 1))


def _underflow(t: float, h: float, rtol: float, atol: float, err: float) -> str:
    """Why dopri5's step shrank to nothing at time `t`: a velocity that is not finite, or tolerances too tight."""
    if math.isnan(err):
        return f"dopri5: sampling diverged (the velocity is not finite near t = {t:.6g}; the step shrank to {h:.3g})"
    return (f"dopri5: the step size underflowed at t = {t:.6g} (h = {h:.3g}): rtol {rtol:g} / atol {atol:g} are too "
            "tight for this precision; loosen them")  # fmt: skip


def dopri5(
    f: VelocityFn,
    x: Streams,
    t0: float = 0.0,
    t1: float = 1.0,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_evaluations: int = MAX_EVALUATIONS,
) -> Streams:
    """Adaptive Dormand-Prince 5(4) with first-same-as-last and standard step-size control.
    A ConfigError, not an endless loop, when the step underflows (h too small to move t) or `max_evaluations` pass."""
    check_tolerances(rtol, atol)
    t, h = t0, min(0.1, t1 - t0)
    k1 = f(x, t)
    evaluations, err = 1, 0.0
    while t < t1 - 1e-12:
        h = min(h, t1 - t)
        if h <= 16 * sys.float_info.epsilon * max(1.0, abs(t)):
            raise ConfigError(_underflow(t, h, rtol, atol, err))
        if evaluations + 6 > max_evaluations:
            raise ConfigError(f"dopri5: {max_evaluations} velocity evaluations reached at t = {t:.6g} before t = "
                              f"{t1:g}: loosen rtol {rtol:g} / atol {atol:g}")  # fmt: skip
        ks = [k1]
        for i in range(1, 7):
            xi = _axpy(x, h, *zip(_DP_A[i], ks))
            ks.append(f(xi, t + _DP_C[i] * h))
        evaluations += 6
        x5 = xi  # stage 7 is evaluated at the 5th-order solution (FSAL)
        err = _error_norm(x, x5, ks, h, rtol, atol)
        if err <= 1.0:
            t, x, k1 = t + h, x5, ks[6]
        factor = 0.2 if math.isnan(err) else 0.9 * (1.0 / err) ** 0.2 if err > 0 else 5.0
        h = h * min(5.0, max(0.2, factor))
    return x


def integrate(
    f: VelocityFn,
    x: Streams,
    *,
    steps: int = 25,
    solver: str = "euler",
    shift: float = 1.0,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    progress: Progress | None = None,
) -> Streams:
    """Solve dx/dt = f(x, t) from t = 0 to 1 with a fixed-step solver on a (shifted) grid, or dopri5; `progress`
    hears of every fixed step (dopri5 chooses its steps as it goes and reports none)."""
    if solver == "dopri5":
        return dopri5(f, x, 0.0, 1.0, rtol=rtol, atol=atol)
    if solver not in FIXED_STEP:
        raise ValueError(f"unknown solver {solver!r}; choose from {', '.join(SOLVERS)}")
    step = FIXED_STEP[solver]
    grid = time_grid(steps, shift).tolist()
    for i, (t, t_next) in enumerate(zip(grid[:-1], grid[1:])):
        x = step(f, x, t, t_next - t)
        if progress is not None:
            progress(i + 1, steps)
    return x


def check_settings(steps: int, solver: str, shift: float) -> None:
    """`SamplingConfig`'s one-line ConfigErrors for these solver settings (its rules, in one place)."""
    from avflow.flow.sampling import SamplingConfig  # which imports this module

    SamplingConfig(cfg_strength=1.0, steps=steps, solver=solver, shift=shift)


def check_stream_names(noise: Streams, **given: Streams) -> None:
    """A one-line ConfigError where `noise` is empty, or `clean` / `t_start` name a stream it does not have (their
    frames would be dropped silently)."""
    if not noise:
        raise ConfigError("noise holds no stream: nothing to sample")
    for what, streams in given.items():
        unknown = sorted(set(streams) - set(noise))
        if unknown:
            raise ConfigError(f"{what} names {', '.join(map(repr, unknown))}, not a sampled stream (the streams: "
                              f"{', '.join(map(repr, noise))})")  # fmt: skip


def check_batch(noise: Streams) -> None:
    """A one-line ConfigError unless every noise stream has one batch size (the samples pair up across streams)."""
    sizes = {s: n.shape[0] if n.ndim else None for s, n in noise.items()}
    if len(set(sizes.values())) > 1:
        raise ConfigError(f"the noise streams must share one batch size, got "
                          f"{', '.join(f'{s} {b}' for s, b in sizes.items())}")  # fmt: skip


def check_clean_streams(clean: Streams, t_start: Streams) -> None:
    """A one-line ConfigError where `clean` names a stream that `t_start` does not: with no start times marking its
    clean frames (1), the clean tensor would be ignored silently."""
    missing = sorted(set(clean) - set(t_start))
    if missing:
        raise ConfigError(f"clean gives {', '.join(map(repr, missing))} but t_start does not: mark its clean frames "
                          "with t_start (1 = clean, 0 = sampled), or leave the stream out of clean")  # fmt: skip


def check_start(stream: str, t_start: torch.Tensor, noise: torch.Tensor) -> None:
    """A one-line ConfigError unless `t_start` is (B,) or (B, T) of `noise`'s batch holding 0 (sampled from noise) or
    1 (a clean condition) only: the sampler integrates every other frame from t = 0."""
    b = noise.shape[0]
    if t_start.ndim not in (1, 2) or t_start.shape[0] != b:
        raise ConfigError(f"t_start[{stream!r}] must be ({b},) or ({b}, T), got shape {tuple(t_start.shape)}")
    odd = (t_start != 0) & (t_start != 1)
    if bool(odd.any()):
        raise ConfigError(f"t_start[{stream!r}] must hold 0 (sampled from noise) or 1 (a clean frame) only, got "
                          f"{t_start[odd][0].item():g}")  # fmt: skip


@torch.no_grad()
def sample(
    model,
    noise: Streams,
    cond: Any,
    *,
    steps: int = 25,
    solver: str = "euler",
    shift: float = 1.0,
    guidance: list[GuidanceBranch] | tuple = (),
    clean: Streams | None = None,
    t_start: Streams | None = None,
    batched: bool = True,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    progress: Progress | None = None,
) -> SampleResult:
    """Sample every stream of `noise` with `model.velocity` (`progress(done, steps)` after every fixed step).

    `t_start[s]` is (B,) or (B, T) per latent frame, each 0 or 1; frames at 1 are clean conditions copied from
    `clean[s]` (the shape of `noise[s]`) and stay bit-identical; the model sees t = 1 there and the current solver
    time elsewhere. Bad settings, strengths (`GuidanceBranch`), stream names or start times are one-line ConfigErrors
    before the first step, and so is `guidance` that is not a list of branches (`check_branches`: a preset name goes
    to `preset_branches` or `sample_with`, a strength W to `cfg(W)`).
    So are `clean` for a stream `t_start` lacks, noise streams of unequal batch, and dopri5's rtol/atol < 0 (or both 0).
    """
    check_settings(steps, solver, shift)
    if solver == "dopri5":  # the fixed-step solvers take no tolerances
        check_tolerances(rtol, atol)
    guidance = check_branches(guidance)  # once here: the loop below runs the checked branches
    clean = clean or {}
    t_start = t_start or {}
    check_stream_names(noise, clean=clean, t_start=t_start)
    check_batch(noise)
    check_clean_streams(clean, t_start)
    b = next(iter(noise.values())).shape[0]
    masks: dict[str, torch.Tensor] = {}
    t_shape: dict[str, torch.Tensor] = {}
    x0: Streams = {}
    for s, n in noise.items():
        ts = t_start.get(s, torch.zeros(b, device=n.device))
        check_start(s, ts, n)
        t_shape[s] = ts
        m = clean_mask(ts, n, s)
        if bool(m.any()):
            if s not in clean:
                raise ValueError(f"stream {s!r} has clean frames (t_start = 1) but no clean tensor was given")
            if clean[s].shape != n.shape:
                raise ConfigError(f"clean[{s!r}] must have the shape of its noise, {tuple(n.shape)}, got "
                                  f"{tuple(clean[s].shape)}")  # fmt: skip
            masks[s] = m
            x0[s] = torch.where(m, clean[s].to(n.dtype), n)
        else:
            x0[s] = n
    nfe = 0

    def f(x: Streams, t: float) -> Streams:
        nonlocal nfe
        tt = {s: torch.where(ts >= 1.0, torch.ones_like(ts), torch.full_like(ts, t)) for s, ts in t_shape.items()}
        v, n_eval = checked_guided_velocity(model, x, tt, cond, guidance, time=t, batched=batched)
        nfe += n_eval
        return {s: torch.where(masks[s], torch.zeros_like(v[s]), v[s]) if s in masks else v[s] for s in x}

    out = integrate(f, x0, steps=steps, solver=solver, shift=shift, rtol=rtol, atol=atol, progress=progress)
    # Clean tokens are restored exactly (guards against any arithmetic on masked zeros).
    out = {s: torch.where(masks[s], x0[s], v) if s in masks else v for s, v in out.items()}
    return SampleResult(out, nfe)
