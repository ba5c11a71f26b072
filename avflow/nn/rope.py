"""1-D rotary position embeddings (RoPE) on interleaved channel pairs, with frequency scaling.

Aligned RoPE (MMAudio): a stream sampled at a lower rate than the reference stream scales its frequencies by
`reference_len / seq_len`, so its token i rotates like reference token `i * reference_len / seq_len`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RopeTable:
    """cos and sin of position * frequency, each (N, Dh / 2) in float32."""

    cos: torch.Tensor
    sin: torch.Tensor

    @property
    def length(self) -> int:
        return self.cos.shape[0]


def aligned_freq_scaling(seq_len: int, reference_len: int) -> float:
    """Frequency scale that aligns a stream of `seq_len` tokens with one of `reference_len` over the same span."""
    return 1.0 * reference_len / seq_len


def rope_table(
    length: int,
    head_dim: int,
    theta: float = 10000.0,
    *,
    freq_scaling: float = 1.0,
    device: torch.device | str | None = None,
) -> RopeTable:
    """Rotation table for positions 0..length-1 and `head_dim / 2` frequencies theta^(-2i / head_dim)."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head dimension, got {head_dim}")
    pos = torch.arange(length, dtype=torch.float32, device=device)  # (N,)
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    freqs = freqs * freq_scaling  # (Dh / 2,)
    angles = pos[:, None] * freqs[None]  # (N, Dh / 2)
    return RopeTable(torch.cos(angles), torch.sin(angles))


def apply_rope(x: torch.Tensor, table: RopeTable) -> torch.Tensor:
    """Rotate channel pairs (2i, 2i + 1) of x (..., N, Dh) by the table's angles; computed in float32."""
    xf = x.float().unflatten(-1, (-1, 2))  # (..., N, Dh / 2, 2)
    x0, x1 = xf[..., 0], xf[..., 1]
    out = torch.stack([x0 * table.cos - x1 * table.sin, x0 * table.sin + x1 * table.cos], dim=-1)
    return out.flatten(-2).to(x.dtype)  # (..., N, Dh)
