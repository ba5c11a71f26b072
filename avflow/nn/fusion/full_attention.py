"""AVFull-Attention (AVFullDiT): in the last N layers, one self-attention over the concatenated video and audio tokens.

Both streams attend jointly (video and audio keys compete in one softmax). The attention runs at the video width:
the audio side's Q/K/V come from a new adapter `audio_dim -> video_dim` (it widens them when the towers' widths
differ) and its output is projected back to `audio_dim`. The layer is a residual branch after the towers' blocks,
with zero-initialised output projections, so a fresh joint model computes exactly what its towers compute and the
towers' own weights stay untouched (they can be frozen, `avflow.models.peft`). Temporal RoPE follows the alignment
(`avflow.nn.temporal_alignment`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avflow.errors import ConfigError
from avflow.nn.fusion.base import Fusion, FusionOptions, TowerState
from avflow.nn.temporal_alignment import TemporalAlignment, as_alignment, av_rotary
from avflow.nn.wan_blocks import WanRotary, apply_rotary


def check_heads(dim: int, heads: int) -> int:
    """Head dim of `dim` split into `heads` for Wan's 3-D RoPE (even)."""
    if heads < 1 or dim % heads or (dim // heads) % 2:
        raise ConfigError(f"fusion_options.heads: fusion width {dim} does not split into {heads} heads of even size")
    return dim // heads


@dataclass(frozen=True, kw_only=True)
class FullAttentionOptions(FusionOptions):
    heads: int = 2  # heads of the joint attention at the video width (even head size for the 3-D RoPE)
    layers: int = 2  # joint attention after each of the last `layers` layers (all layers when it exceeds them)

    def __post_init__(self) -> None:
        if self.layers < 1:
            raise ConfigError(f"layers: full_attention needs layers >= 1, got {self.layers}")

    def check(self, video_dim: int, audio_dim: int, n_layers: int) -> None:
        check_heads(video_dim, self.heads)


def state_rotary(
    rope: WanRotary, alignment: TemporalAlignment, v: TowerState, a: TowerState
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """RoPE tables for the cross-modal attention from the states' seconds (indices when seconds are missing)."""
    frames, n = v.grid[0], a.grid[0]
    device = v.x.device
    tv = v.seconds if v.seconds is not None else torch.arange(frames, device=device, dtype=torch.float64)
    ta = a.seconds if a.seconds is not None else torch.arange(n, device=device, dtype=torch.float64)
    pos_v, pos_a = alignment.positions(tv, ta)
    return av_rotary(rope, v.grid, pos_v, pos_a)


class JointSelfAttention(nn.Module):
    """Self-attention over [video; audio] at the video width; returns the two residual updates."""

    def __init__(self, video_dim: int, audio_dim: int, heads: int, eps: float = 1e-6):
        super().__init__()
        self.heads = heads
        self.video_norm = nn.LayerNorm(video_dim, eps=eps)
        self.audio_norm = nn.LayerNorm(audio_dim, eps=eps)
        self.video_qkv = nn.Linear(video_dim, 3 * video_dim)
        self.audio_qkv = nn.Linear(audio_dim, 3 * video_dim)  # adapter: audio Q/K/V at the video width
        self.norm_q = nn.RMSNorm(video_dim, eps=eps)
        self.norm_k = nn.RMSNorm(video_dim, eps=eps)
        self.video_out = nn.Linear(video_dim, video_dim)
        self.audio_out = nn.Linear(video_dim, audio_dim)  # projects the audio rows back to the audio width
        for out in (self.video_out, self.audio_out):
            nn.init.zeros_(out.weight)
            nn.init.zeros_(out.bias)

    def forward(
        self, video: Tensor, audio: Tensor, video_rotary: tuple[Tensor, Tensor], audio_rotary: tuple[Tensor, Tensor]
    ) -> tuple[Tensor, Tensor]:
        """video `(B, Lv, Dv)`, audio `(B, N, Da)` -> updates `(B, Lv, Dv)`, `(B, N, Da)`."""
        lv = video.shape[1]
        qkv = torch.cat([self.video_qkv(self.video_norm(video)), self.audio_qkv(self.audio_norm(audio))], dim=1)
        q, k, v = qkv.chunk(3, dim=-1)  # (B, Lv + N, Dv) each
        q, k = self.norm_q(q).unflatten(-1, (self.heads, -1)), self.norm_k(k).unflatten(-1, (self.heads, -1))
        v = v.unflatten(-1, (self.heads, -1))  # (B, L, H, d)
        cos = torch.cat([video_rotary[0], audio_rotary[0]], dim=1)
        sin = torch.cat([video_rotary[1], audio_rotary[1]], dim=1)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        out = out.transpose(1, 2).flatten(2)  # (B, L, Dv)
        return self.video_out(out[:, :lv]), self.audio_out(out[:, lv:])


class FullAttentionFusion(Fusion):
    """Joint self-attention after each of the last `layers` layers (all layers when `layers` exceeds them)."""

    takes_alignment = True

    def __init__(
        self,
        video_dim: int,
        audio_dim: int,
        video_blocks: int,
        audio_blocks: int,
        options: FullAttentionOptions = FullAttentionOptions(),
        alignment: TemporalAlignment | str = "none",
    ):
        super().__init__(video_dim, audio_dim, video_blocks, audio_blocks)
        options.check(video_dim, audio_dim, self.n_layers)
        heads, layers = options.heads, options.layers
        self.rope = WanRotary(check_heads(video_dim, heads))
        self.alignment = as_alignment(alignment)
        self.first_layer = max(0, self.n_layers - layers)
        self.attn = nn.ModuleList(
            [JointSelfAttention(video_dim, audio_dim, heads) for _ in range(self.n_layers - self.first_layer)]
        )
        self.rotary = None

    def run(self, video_tower, audio_tower, v: TowerState, a: TowerState, cross_modal: bool) -> None:
        self.rotary = state_rotary(self.rope, self.alignment, v, a) if cross_modal else None
        super().run(video_tower, audio_tower, v, a, cross_modal)
        self.rotary = None

    def exchange(self, layer: int, v: TowerState, a: TowerState) -> None:
        if layer < self.first_layer:
            return
        rotary = self.rotary or state_rotary(self.rope, self.alignment, v, a)
        dv, da = self.attn[layer - self.first_layer](v.x, a.x, *rotary)
        v.x, a.x = v.x + dv, a.x + da
