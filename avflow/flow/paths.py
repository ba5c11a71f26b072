"""The conditional flow-matching path (t = 0 noise, t = 1 data)."""

from __future__ import annotations

import torch


def interpolate(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor, sigma_min: float = 0.0) -> torch.Tensor:
    """x_t = (1 - (1 - sigma_min) t) x0 + t x1, with `t` already broadcast against x."""
    return (1.0 - (1.0 - sigma_min) * t) * x0 + t * x1


def velocity_target(x0: torch.Tensor, x1: torch.Tensor, sigma_min: float = 0.0) -> torch.Tensor:
    """d x_t / d t = x1 - (1 - sigma_min) x0."""
    return x1 - (1.0 - sigma_min) * x0
