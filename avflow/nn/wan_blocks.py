"""Wan transformer pieces with the parameter names of diffusers' `WanTransformer3DModel` (Wan 2.1 / 2.2).

Modulation tensors are either per sample `(B, 1, k, D)` or per latent frame `(B, T, k, D)`; tokens `(B, T*H*W, D)`
are viewed as `(B, T, H*W, D)` to apply per-frame modulation without expanding it to every token.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sinusoidal_embedding(timestep: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """diffusers' `Timesteps(flip_sin_to_cos=True, downscale_freq_shift=0)`: `(...,)` -> `(..., dim)` as [cos, sin]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timestep.device) / half)
    args = timestep.float()[..., None] * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """x `(B, L, D)`; shift/scale `(B, T, D)` with L divisible by T (T = 1: one value per sample)."""
    b, l, d = x.shape
    frames = shift.shape[1]
    x = x.view(b, frames, l // frames, d)
    return (x * (1 + scale[:, :, None]) + shift[:, :, None]).view(b, l, d)


def gate(x: Tensor, g: Tensor) -> Tensor:
    """x `(B, L, D)` times g `(B, T, D)` broadcast over the L/T tokens of each frame."""
    b, l, d = x.shape
    frames = g.shape[1]
    return (x.view(b, frames, l // frames, d) * g[:, :, None]).view(b, l, d)


class WanRotary(nn.Module):
    """3-D RoPE of Wan: the head dim splits into (t, h, w) parts; frequencies as diffusers' `WanRotaryPosEmbed`."""

    def __init__(self, head_dim: int, theta: float = 10000.0):
        super().__init__()
        self.h_dim = self.w_dim = 2 * (head_dim // 6)
        self.t_dim = head_dim - 2 * self.h_dim
        self.theta = theta

    def axis(self, positions: Tensor, dim: int) -> tuple[Tensor, Tensor]:
        """positions `(..., N)` (may be fractional) -> cos, sin `(..., N, dim)` with interleaved pairs."""
        freqs = 1.0 / self.theta ** (torch.arange(0, dim, 2, dtype=torch.float64, device=positions.device) / dim)
        angles = positions.double()[..., None] * freqs
        return angles.cos().repeat_interleave(2, -1).float(), angles.sin().repeat_interleave(2, -1).float()

    def forward(
        self, frames: int, height: int, width: int, device: torch.device, t_positions: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """-> cos, sin `(1, T*H*W, 1, head_dim)`; `t_positions` `(T,)` overrides the frame indices (alignment)."""
        if t_positions is None:
            t_positions = torch.arange(frames, device=device)
        ct, st = self.axis(t_positions, self.t_dim)  # (T, t_dim)
        ch, sh = self.axis(torch.arange(height, device=device), self.h_dim)
        cw, sw = self.axis(torch.arange(width, device=device), self.w_dim)

        def grid(at: Tensor, ah: Tensor, aw: Tensor) -> Tensor:
            shape = (frames, height, width)
            parts = [
                at[:, None, None].expand(*shape, -1),
                ah[None, :, None].expand(*shape, -1),
                aw[None, None, :].expand(*shape, -1),
            ]
            return torch.cat(parts, dim=-1).reshape(1, frames * height * width, 1, -1)

        return grid(ct, ch, cw), grid(st, sh, sw)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x `(B, L, H, d)`; rotates interleaved pairs (x[2i], x[2i+1])."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    c, s = cos[..., 0::2], sin[..., 1::2]
    return torch.stack([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1).flatten(-2).type_as(x)


class WanAttention(nn.Module):
    """Multi-head attention with RMS q/k norm across heads (diffusers `WanAttention` without image keys)."""

    def __init__(self, dim: int, heads: int, eps: float = 1e-6, context_dim: int | None = None):
        super().__init__()
        self.heads = heads
        context_dim = context_dim or dim
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(context_dim, dim)
        self.to_v = nn.Linear(context_dim, dim)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(0.0)])
        self.norm_q = nn.RMSNorm(dim, eps=eps)
        self.norm_k = nn.RMSNorm(dim, eps=eps)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        rotary: tuple[Tensor, Tensor] | None = None,
        context_rotary: tuple[Tensor, Tensor] | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """x `(B, L, D)`, context `(B, S, Dc)` (self-attention when None) -> `(B, L, D)`."""
        context = x if context is None else context
        q = self.norm_q(self.to_q(x)).unflatten(-1, (self.heads, -1))  # (B, L, H, d)
        k = self.norm_k(self.to_k(context)).unflatten(-1, (self.heads, -1))
        v = self.to_v(context).unflatten(-1, (self.heads, -1))
        if rotary is not None:
            q = apply_rotary(q, *rotary)
            k = apply_rotary(k, *(rotary if context_rotary is None else context_rotary))
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
        return self.to_out[0](out.transpose(1, 2).flatten(2))


class GeluTanhProj(nn.Module):
    """diffusers `GELU(approximate="tanh")`: a Linear named `proj` then tanh-GELU."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class WanFeedForward(nn.Module):
    """`ffn.net.{0.proj, 2}` as diffusers' `FeedForward(activation_fn="gelu-approximate")`."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.ModuleList([GeluTanhProj(dim, hidden), nn.Dropout(0.0), nn.Linear(hidden, dim)])

    def forward(self, x: Tensor) -> Tensor:
        return self.net[2](self.net[0](x))


class TimeEmbedding(nn.Module):
    """diffusers `TimestepEmbedding`: linear_1 -> SiLU -> linear_2."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class TextProjection(nn.Module):
    """diffusers `PixArtAlphaTextProjection(act_fn="gelu_tanh")`."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(F.gelu(self.linear_1(x), approximate="tanh"))


class WanConditionEmbedder(nn.Module):
    """Timestep -> (temb, 6-way modulation); text states -> model width."""

    def __init__(self, dim: int, freq_dim: int, text_dim: int):
        super().__init__()
        self.freq_dim = freq_dim
        self.time_embedder = TimeEmbedding(freq_dim, dim)
        self.time_proj = nn.Linear(dim, 6 * dim)
        self.text_embedder = TextProjection(text_dim, dim)

    def time(self, timestep: Tensor) -> tuple[Tensor, Tensor]:
        """timestep `(B, T)` in Wan units (1000 = noise) -> temb `(B, T, D)`, modulation `(B, T, 6, D)`."""
        temb = self.time_embedder(sinusoidal_embedding(timestep, self.freq_dim))
        return temb, self.time_proj(F.silu(temb)).unflatten(-1, (6, -1))


class WanBlock(nn.Module):
    """Self-attention (RoPE) -> text cross-attention -> FFN, with 6-way adaLN modulation from the timestep."""

    def __init__(self, dim: int, ffn_dim: int, heads: int, eps: float = 1e-6, cross_attn_norm: bool = True):
        super().__init__()
        self.eps = eps
        self.attn1 = WanAttention(dim, heads, eps)
        self.attn2 = WanAttention(dim, heads, eps)
        self.norm2 = nn.LayerNorm(dim, eps=eps) if cross_attn_norm else nn.Identity()
        self.ffn = WanFeedForward(dim, ffn_dim)
        self.scale_shift_table = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def forward(self, x: Tensor, text: Tensor, modulation: Tensor, rotary: tuple[Tensor, Tensor]) -> Tensor:
        """x `(B, L, D)`, text `(B, S, D)`, modulation `(B, T, 6, D)` -> `(B, L, D)`."""
        d = x.shape[-1]
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.scale_shift_table[:, None] + modulation).unbind(2)
        h = modulate(F.layer_norm(x, (d,), eps=self.eps), shift1, scale1)
        x = x + gate(self.attn1(h, rotary=rotary), gate1)
        x = x + self.attn2(self.norm2(x), text)
        h = modulate(F.layer_norm(x, (d,), eps=self.eps), shift2, scale2)
        return x + gate(self.ffn(h), gate2)
