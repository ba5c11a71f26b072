"""Multi-head attention over F.scaled_dot_product_attention, single-stream and joint (MMDiT-style)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Attention over heads: q (B, H, Nq, Dh), k and v (B, H, Nk, Dh) -> (B, Nq, H * Dh)."""
    out = F.scaled_dot_product_attention(q.contiguous(), k.contiguous(), v.contiguous(), attn_mask=mask)
    b, h, n, d = out.shape
    return out.transpose(1, 2).reshape(b, n, h * d)  # (B, Nq, H * Dh)


def joint_attention(
    qkvs: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
) -> list[torch.Tensor]:
    """One attention over the concatenated tokens of several streams, split back per stream.

    Each entry is (q, k, v) of shape (B, H, N_i, Dh); returns one (B, N_i, H * Dh) tensor per stream.
    """
    lengths = [q.shape[2] for q, _, _ in qkvs]
    q, k, v = (torch.cat([qkv[i] for qkv in qkvs], dim=2) for i in range(3))  # (B, H, sum N_i, Dh)
    out = attention(q, k, v)  # (B, sum N_i, H * Dh)
    return list(out.split(lengths, dim=1))
