"""Training timestep distributions and the timestep shift."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def shift_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    """t' = t / (s - (s - 1) t). For s > 1 more of [0, 1] maps near t = 0 (noise)."""
    if not (math.isfinite(shift) and shift >= 1.0):  # NaN compares False: refused, not a grid of NaN
        raise ValueError(f"timestep shift must be a finite number >= 1, got {shift}")
    return t / (shift - (shift - 1.0) * t)


@dataclass
class TimestepSampler:
    """Draws training timesteps in [0, 1].

    kind: "uniform" (U[0, 1]); "logit_normal" (sigmoid of N(mean, scale^2)); "shifted" (uniform, then `shift_time`).
    """

    kind: str = "logit_normal"
    mean: float = 0.0
    scale: float = 1.0
    shift: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ("uniform", "logit_normal", "shifted"):
            raise ValueError(f"unknown timestep distribution {self.kind!r} (uniform, logit_normal, shifted)")

    def __call__(
        self, batch: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> torch.Tensor:
        if self.kind == "logit_normal":
            z = torch.randn(batch, generator=generator, device=device)
            return torch.sigmoid(self.mean + self.scale * z)
        t = torch.rand(batch, generator=generator, device=device)
        return shift_time(t, self.shift) if self.kind == "shifted" else t
