"""The flow-matching training task for any generator implementing the velocity protocol."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from avflow.errors import ConfigError
from avflow.flow.loss import flow_matching_loss, noised_streams
from avflow.flow.timesteps import TimestepSampler


@dataclass(frozen=True, kw_only=True)
class FlowMatchingConfig:
    timesteps: Literal["uniform", "logit_normal", "shifted"] = "logit_normal"
    logit_mean: float = 0.0
    logit_scale: float = 1.0
    shift: float = 1.0
    sigma_min: float = 0.0
    cond_dropout: float = 0.1  # per-sample probability of training on empty conditions (for CFG)
    sample_steps: int = 16  # Euler steps of the sampling hook
    # relative weight of each stream's loss (a stream not named weighs 1): loss = sum_s w_s L_s / sum_s w_s, e.g.
    # {video: 2} gives the video as much weight as the two ears `left` and `right` together
    stream_weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bad = {k: w for k, w in self.stream_weights.items() if not (math.isfinite(w) and w >= 0)}
        if bad:
            raise ConfigError(f"stream_weights must be finite and >= 0, got {bad}")


class FlowMatchingTask:
    """Noise, timesteps and CFG dropout per sample from the sample's seed; mean over samples of the stream losses."""

    def __init__(self, config: FlowMatchingConfig):
        self.config = config
        self.timesteps = TimestepSampler(config.timesteps, config.logit_mean, config.logit_scale, config.shift)

    @property
    def leaves_parameters_unused(self) -> bool:
        """Whether some steps run without some of the model's parameters (DDP must then be told to look for them)."""
        return False

    def prepare(self, batch: dict, device: torch.device) -> dict:
        """Draw each sample's randomness from its own generator (independent of batch split and process count)."""
        streams = batch["streams"]
        noise = {s: [] for s in streams}
        t, drop = [], []
        for seed in batch["seed"].tolist():
            g = torch.Generator().manual_seed(seed)
            for s, x in streams.items():
                noise[s].append(torch.randn(x.shape[1:], generator=g, dtype=x.dtype))
            t.append(self.timesteps(1, generator=g))
            drop.append(torch.rand(1, generator=g) < self.config.cond_dropout)
        t = torch.cat(t)  # (B,)
        out = {
            "streams": {s: x.to(device, non_blocking=True) for s, x in streams.items()},
            "cond": {k: v.to(device, non_blocking=True) for k, v in batch["cond"].items()},
            "noise": {s: torch.stack(n).to(device, non_blocking=True) for s, n in noise.items()},
            "t": {s: t.to(device) for s in streams},
            "drop": torch.cat(drop).to(device),
        }
        return out

    def loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        x1 = batch["streams"]
        xt, target, mask = noised_streams(x1, batch["t"], batch["noise"], self.config.sigma_min)
        cond = batch["cond"]
        drop = batch["drop"]
        if self.config.cond_dropout > 0 or batch.get("cross_modal") is False:  # (a joint step with it off)
            empty = model.empty_conditions(drop.shape[0])
            # a key the empty conditions lack (e.g. a region mask) is no droppable condition: every sample keeps it
            cond = {k: _where_batch(drop, empty[k], v) if k in empty else v for k, v in cond.items()}
        pred = self.velocity(model, xt, batch, cond)
        weights = self.stream_weights(list(x1))
        elements = self.element_weights(model, batch)
        per_stream = torch.stack([flow_matching_loss(pred[s], target[s], mask[s], elements.get(s)) * w
                                  for s, w in weights.items()])  # fmt: skip
        return (per_stream.sum(0) / sum(weights.values())).mean()  # (S, B) -> (B,) -> ()

    def stream_weights(self, streams: list[str]) -> dict[str, float]:
        """Each stream's loss weight; a name the batch has no stream for, or all weights 0, is a `ConfigError`."""
        unknown = sorted(set(self.config.stream_weights) - set(streams))
        if unknown:
            raise ConfigError(f"task.args.stream_weights names {unknown}, not a stream of this data: {sorted(streams)}")
        weights = {s: float(self.config.stream_weights.get(s, 1.0)) for s in streams}
        if sum(weights.values()) <= 0:
            raise ConfigError(f"task.args.stream_weights gives every stream weight 0: {weights}")
        return weights

    def element_weights(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        """Per stream, a loss weight broadcasting against its elements (a stream not named: uniform); none here."""
        return {}

    def velocity(self, model: nn.Module, xt: dict, batch: dict, cond: dict) -> dict:
        """The model's velocity for the loss; a task may pass more of the batch's draws to the model."""
        return model.velocity(xt, batch["t"], cond)

    @torch.no_grad()
    def sample(self, model: nn.Module, batch: dict) -> dict[str, float]:
        """Generate from the batch's noise and conditions; compare the samples' statistics with the real data."""
        from avflow.flow.solvers import sample

        result = sample(model, batch["noise"], batch["cond"], steps=self.config.sample_steps, solver="euler")
        metrics = {}
        for s, x in batch["streams"].items():
            y = result.streams[s].float()
            metrics[f"{s}_mse"] = float((y - x.float()).square().mean())
            metrics[f"{s}_std_ratio"] = float(y.std() / x.float().std().clamp_min(1e-8))
        return metrics


def _where_batch(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a where mask (B,) is True else b, broadcast over b's trailing dims."""
    return torch.where(mask.view(-1, *([1] * (b.ndim - 1))), a.to(b.dtype), b)
