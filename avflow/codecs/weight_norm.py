"""Fold weight-norm checkpoints to plain weights and load them strictly."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from avflow.errors import WeightsError

# (magnitude suffix, direction suffix) of the two weight-norm namings torch has used.
WEIGHT_NORM_NAMINGS = (
    (".weight_g", ".weight_v"),  # torch.nn.utils.weight_norm
    (".parametrizations.weight.original0", ".parametrizations.weight.original1"),  # parametrizations.weight_norm
)


def weight_from_norm(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """weight = g * v / ||v||, the norm taken over every dim except dim 0 (g has shape (C0, 1, ...))."""
    norm = v.float().flatten(1).norm(dim=1).view(-1, *([1] * (v.ndim - 1)))
    return (v.float() * (g.float() / norm)).to(v.dtype)


def _describe(keys: Iterable[str], limit: int = 6) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def fold_weight_norm(state_dict: Mapping[str, torch.Tensor], source: str = "state dict") -> dict[str, torch.Tensor]:
    """Replace every weight-norm pair by `<module>.weight`; plain `weight` keys pass through unchanged."""
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for g_suffix, v_suffix in WEIGHT_NORM_NAMINGS:
        for key in state_dict:
            if not key.endswith(g_suffix):
                continue
            prefix = key[: -len(g_suffix)]
            v_key = prefix + v_suffix
            if v_key not in state_dict:
                raise WeightsError(f"{source}: weight-norm magnitude {key} has no direction {v_key}")
            if prefix + ".weight" in state_dict:
                raise WeightsError(f"{source}: {prefix} has both a plain weight and weight-norm parameters")
            out[prefix + ".weight"] = weight_from_norm(state_dict[key], state_dict[v_key])
            used.update((key, v_key))
    orphans = [k for k in state_dict if k not in used and k.endswith(tuple(v for _, v in WEIGHT_NORM_NAMINGS))]
    if orphans:
        raise WeightsError(f"{source}: weight-norm directions without magnitudes: {_describe(orphans)}")
    for key, value in state_dict.items():
        if key not in used:
            out[key] = value
    return out


def load_strict(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str = "state dict",
    optional: tuple[str, ...] = (),
) -> None:
    """Copy `state_dict` into `module`, raising WeightsError that names missing, unexpected or misshapen keys.

    Keys ending with one of `optional` (e.g. recomputable filter buffers) may be absent.
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict and not k.endswith(optional)]
    unexpected = [k for k in state_dict if k not in expected]
    problems = []
    if missing:
        problems.append(f"missing keys: {_describe(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_describe(unexpected)}")
    misshapen = [
        f"{k} {tuple(state_dict[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if misshapen:
        problems.append(f"shape mismatch: {_describe(misshapen, limit=3)}")
    if problems:
        raise WeightsError(f"{source} does not match {type(module).__name__}: " + "; ".join(problems))
    module.load_state_dict({k: v for k, v in state_dict.items()}, strict=False)
