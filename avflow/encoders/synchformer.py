"""Synchformer's visual feature extractor (MotionFormer, divided space-time ViT) as MMAudio uses it.

Parameter names follow the official `synchformer_state_dict.pth` (`vfeat_extractor.*`), so it loads strictly.
A 16-frame segment of 224 px frames gives 8 features (one per 2-frame slice), each the CLS output of a
spatial aggregation layer over that slice's 14x14 patch tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SEGMENT_FRAMES = 16  # frames per segment
SEGMENT_STEP = 8  # frames between segment starts


@dataclass(frozen=True, kw_only=True)
class SynchformerConfig:
    """Defaults: the official model (divided_224_16x4)."""

    embed_dim: int = 768
    num_heads: int = 12
    depth: int = 12
    mlp_ratio: int = 4
    patch_size: int = 16
    patch_size_temporal: int = 2
    temporal_resolution: int = 8  # feature slices per segment
    img_size: int = 224
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-6

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size


def _attend(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Softmax attention over the last two dims; any leading dims are batch dims."""
    lead = q.shape[:-2]
    out = F.scaled_dot_product_attention(
        q.reshape(-1, 1, *q.shape[-2:]), k.reshape(-1, 1, *k.shape[-2:]), v.reshape(-1, 1, *v.shape[-2:])
    )
    return out.reshape(*lead, *out.shape[-2:])


class DividedAttention(nn.Module):
    """Self-attention over time or over space. The CLS query attends to every token; a patch query attends to
    [CLS; patches at the same spatial position in every slice] (time) or [CLS; patches of the same slice] (space)."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, frames: int, patches: int, over: str) -> Tensor:
        b, n, d = x.shape  # n = 1 + frames * patches
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # (B, H, n, d)
        cls_out = _attend(q[:, :, :1], k, v)  # (B, H, 1, d)

        def groups(t: Tensor) -> Tensor:  # (B, H, F*P, d) -> (B, H, G, L, d)
            t = t[:, :, 1:].unflatten(2, (frames, patches))
            return t.transpose(2, 3) if over == "time" else t

        qg, kg, vg = groups(q), groups(k), groups(v)
        g = qg.shape[2]
        kg = torch.cat([k[:, :, None, :1].expand(-1, -1, g, -1, -1), kg], dim=3)  # CLS key joins every group
        vg = torch.cat([v[:, :, None, :1].expand(-1, -1, g, -1, -1), vg], dim=3)
        out = _attend(qg, kg, vg)  # (B, H, G, L, d)
        out = (out.transpose(2, 3) if over == "time" else out).flatten(2, 3)  # (B, H, F*P, d)
        out = torch.cat([cls_out, out], dim=2).transpose(1, 2).reshape(b, n, d)
        return self.proj(out)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class DividedSpaceTimeBlock(nn.Module):
    """Time attention (norm3, timeattn), then space attention (norm1, attn), then MLP (norm2)."""

    def __init__(self, config: SynchformerConfig):
        super().__init__()
        d, eps = config.embed_dim, config.layer_norm_eps
        self.norm1 = nn.LayerNorm(d, eps=eps)
        self.attn = DividedAttention(d, config.num_heads, config.qkv_bias)
        self.timeattn = DividedAttention(d, config.num_heads, config.qkv_bias)
        self.norm2 = nn.LayerNorm(d, eps=eps)
        self.mlp = Mlp(d, d * config.mlp_ratio)
        self.norm3 = nn.LayerNorm(d, eps=eps)

    def forward(self, x: Tensor, frames: int, patches: int) -> Tensor:
        x = x + self.timeattn(self.norm3(x), frames, patches, "time")
        x = x + self.attn(self.norm1(x), frames, patches, "space")
        return x + self.mlp(self.norm2(x))


class SpatialAggregation(nn.Module):
    """nn.TransformerEncoderLayer (norm_first, GELU) over [learned CLS; patch tokens]; returns the CLS output."""

    def __init__(self, config: SynchformerConfig):
        super().__init__()
        d, eps = config.embed_dim, config.layer_norm_eps
        self.heads = config.num_heads
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.self_attn = nn.Module()
        self.self_attn.in_proj_weight = nn.Parameter(torch.empty(3 * d, d))
        self.self_attn.in_proj_bias = nn.Parameter(torch.empty(3 * d))
        self.self_attn.out_proj = nn.Linear(d, d)
        self.linear1 = nn.Linear(d, d * config.mlp_ratio)
        self.linear2 = nn.Linear(d * config.mlp_ratio, d)
        self.norm1 = nn.LayerNorm(d, eps=eps)
        self.norm2 = nn.LayerNorm(d, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        """(M, P, D) tokens -> (M, D). Only the CLS row is computed: it is the only output used."""
        m, p, d = x.shape
        x = torch.cat([self.cls_token.to(x.dtype).expand(m, 1, d), x], dim=1)  # (M, 1+P, D)
        h = self.norm1(x)
        w, bias = self.self_attn.in_proj_weight, self.self_attn.in_proj_bias
        q = F.linear(h[:, :1], w[:d], bias[:d])  # (M, 1, D)
        k, v = F.linear(h, w[d:], bias[d:]).chunk(2, dim=-1)  # (M, 1+P, D) each

        def heads(t: Tensor) -> Tensor:
            return t.unflatten(-1, (self.heads, d // self.heads)).transpose(1, 2)  # (M, H, L, d)

        att = F.scaled_dot_product_attention(heads(q), heads(k), heads(v)).transpose(1, 2).reshape(m, 1, d)
        y = x[:, :1] + self.self_attn.out_proj(att)
        y = y + self.linear2(F.gelu(self.linear1(self.norm2(y))))
        return y[:, 0]


class PatchEmbed(nn.Module):
    def __init__(self, proj: nn.Module):
        super().__init__()
        self.proj = proj


class MotionFormer(nn.Module):
    """(N, 3, T, H, W) segment -> (N, T / patch_size_temporal, D) per-slice features."""

    def __init__(self, config: SynchformerConfig):
        super().__init__()
        d, p, pt = config.embed_dim, config.patch_size, config.patch_size_temporal
        self.config = config
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.grid**2 + 1, d))
        self.temp_embed = nn.Parameter(torch.zeros(1, config.temporal_resolution, d))
        self.patch_embed = PatchEmbed(nn.Conv2d(3, d, p, stride=p))  # in the checkpoint, unused in forward
        self.patch_embed_3d = PatchEmbed(nn.Conv3d(3, d, (pt, p, p), stride=(pt, p, p)))
        self.blocks = nn.ModuleList(DividedSpaceTimeBlock(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.spatial_attn_agg = SpatialAggregation(config)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed_3d.proj(x)  # (N, D, t, h, w)
        n, d, t, h, w = x.shape
        patches = self.pos_embed.shape[1] - 1
        if h * w != patches or t != self.temp_embed.shape[1]:
            raise ValueError(
                f"Synchformer expects {self.config.img_size} px, {SEGMENT_FRAMES}-frame segments; "
                f"got a {t}x{h}x{w} token grid"
            )
        x = x.flatten(2).transpose(1, 2)  # (N, t*h*w, D), slice-major
        pos = self.pos_embed[:, 1:].repeat(1, t, 1) + self.temp_embed.repeat_interleave(patches, dim=1)
        pos = torch.cat([self.pos_embed[:, :1], pos], dim=1).to(x.dtype)
        x = torch.cat([self.cls_token.to(x.dtype).expand(n, 1, d), x], dim=1) + pos
        for block in self.blocks:
            x = block(x, t, patches)
        x = self.norm(x[:, 1:])  # (N, t*P, D)
        return self.spatial_attn_agg(x.reshape(n * t, patches, d)).view(n, t, d)


class Synchformer(nn.Module):
    """Holds `vfeat_extractor` like the official Synchformer, so checkpoint keys match."""

    def __init__(self, config: SynchformerConfig | None = None):
        super().__init__()
        self.config = config or SynchformerConfig()
        self.vfeat_extractor = MotionFormer(self.config)

    def forward(self, segments: Tensor) -> Tensor:
        """(B, S, 16, 3, H, W) normalised segments -> (B, S, 8, D)."""
        b, s = segments.shape[:2]
        x = segments.flatten(0, 1).transpose(1, 2)  # (B*S, 3, 16, H, W)
        return self.vfeat_extractor(x).unflatten(0, (b, s))


def split_segments(video: Tensor) -> Tensor:
    """(B, T, 3, H, W) -> (B, S, 16, 3, H, W), S = (T - 16) // 8 + 1; trailing frames that fill no segment drop."""
    t = video.shape[1]
    if t < SEGMENT_FRAMES:
        raise ValueError(f"Synchformer needs at least {SEGMENT_FRAMES} frames, got {t}")
    return video.unfold(1, SEGMENT_FRAMES, SEGMENT_STEP).permute(0, 1, 5, 2, 3, 4)
