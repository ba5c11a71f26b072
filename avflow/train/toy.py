"""A tiny stand-in generator (MLP per stream) implementing the velocity protocol, for trainer tests and benchmarks."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(frozen=True, kw_only=True)
class ToyFlowConfig:
    streams: dict[str, list[int]] = field(default_factory=lambda: {"audio": [8, 4], "video": [4, 6]})  # (N, C)
    hidden: int = 64
    depth: int = 2
    num_classes: int = 4
    dropout: float = 0.0


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of t in [0, 1]: (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = 1000.0 * t.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class ToyFlowModel(nn.Module):
    """Streams `(B, N, C)` -> velocities; conditions `{"label": (B,) long}`, label `num_classes` means empty."""

    def __init__(self, config: ToyFlowConfig):
        super().__init__()
        self.config = config
        h = config.hidden
        self.shapes = {s: tuple(shape) for s, shape in config.streams.items()}
        self.inputs = nn.ModuleDict({s: nn.Linear(math.prod(shape), h) for s, shape in self.shapes.items()})
        self.time = nn.Sequential(nn.Linear(h, h), nn.SiLU(), nn.Linear(h, h))
        self.label = nn.Embedding(config.num_classes + 1, h)
        self.mix = nn.Linear(h, h)  # cross-stream term, off when cross_modal=False
        self.blocks = nn.ModuleDict(
            {
                s: nn.Sequential(
                    *[m for _ in range(config.depth) for m in (nn.SiLU(), nn.Dropout(config.dropout), nn.Linear(h, h))]
                )
                for s in self.shapes
            }
        )
        self.outputs = nn.ModuleDict({s: nn.Linear(h, math.prod(shape)) for s, shape in self.shapes.items()})

    def empty_conditions(self, batch: int) -> dict[str, torch.Tensor]:
        device = self.label.weight.device
        return {"label": torch.full((batch,), self.config.num_classes, dtype=torch.long, device=device)}

    def velocity(self, streams: dict, t: dict, cond: dict, *, cross_modal: bool = True) -> dict:
        c = self.label(cond["label"])  # (B, H)
        hidden = {}
        for s, x in streams.items():
            ts = t[s] if t[s].ndim == 1 else t[s].float().mean(1)  # per-frame times are averaged by this toy
            hidden[s] = self.inputs[s](x.flatten(1)) + self.time(timestep_embedding(ts, self.config.hidden)) + c
        if cross_modal and len(hidden) > 1:
            shared = self.mix(torch.stack(list(hidden.values())).mean(0))  # (B, H)
            hidden = {s: h + shared for s, h in hidden.items()}
        return {s: self.outputs[s](self.blocks[s](h)).view_as(streams[s]) for s, h in hidden.items()}

    def forward(self, streams: dict, t: dict, cond: dict, *, cross_modal: bool = True) -> dict:
        return self.velocity(streams, t, cond, cross_modal=cross_modal)
