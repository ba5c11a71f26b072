"""Per-sample flow-matching loss with a token mask."""

from __future__ import annotations

import torch

from avflow.flow.paths import interpolate, velocity_target
from avflow.flow.streams import broadcast_time


def flow_matching_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """(Weighted) mean squared error per sample over the elements where `mask` is True. Returns (B,).

    `mask` and `weight` (>= 0) broadcast against `pred`; clean-condition tokens and padding should be False. With a
    weight: sum(w m err) / sum(w m), so a weight that is constant per sample changes nothing. A sample with no counted
    element (or zero weight everywhere) gets loss 0.
    `pred` and `target` must have one shape: a ValueError otherwise (broadcasting them would mix up samples).
    """
    check_same_shape(target, pred, "target", "pred")
    err = (pred.float() - target.float()).square()  # (B, ...)
    if mask is None and weight is None:
        return err.flatten(1).mean(1)
    m = torch.ones_like(err) if mask is None else mask.expand_as(err).to(err.dtype)
    if weight is not None:
        m = m * weight.float().expand_as(err)
    total = (err * m).flatten(1).sum(1)
    count = m.flatten(1).sum(1)
    return total / count.clamp_min(1e-12) if weight is not None else total / count.clamp_min(1.0)


def check_same_shape(x: torch.Tensor, reference: torch.Tensor, what: str, of: str) -> None:
    """A one-line ValueError unless `x` has the shape of `reference` (broadcasting would mix up samples silently)."""
    if tuple(x.shape) != tuple(reference.shape):
        raise ValueError(f"{what} must have the shape of {of}, {tuple(reference.shape)}, got {tuple(x.shape)}")


def check_stream_inputs(
    stream: str, x: torch.Tensor, t: dict[str, torch.Tensor], noise: dict[str, torch.Tensor]
) -> None:
    """A one-line ValueError unless `noise` and `t` hold `stream`, its noise has the data's shape and its times the
    data's batch."""
    for what, given in (("noise", noise), ("t", t)):
        if stream not in given:
            raise ValueError(f"{what} has no stream {stream!r} (it has {', '.join(map(repr, given)) or 'none'})")
    check_same_shape(noise[stream], x, f"noise[{stream!r}]", f"x1[{stream!r}]")
    ts = t[stream]
    if ts.ndim not in (1, 2) or ts.shape[0] != x.shape[0]:
        raise ValueError(f"t[{stream!r}] must be ({x.shape[0]},) or ({x.shape[0]}, T), got shape {tuple(ts.shape)}")


def noised_streams(
    x1: dict[str, torch.Tensor],
    t: dict[str, torch.Tensor],
    noise: dict[str, torch.Tensor],
    sigma_min: float = 0.0,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Training inputs per stream: (x_t, velocity target, loss mask).

    `t[s]` is (B,) or (B, T); tokens at t = 1 are clean conditions: x_t equals the data there and the mask is False.
    `noise[s]` must have the shape of `x1[s]` and `t[s]` its batch (a ValueError: one noise for all samples is a bug).
    """
    xt, target, mask = {}, {}, {}
    for s, x in x1.items():
        check_stream_inputs(s, x, t, noise)
        tb = broadcast_time(t[s].to(x.dtype), x, s)
        clean = tb >= 1.0
        xt[s] = torch.where(clean, x, interpolate(noise[s], x, tb, sigma_min))
        target[s] = velocity_target(noise[s], x, sigma_min)
        mask[s] = ~clean
    return xt, target, mask
