"""MMAudio building blocks: SwiGLU MLPs (linear and convolutional), QK-normed attention, adaLN DiT blocks,
joint (latent / CLIP / text) blocks, the final block and the sinusoidal timestep embedder.

Module and parameter names follow the official MMAudio checkpoints. Inside `winograd_convolutions(module)` the
kernel-3 token convolutions run as Winograd F(4, 3) at float32 CPU inference (`avflow.nn.winograd`) on the input
shapes where it measured faster than the direct convolution on this machine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from avflow.nn import winograd
from avflow.nn.attention import attention, joint_attention
from avflow.nn.rope import RopeTable, apply_rope

# Transformed weights cached while `winograd_convolutions` is active (U is twice the size of a conv weight);
# convolutions beyond this budget transform their weights block by block at every call instead.
WINOGRAD_CACHE_BYTES = 1 << 30
# Whether Winograd ran faster than the direct convolution, measured once per process for each
# (input shape, weight shape, threads, transformed weight cached); `winograd_convolutions(..., measured=True)`
# consults it. Cached and uncached convolutions of one shape are timed apart: without the cache every call also
# transforms the weight, which can make Winograd the slower way where it was the faster with it.
WINOGRAD_PAYS_OFF: dict[tuple[tuple[int, ...], tuple[int, ...], int, bool], bool] = {}


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation: x * (1 + scale) + shift."""
    return x * (1 + scale) + shift


def swiglu(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """silu(a) * b; in place on `a` at inference."""
    if torch.is_grad_enabled():
        return F.silu(a) * b
    return F.silu(a, inplace=True).mul_(b)


def swiglu_hidden_dim(hidden_dim: int, multiple_of: int = 256) -> int:
    """Hidden width of a SwiGLU MLP asked for `hidden_dim`: 2/3 of it, rounded up to `multiple_of`."""
    hidden_dim = int(2 * hidden_dim / 3)
    return multiple_of * ((hidden_dim + multiple_of - 1) // multiple_of)


@dataclass
class DistinctRows:
    """A conditioning tensor (B, N, D) stored as its distinct rows (U, D) and an index (B, N) into them.

    Per-token conditioning repeats rows (upsampled sync features, periodic empty features); a row-wise map such as
    the adaLN projection then runs once per distinct row.
    """

    rows: torch.Tensor
    index: torch.Tensor

    @classmethod
    def of(cls, c: torch.Tensor) -> DistinctRows:
        rows, index = torch.unique(c.flatten(0, -2), dim=0, return_inverse=True)
        return cls(rows, index.view(c.shape[:-1]))

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        out = fn(self.rows)  # (U, D_out)
        return out.index_select(0, self.index.flatten()).view(*self.index.shape, -1)  # (B, N, D_out)


class ChannelLastConv1d(nn.Conv1d):
    """Conv1d on (B, N, C) tensors. While `winograd` is set (by `winograd_convolutions`), float32 CPU inference runs
    as Winograd F(4, 3): with `winograd_measured` set, only on input shapes where it measured faster
    (`WINOGRAD_PAYS_OFF`), and never under `torch.use_deterministic_algorithms(True)` (a choice made by timing would
    change the output's last bits from run to run); with `winograd_cached` set, the transformed weight is kept in
    `winograd_weight` from its first use (otherwise transformed per call)."""

    winograd: bool = False
    winograd_measured: bool = True
    winograd_cached: bool = False
    winograd_weight: torch.Tensor | None = None

    @property
    def winograd_eligible(self) -> bool:
        """A plain kernel-3 'same' convolution."""
        return (
            self.kernel_size == (3,)
            and self.padding == (1,)
            and self.stride == (1,)
            and self.dilation == (1,)
            and self.groups == 1
            and self.padding_mode == "zeros"
        )

    def use_winograd(self, x: torch.Tensor) -> bool:
        return (
            self.winograd
            and not torch.is_grad_enabled()
            and x.device.type == "cpu"
            and x.dtype == self.weight.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu")
            and (
                not self.winograd_measured
                or (not torch.are_deterministic_algorithms_enabled() and self.winograd_pays_off(x))
            )
        )

    def winograd_pays_off(self, x: torch.Tensor) -> bool:
        """Whether Winograd beat the direct convolution on x's shape here (timed on x at the first such call), with
        this convolution's way of getting the transformed weight (kept, or made block by block at every call)."""
        key = (tuple(x.shape), tuple(self.weight.shape), torch.get_num_threads(), self.winograd_cached)
        if key not in WINOGRAD_PAYS_OFF:
            WINOGRAD_PAYS_OFF[key] = winograd.pays_off(x, self.weight, self.transformed_weight())
            if not WINOGRAD_PAYS_OFF[key]:
                self.winograd_weight = None  # timed with it, not kept: this shape runs direct
        return WINOGRAD_PAYS_OFF[key]

    def transformed_weight(self) -> torch.Tensor | None:
        """Winograd's transformed weight, kept from the first call where caching is on; None where it is off."""
        if self.winograd_cached and self.winograd_weight is None:
            self.winograd_weight = winograd.transform_weight(self.weight.detach())
        return self.winograd_weight

    def forward(self, x: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, N, C_in) -> (B, N, C_out); `v`: x's Winograd input transform, when already computed."""
        if self.use_winograd(x):
            return winograd.conv3(x, self.weight, self.bias, self.transformed_weight(), v)
        return super().forward(x.transpose(1, 2)).transpose(1, 2)  # (B, N, C_out)


@contextmanager
def winograd_convolutions(
    module: nn.Module, max_cache_bytes: int = WINOGRAD_CACHE_BYTES, *, measured: bool = True
) -> Iterator[None]:
    """Run the kernel-3 token convolutions of `module` as Winograd F(4, 3) inside this block (inference only);
    `measured`: only on input shapes where it ran faster than the direct convolution here (timed once per shape and
    process; direct throughout under `torch.use_deterministic_algorithms(True)`, so that a run's output does not hang
    on a timing), otherwise always.

    Transformed weights are cached up to `max_cache_bytes` (made at a convolution's first Winograd call, so shapes
    that run direct cost no memory) and dropped on exit; numerics stay within float32 rounding of the direct
    convolution.
    """
    convs = [m for m in module.modules() if isinstance(m, ChannelLastConv1d) and m.winograd_eligible]
    if torch.is_autocast_enabled("cpu"):  # lower precision runs the direct convolutions
        convs = []
    budget = max_cache_bytes
    for conv in convs:
        conv.winograd, conv.winograd_measured = True, measured
        size = 2 * conv.weight.numel() * conv.weight.element_size()
        if conv.weight.dtype == torch.float32 and conv.weight.device.type == "cpu" and size <= budget:
            conv.winograd_cached = True
            budget -= size
    try:
        yield
    finally:
        for conv in convs:
            conv.winograd, conv.winograd_measured, conv.winograd_cached, conv.winograd_weight = False, True, False, None


class MLP(nn.Module):
    """SwiGLU feed-forward: w2(silu(w1 x) * w3 x), no biases."""

    def __init__(self, dim: int, hidden_dim: int, multiple_of: int = 256):
        super().__init__()
        hidden = swiglu_hidden_dim(hidden_dim, multiple_of)
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(swiglu(self.w1(x), self.w3(x)))


class ConvMLP(nn.Module):
    """SwiGLU feed-forward whose three projections are 1-D convolutions over tokens (B, N, C)."""

    def __init__(self, dim: int, hidden_dim: int, multiple_of: int = 256, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        hidden = swiglu_hidden_dim(hidden_dim, multiple_of)
        self.w1 = ChannelLastConv1d(dim, hidden, kernel_size, padding=padding, bias=False)
        self.w2 = ChannelLastConv1d(hidden, dim, kernel_size, padding=padding, bias=False)
        self.w3 = ChannelLastConv1d(dim, hidden, kernel_size, padding=padding, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = winograd.transform_input(x) if self.w1.use_winograd(x) else None  # shared by w1 and w3
        return self.w2(swiglu(self.w1(x, v), self.w3(x, v)))


class SelfAttention(nn.Module):
    """QKV projection with per-head RMS-normed queries and keys and optional RoPE (attention done by the caller)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.q_norm = nn.RMSNorm(self.head_dim)
        self.k_norm = nn.RMSNorm(self.head_dim)

    def qkv_heads(
        self, x: torch.Tensor, rope: RopeTable | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, N, D) -> q, k, v each (B, H, N, Dh)."""
        b, n, _ = x.shape
        # The official layout interleaves q, k, v innermost: channel = (head, dim, qkv).
        qkv = self.qkv(x).view(b, n, self.num_heads, self.head_dim, 3).permute(4, 0, 2, 1, 3)  # (3, B, H, N, Dh)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        return q, k, v


class DiTBlock(nn.Module):
    """One adaLN-modulated transformer stream (MMAudio's MMDitSingleBlock).

    `kernel_size` > 1 makes the attention output projection and the FFN convolutional. A `pre_only` block only
    produces keys/values for a joint attention (no output projection, no FFN, 2 * dim modulation).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        *,
        pre_only: bool = False,
        kernel_size: int = 7,
        padding: int = 3,
    ):
        super().__init__()
        self.pre_only = pre_only
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.attn = SelfAttention(dim, num_heads)
        if pre_only:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim, bias=True))
            return
        if kernel_size == 1:
            self.linear1 = nn.Linear(dim, dim)
            self.ffn = MLP(dim, int(dim * mlp_ratio))
        else:
            self.linear1 = ChannelLastConv1d(dim, dim, kernel_size, padding=padding)
            self.ffn = ConvMLP(dim, int(dim * mlp_ratio), kernel_size=kernel_size, padding=padding)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim, bias=True))

    def pre_attention(
        self, x: torch.Tensor, c: torch.Tensor | DistinctRows, rope: RopeTable | None
    ) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]]:
        """x (B, N, D), c (B, 1 or N, D) -> (q, k, v) and the post-attention modulation."""
        mod = c.map(self.adaLN_modulation) if isinstance(c, DistinctRows) else self.adaLN_modulation(c)
        mod = mod.chunk(2 if self.pre_only else 6, dim=-1)
        x = modulate(self.norm1(x), mod[0], mod[1])
        return self.attn.qkv_heads(x, rope), mod[2:]

    def post_attention(self, x: torch.Tensor, attn_out: torch.Tensor, mod: tuple[torch.Tensor, ...]) -> torch.Tensor:
        if self.pre_only:
            return x
        gate_msa, shift_mlp, scale_mlp, gate_mlp = mod
        x = x + self.linear1(attn_out) * gate_msa
        x = x + self.ffn(modulate(self.norm2(x), shift_mlp, scale_mlp)) * gate_mlp
        return x

    def forward(self, x: torch.Tensor, c: torch.Tensor | DistinctRows, rope: RopeTable | None) -> torch.Tensor:
        qkv, mod = self.pre_attention(x, c, rope)
        return self.post_attention(x, attention(*qkv), mod)


class JointBlock(nn.Module):
    """Joint attention over audio-latent, CLIP and text tokens, each stream with its own weights."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, *, pre_only: bool = False):
        super().__init__()
        self.pre_only = pre_only
        self.latent_block = DiTBlock(dim, num_heads, mlp_ratio, kernel_size=3, padding=1)
        self.clip_block = DiTBlock(dim, num_heads, mlp_ratio, pre_only=pre_only, kernel_size=3, padding=1)
        self.text_block = DiTBlock(dim, num_heads, mlp_ratio, pre_only=pre_only, kernel_size=1)

    def forward(
        self,
        latent: torch.Tensor,  # (B, N, D)
        clip_f: torch.Tensor,  # (B, Nc, D)
        text_f: torch.Tensor,  # (B, Nt, D)
        global_c: torch.Tensor,  # (B, 1, D)
        extended_c: torch.Tensor | DistinctRows,  # (B, N, D)
        latent_rope: RopeTable,
        clip_rope: RopeTable,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x_qkv, x_mod = self.latent_block.pre_attention(latent, extended_c, latent_rope)
        c_qkv, c_mod = self.clip_block.pre_attention(clip_f, global_c, clip_rope)
        t_qkv, t_mod = self.text_block.pre_attention(text_f, global_c, None)
        x_out, c_out, t_out = joint_attention([x_qkv, c_qkv, t_qkv])
        latent = self.latent_block.post_attention(latent, x_out, x_mod)
        if not self.pre_only:
            clip_f = self.clip_block.post_attention(clip_f, c_out, c_mod)
            text_f = self.text_block.post_attention(text_f, t_out, t_mod)
        return latent, clip_f, text_f


class FinalBlock(nn.Module):
    """adaLN-modulated LayerNorm then a k=7 convolution to the latent channels."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim, bias=True))
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.conv = ChannelLastConv1d(dim, out_dim, kernel_size=7, padding=3)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.conv(modulate(self.norm(x), shift, scale))  # (B, N, out_dim)


class TimestepEmbedder(nn.Module):
    """Sinusoidal embedding of t (cos then sin) followed by Linear-SiLU-Linear.

    The frequencies are 10000^(-2i / F) * (10000 / max_period) for i < F / 2 (F = `frequency_embedding_size`).
    """

    def __init__(self, dim: int, frequency_embedding_size: int = 256, max_period: float = 10000):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.max_period = max_period
        self.mlp = nn.Sequential(nn.Linear(frequency_embedding_size, dim), nn.SiLU(), nn.Linear(dim, dim))

    def frequencies(self, device: torch.device) -> torch.Tensor:
        size = self.frequency_embedding_size
        freqs = 1.0 / (10000 ** (torch.arange(0, size, 2, dtype=torch.float32, device=device) / size))
        return (10000 / self.max_period) * freqs  # (F / 2,)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """t (B,) -> (B, dim); each distinct time is embedded once (guidance branches share t)."""
        if t.shape[0] > 1 and not torch.is_grad_enabled():
            times, index = torch.unique(t, return_inverse=True)
            if times.shape[0] < t.shape[0]:
                return self(times)[index]
        args = t[:, None].float() * self.frequencies(t.device)[None]  # (B, F / 2)
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1).to(t.dtype)
        return self.mlp(emb)
