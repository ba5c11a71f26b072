"""Sampling settings as data: one frozen config for the solver, its time grid and the guidance, validated once.

`cfg_strength` (the guidance scale w, 1 = off) has no default here: each model states its own in its config
(MMAudio: `avflow.models.mmaudio_config.SAMPLING`; the shipped joint model: its `config.json`; the binaural model:
`avflow.models.binaural.SAMPLING`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from typing import Any

from avflow.errors import ConfigError
from avflow.flow.guidance import PRESETS, GuidanceBranch, preset_branches
from avflow.flow.solvers import SOLVERS, SampleResult, sample

Streams = dict

# Sampler presets: the solver, steps and time-grid shift they set (a model's guidance settings stay its own).
# "fast" is to reach Euler-25's accuracy (MSE of the final latents against dopri5 at rtol 1e-6) in <= 40 % of
# Euler-25's time (at most 20 of its 50 network evaluations); benchmarks/fast_sampler.py measures the candidates
# (on an MMAudio-layout network, or with --joint on the default joint model).
# Chosen on the trained default joint model v2 (docs/foley.md "Fewer steps"): midpoint 5 steps shift 2 reached
# 0.58x Euler-25's MSE in 39 % of its time (20 of 50 evaluations), the only one of 20 candidates that qualified.
SAMPLER_PRESETS: dict[str, dict[str, Any]] = {
    "fast": {"solver": "midpoint", "steps": 5, "shift": 2.0},
}


MAX_STEPS = 10_000  # far past where a flow's sampling stops changing; a typo's 1e20 would not allocate a time grid


@dataclass(frozen=True, kw_only=True)
class SamplingConfig:
    """Solver, steps and timestep shift; the guidance preset (`avflow.flow.guidance.PRESETS`) and its strengths."""

    cfg_strength: float  # w of the preset's main branch; 1 = no guidance
    steps: int = 25
    solver: str = "euler"  # see avflow.flow.solvers.SOLVERS (dopri5 ignores steps and shift)
    shift: float = 1.0  # timestep shift s >= 1: t' = t / (s - (s - 1) t) puts more steps near noise
    guidance: str = "plain"
    text_cfg_strength: float = 1.0  # the empty-text branch of the `modality_text` preset
    # w of the main branch for the named streams (e.g. {"video": 4.5}); streams not named take cfg_strength
    stream_cfg_strength: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        strengths = {"cfg_strength": self.cfg_strength, "text_cfg_strength": self.text_cfg_strength}
        if not isinstance(self.stream_cfg_strength, dict):
            raise ConfigError(f"stream_cfg_strength must map stream names to strengths, got "
                              f"{self.stream_cfg_strength!r}")  # fmt: skip
        strengths |= {f"stream_cfg_strength.{k}": v for k, v in self.stream_cfg_strength.items()}
        for name, value in strengths.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name} must be a finite number > 0 (1 = no guidance), got {value!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 1 <= self.steps <= MAX_STEPS:
            raise ConfigError(f"steps must be an integer >= 1 and <= {MAX_STEPS}, got {self.steps!r}")
        if self.solver not in SOLVERS:
            raise ConfigError(f"unknown solver {self.solver!r} (choose from {', '.join(SOLVERS)})")
        if not (isinstance(self.shift, (int, float)) and math.isfinite(self.shift) and self.shift >= 1):
            raise ConfigError(f"shift must be a finite number >= 1, got {self.shift!r}")
        if self.guidance not in PRESETS:
            raise ConfigError(f"unknown guidance preset {self.guidance!r} (choose from {', '.join(PRESETS)})")

    def override(self, **values: Any) -> SamplingConfig:
        """A copy with the given settings changed (None keeps the current value), validated again."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown sampling settings {unknown} (known: {', '.join(sorted(known))})")
        return replace(self, **{k: v for k, v in values.items() if v is not None})

    def with_stream_cfg(self, strengths: dict[str, float]) -> SamplingConfig:
        """A copy whose `stream_cfg_strength` adds (or replaces) these streams' strengths, validated again."""
        return self.override(stream_cfg_strength={**self.stream_cfg_strength, **strengths})

    def preset(self, name: str) -> SamplingConfig:
        """A copy with a sampler preset's solver, steps and shift (`SAMPLER_PRESETS`)."""
        if name not in SAMPLER_PRESETS:
            raise ConfigError(f"unknown sampler preset {name!r} (choose from {', '.join(SAMPLER_PRESETS)})")
        return self.override(**SAMPLER_PRESETS[name])

    def check_streams(self, streams: Iterable[str]) -> None:
        """One-line ConfigError if `stream_cfg_strength` names a stream that is not among `streams`."""
        streams = list(streams)
        unknown = sorted(set(self.stream_cfg_strength) - set(streams))
        if unknown:
            raise ConfigError(f"stream_cfg_strength names {', '.join(unknown)}, not a stream this model samples "
                              f"(its streams: {', '.join(streams)})")  # fmt: skip

    def branches(self, negative: Any = None, streams: Iterable[str] | None = None) -> list[GuidanceBranch]:
        """The preset's negative branches; `negative`: the conditions they use (None: the model's empty ones).
        `streams`: the sampled streams, needed when `stream_cfg_strength` sets any (their main-branch strengths)."""
        main: float | dict[str, float] = self.cfg_strength
        if self.stream_cfg_strength:
            if streams is None:
                raise ConfigError("stream_cfg_strength is set: the guidance branches need the sampled streams")
            self.check_streams(streams)
            main = {s: float(self.stream_cfg_strength.get(s, self.cfg_strength)) for s in streams}
        return preset_branches(
            self.guidance, cfg_strength=main, text_cfg_strength=self.text_cfg_strength, cond=negative
        )

    @property
    def guided(self) -> bool:
        """Whether any negative branch runs (otherwise the sampler evaluates the conditional velocity only).
        "*" stands for the streams `stream_cfg_strength` does not name (they take `cfg_strength`)."""
        return bool(self.branches(streams=[*self.stream_cfg_strength, "*"]))


SEEDS = (-(2**63), 2**64 - 1)  # the seeds torch.Generator.manual_seed takes


def check_seed(value: Any, what: str = "seed") -> int:
    """A sampling seed as an int, or a one-line error (not torch's overflow traceback) when the generator cannot take
    it; a whole float (a web form's number) counts."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{what} must be a whole number, got {value!r}")
    if not SEEDS[0] <= value <= SEEDS[1]:
        raise ConfigError(f"{what} must be an integer from {SEEDS[0]} to {SEEDS[1]}, got {value}")
    return value


def parse_stream_strengths(items: Iterable[str]) -> dict[str, float]:
    """`["video=4.5", "left=3"]` (the command line's `--stream-cfg STREAM=W`) -> {"video": 4.5, "left": 3.0}; a
    stream given twice is a one-line ConfigError (neither strength silently wins)."""
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            strength = float(value)
        except ValueError:
            strength = None
        if not sep or not name.strip() or strength is None:
            raise ConfigError(f"--stream-cfg takes STREAM=W (e.g. video=4.5), got {item!r}")
        if name.strip() in out:
            raise ConfigError(f"--stream-cfg gives {name.strip()} twice ({out[name.strip()]:g} and {strength:g}): "
                              "give each stream once")  # fmt: skip
        out[name.strip()] = strength
    return out


def sample_with(
    config: SamplingConfig, model, noise: Streams, cond: Any, *, negative: Any = None, **options: Any
) -> SampleResult:
    """`avflow.flow.solvers.sample` with these settings; `options` go to it (clean, t_start, batched, progress)."""
    return sample(
        model,
        noise,
        cond,
        steps=config.steps,
        solver=config.solver,
        shift=config.shift,
        guidance=config.branches(negative, streams=list(noise)),
        **options,
    )
