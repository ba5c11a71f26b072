"""Fold weight-norm checkpoints to plain weights (strict loading: `avflow.weights.load_strict`)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from avflow.errors import WeightsError
from avflow.weights import describe_keys

# (magnitude suffix, direction suffix) of the two weight-norm namings torch has used.
WEIGHT_NORM_NAMINGS = (
    (".weight_g", ".weight_v"),  # torch.nn.utils.weight_norm
    (".parametrizations.weight.original0", ".parametrizations.weight.original1"),  # parametrizations.weight_norm
)


def weight_from_norm(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """weight = g * v / ||v||, the norm taken over every dim except dim 0 (g has shape (C0, 1, ...))."""
    norm = v.float().flatten(1).norm(dim=1).view(-1, *([1] * (v.ndim - 1)))
    return (v.float() * (g.float() / norm)).to(v.dtype)


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
        raise WeightsError(f"{source}: weight-norm directions without magnitudes: {describe_keys(orphans)}")
    for key, value in state_dict.items():
        if key not in used:
            out[key] = value
    return out
