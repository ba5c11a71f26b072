"""Overlap inpainting between generation windows (the seam policy of `avflow.pipelines.foley`).

While a window is sampled, its first latent frames follow the previous window's final latents re-noised to the
current t, weighted by a ramp a = 1 -> 0: v = a v_known + (1 - a) v_network with v_known = x1_prev - (1 - sigma_min) x0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from avflow.models.mmaudio import MMAudio


class OverlapInpainting:
    """Generator wrapper: the first frames follow a known latent path, blended by `weight` (1 = fully known)."""

    def __init__(self, network: MMAudio, known: Tensor, noise: Tensor, weight: Tensor, sigma_min: float = 0.0):
        self.network = network
        n = known.shape[1]
        self.n = n
        self.weight = weight.view(1, n, 1).to(known)  # (1, n, 1)
        self.v_known = known - (1.0 - sigma_min) * noise[:, :n]  # (B, n, C): constant velocity of the known path

    def empty_conditions(self, batch: int, negative_text_f: Tensor | None = None):
        return self.network.empty_conditions(batch, negative_text_f)

    def velocity(self, streams: dict, t: dict, cond, *, cross_modal: bool = True) -> dict:
        v = self.network.velocity(streams, t, cond, cross_modal=cross_modal)["audio"]  # (B', N, C)
        known = self.v_known.repeat(v.shape[0] // self.v_known.shape[0], 1, 1).to(v.dtype)
        head = self.weight * known + (1 - self.weight) * v[:, : self.n]
        return {"audio": torch.cat([head, v[:, self.n :]], dim=1)}


def ramp(n: int) -> Tensor:
    """Linear weights 1 -> 0 over n frames, excluding the end points."""
    return 1.0 - torch.arange(1, n + 1, dtype=torch.float32) / (n + 1)
