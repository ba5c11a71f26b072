"""Classifier-free guidance with any number of negative branches, and the guidance presets as data.

v = v_c + sum_k (w_k - 1) (v_c - v_k), w_k = each branch's `cfg_strength`. Plain CFG is one branch with empty
conditions; a negative prompt is a branch whose conditions encode that prompt; modality-aware CFG (UniAVGen) is a
branch with `cross_modal=False` (and, as in UniAVGen, empty text).

A branch changes the conditions it names; keys of the conditional `cond` that its conditions lack pass through
unchanged (e.g. the joint model's `region_mask`, which has no empty value), so every branch sees them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from avflow.errors import ConfigError

Streams = dict[str, torch.Tensor]


@dataclass(frozen=True, kw_only=True)
class GuidanceBranch:
    """One negative branch: its conditions (None = the model's empty conditions), strength and active interval.

    `cfg_strength` (w_k) may be a dict by stream (streams not named get 1, i.e. no guidance). The branch is active
    for solver times `t_range[0] <= t <= t_range[1]` (both ends inclusive); None means always.
    `t_range` must be a pair of numbers with 0 <= lo <= hi <= 1 (a ConfigError: reversed, it would never be active).
    """

    cond: Any = None
    cfg_strength: float | dict[str, float] = 1.0
    cross_modal: bool = True
    t_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        """The strengths `SamplingConfig` takes (a one-line ConfigError otherwise: its rule, in one place)."""
        from avflow.flow.sampling import SamplingConfig  # which imports this module

        if isinstance(self.cfg_strength, dict):
            SamplingConfig(cfg_strength=1.0, stream_cfg_strength=self.cfg_strength)
        else:
            SamplingConfig(cfg_strength=self.cfg_strength)
        check_t_range(self.t_range)

    def active(self, t: float) -> bool:
        if self.t_range is None:
            return True
        lo, hi = self.t_range
        return lo <= t <= hi

    def strength_for(self, stream: str) -> float:
        if isinstance(self.cfg_strength, dict):
            return float(self.cfg_strength.get(stream, 1.0))
        return float(self.cfg_strength)


def check_t_range(t_range: Any) -> None:
    """A one-line ConfigError unless `t_range` is None or a pair (lo, hi) of finite numbers, 0 <= lo <= hi <= 1."""
    if t_range is None:
        return
    pair = isinstance(t_range, (tuple, list)) and len(t_range) == 2
    numbers = pair and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in t_range)
    if not numbers or not 0.0 <= t_range[0] <= t_range[1] <= 1.0:
        raise ConfigError(f"t_range must be a pair (lo, hi) of solver times with 0 <= lo <= hi <= 1 (None: always), "
                          f"got {t_range!r}")  # fmt: skip


def cfg(cfg_strength: float, cond: Any = None, t_range: tuple[float, float] | None = None) -> list[GuidanceBranch]:
    """Plain classifier-free guidance: v = w v_c + (1 - w) v_u."""
    return [GuidanceBranch(cond=cond, cfg_strength=cfg_strength, t_range=t_range)]


@dataclass(frozen=True, kw_only=True)
class PresetBranch:
    """A negative branch of a preset: which strength of the sampling settings it takes, and whether the model runs
    with its cross-modal interactions (audio<->video fusion, sync conditioning) on."""

    strength: Literal["cfg_strength", "text_cfg_strength"] = "cfg_strength"
    cross_modal: bool = True


# Guidance presets: the negative branches each one adds to the conditional velocity (NFE per step = 1 + branches).
PRESETS: dict[str, tuple[PresetBranch, ...]] = {
    "none": (),
    "plain": (PresetBranch(),),  # v = w v_c + (1 - w) v_empty
    "modality": (PresetBranch(cross_modal=False),),  # UniAVGen: the negative has audio<->video off (+ empty text)
    "modality_text": (PresetBranch(strength="text_cfg_strength"), PresetBranch(cross_modal=False)),
}


def preset_branches(
    preset: str, *, cfg_strength: float | dict[str, float], text_cfg_strength: float = 1.0, cond: Any = None
) -> list[GuidanceBranch]:
    """The branches of a preset. `cond`: the conditions every negative branch uses (None: the model's empty ones);
    `cfg_strength` may be a dict by stream (see `GuidanceBranch`). Branches of strength 1 (for every stream) are left
    out: they would not change the velocity, only cost model evaluations."""
    if not isinstance(preset, str) or preset not in PRESETS:
        raise ConfigError(f"unknown guidance preset {preset!r} (choose from {', '.join(PRESETS)})")
    strengths = {"cfg_strength": cfg_strength, "text_cfg_strength": text_cfg_strength}

    def changes(w: float | dict[str, float]) -> bool:
        return any(v != 1.0 for v in w.values()) if isinstance(w, dict) else w != 1.0

    return [
        GuidanceBranch(cond=cond, cfg_strength=strengths[b.strength], cross_modal=b.cross_modal)
        for b in PRESETS[preset]
        if changes(strengths[b.strength])
    ]


def check_branches(branches: Any) -> tuple[GuidanceBranch, ...]:
    """`branches` as the sampler takes them (a list or tuple of GuidanceBranch, () for none), or a one-line
    ConfigError naming what is accepted: a preset name needs its strengths (`preset_branches`, or `sample_with` and
    `SamplingConfig.guidance`), and a bare number is not read as some branch's strength silently."""
    accepted = "a list of GuidanceBranch (e.g. cfg(4.5) or preset_branches('modality', cfg_strength=4.5); () for none)"
    if not isinstance(branches, (list, tuple)):
        raise ConfigError(f"guidance must be {accepted}, got {_what_instead(branches)}")
    for i, branch in enumerate(branches):
        if not isinstance(branch, GuidanceBranch):
            raise ConfigError(f"guidance[{i}] must be a GuidanceBranch (guidance: {accepted}), got "
                              f"{_what_instead(branch)}")  # fmt: skip
    return tuple(branches)


def _what_instead(value: Any) -> str:
    """A given guidance that is not a branch, in a few words, with what was probably meant."""
    if isinstance(value, str) and value not in PRESETS:
        return f"the string {value!r} (the guidance presets: {', '.join(PRESETS)})"
    if isinstance(value, str):
        return (f"the preset name {value!r} (use preset_branches({value!r}, cfg_strength=W), or "
                f"sample_with(SamplingConfig(guidance={value!r}, cfg_strength=W), ...))")  # fmt: skip
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"the number {value!r} (plain CFG of strength {value!r} is cfg({value!r}))"
    if isinstance(value, GuidanceBranch):
        return "one GuidanceBranch (put it in a list)"
    return type(value).__name__


def _batch_size(x: Streams) -> int:
    return next(iter(x.values())).shape[0]


def concat_conditions(conds: list[Any]) -> Any:
    """Concatenate condition structures (dicts / lists of tensors, None) along the batch dimension."""
    first = conds[0]
    if first is None:
        if any(c is not None for c in conds):
            raise ValueError("cannot batch branches whose conditions are None in some and set in others")
        return None
    if isinstance(first, torch.Tensor):
        return torch.cat(conds, dim=0)
    if isinstance(first, dict):
        return {k: concat_conditions([c[k] for c in conds]) for k in first}
    if isinstance(first, (list, tuple)):
        return type(first)(concat_conditions(list(items)) for items in zip(*conds))
    if all(c == first for c in conds):
        return first
    raise ValueError(f"cannot batch conditions of type {type(first).__name__} that differ between branches")


def _with_passed_through(branch_cond: Any, cond: Any) -> Any:
    """A negative branch's conditions plus the keys of the conditional `cond` they lack (dicts; else as given)."""
    if isinstance(branch_cond, dict) and isinstance(cond, dict):
        return {**{k: v for k, v in cond.items() if k not in branch_cond}, **branch_cond}
    return branch_cond


def _evaluate(model, x: Streams, t: Streams, conds: list[Any], cross_modal: bool, batched: bool) -> list[Streams]:
    """Velocity for each condition in `conds`, in one batched forward or one forward each."""
    if not batched or len(conds) == 1:
        return [model.velocity(x, t, c, cross_modal=cross_modal) for c in conds]
    n, b = len(conds), _batch_size(x)
    xb = {s: torch.cat([v] * n, dim=0) for s, v in x.items()}
    tb = {s: torch.cat([v] * n, dim=0) for s, v in t.items()}
    out = model.velocity(xb, tb, concat_conditions(conds), cross_modal=cross_modal)
    return [{s: v[i * b : (i + 1) * b] for s, v in out.items()} for i in range(n)]


def guided_velocity(
    model,
    x: Streams,
    t: Streams,
    cond: Any,
    branches: list[GuidanceBranch] | tuple = (),
    *,
    time: float | None = None,
    batched: bool = False,
) -> tuple[Streams, int]:
    """The guided velocity and the number of function evaluations (per sample, every branch counted).

    `time` is the solver's scalar time, used for branch intervals. With `batched`, branches that share
    `cross_modal` run in one forward together with the conditional branch. `branches` that are not a list of
    GuidanceBranch are a one-line ConfigError (`check_branches`).
    """
    return checked_guided_velocity(model, x, t, cond, check_branches(branches), time=time, batched=batched)


def checked_guided_velocity(
    model, x: Streams, t: Streams, cond: Any, branches: tuple[GuidanceBranch, ...], *, time: float | None,
    batched: bool,
) -> tuple[Streams, int]:  # fmt: skip
    """`guided_velocity` for branches `check_branches` has passed: the sampler checks them once, not every step."""
    if any(br.t_range is not None for br in branches) and time is None:
        raise ValueError("branches with a t_range need the solver time")
    active = [br for br in branches if br.active(time if time is not None else 0.0)]
    batch = _batch_size(x)
    conds = [_with_passed_through(br.cond if br.cond is not None else model.empty_conditions(batch), cond)
             for br in active]  # fmt: skip

    # Group the conditional branch (cross_modal=True) with every negative branch of the same cross_modal flag.
    groups: dict[bool, list[int]] = {True: [-1]}
    for i, br in enumerate(active):
        groups.setdefault(bool(br.cross_modal), []).append(i)
    results: dict[int, Streams] = {}
    for flag, idx in groups.items():
        outs = _evaluate(model, x, t, [cond if i < 0 else conds[i] for i in idx], flag, batched)
        results.update(zip(idx, outs))

    v_c = results[-1]
    v = {}
    for s, vc in v_c.items():
        acc = vc
        for i, br in enumerate(active):
            w = br.strength_for(s)
            if w != 1.0:
                acc = acc + (w - 1.0) * (vc - results[i][s])
        v[s] = acc
    return v, 1 + len(active)
