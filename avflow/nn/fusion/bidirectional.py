"""Bidirectional cross-attention after every layer (Ovi / LTX-2 style): video queries audio and audio queries video.

Both directions read the other stream's tokens as they were before the layer's exchange. Outputs pass through a
per-channel gate initialised to zero, so a fresh joint model computes exactly what its two towers compute.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from avflow.errors import ConfigError
from avflow.nn.fusion.base import Fusion, FusionOptions, TowerState
from avflow.nn.wan_blocks import WanAttention


@dataclass(frozen=True, kw_only=True)
class BidirectionalOptions(FusionOptions):
    heads: int = 2  # attention heads of each cross-attention (both widths must split into them)

    def check(self, video_dim: int, audio_dim: int, n_layers: int) -> None:
        if self.heads < 1 or video_dim % self.heads or audio_dim % self.heads:
            raise ConfigError(f"fusion_options.heads: widths {video_dim}, {audio_dim} do not split into {self.heads}")


class GatedCrossAttention(nn.Module):
    """x + gate * attn(LN(x), LN(context)); gate `(D,)` starts at zero."""

    def __init__(self, dim: int, context_dim: int, heads: int, eps: float = 1e-6):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.context_norm = nn.LayerNorm(context_dim, eps=eps)
        self.attn = WanAttention(dim, heads, eps, context_dim=context_dim)
        self.gate = nn.Parameter(torch.zeros(dim))

    def forward(
        self, x: Tensor, context: Tensor, rotary=None, context_rotary=None, mask: Tensor | None = None
    ) -> Tensor:
        """x `(B, L, D)`, context `(B, S, Dc)` -> `(B, L, D)`."""
        out = self.attn(self.norm(x), self.context_norm(context), rotary, context_rotary, mask)
        return x + self.gate * out


class BidirectionalFusion(Fusion):
    """One video<-audio and one audio<-video gated cross-attention per layer."""

    def __init__(
        self,
        video_dim: int,
        audio_dim: int,
        video_blocks: int,
        audio_blocks: int,
        options: BidirectionalOptions = BidirectionalOptions(),
    ):
        super().__init__(video_dim, audio_dim, video_blocks, audio_blocks)
        options.check(video_dim, audio_dim, self.n_layers)
        heads = options.heads
        self.video_from_audio = nn.ModuleList(
            [GatedCrossAttention(video_dim, audio_dim, heads) for _ in range(self.n_layers)]
        )
        self.audio_from_video = nn.ModuleList(
            [GatedCrossAttention(audio_dim, video_dim, heads) for _ in range(self.n_layers)]
        )

    def exchange(self, layer: int, v: TowerState, a: TowerState) -> None:
        video, audio = v.x, a.x
        v.x = self.video_from_audio[layer](video, audio)
        a.x = self.audio_from_video[layer](audio, video)
