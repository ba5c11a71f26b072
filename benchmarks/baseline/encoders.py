"""CLIP (open_clip layout) and Synchformer's MotionFormer the reference's way, as plain functions of a state dict.

CLIP: pre-LN ViT, QuickGELU, every frame of a call in one batch (the reference encodes 40 frames per call).
Synchformer: divided space-time attention where the CLS query attends to every token, then the spatial aggregation
layer (nn.TransformerEncoderLayer, norm first, GELU) on all of its tokens, CLS row taken. Attention by
F.scaled_dot_product_attention, the kernel avflow uses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Params = dict[str, torch.Tensor]
CLIP_BATCH = SYNC_BATCH = 40  # frames / segments per call in the reference's feature extraction


def linear(p: Params, name: str, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, p[f"{name}.weight"], p.get(f"{name}.bias"))


def layer_norm(p: Params, name: str, x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], p[f"{name}.weight"], p[f"{name}.bias"], eps)


def heads(x: torch.Tensor, n: int) -> torch.Tensor:
    return x.unflatten(-1, (n, -1)).transpose(-3, -2)  # (..., N, D) -> (..., H, N, d)


def merge(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(-3, -2).flatten(-2)  # (..., H, N, d) -> (..., N, D)


def mha(p: Params, name: str, x: torch.Tensor, n_heads: int, causal: bool = False) -> torch.Tensor:
    """nn.MultiheadAttention's parameters (in_proj_*, out_proj) on (B, N, D)."""
    q, k, v = F.linear(x, p[f"{name}.in_proj_weight"], p[f"{name}.in_proj_bias"]).chunk(3, dim=-1)
    out = F.scaled_dot_product_attention(heads(q, n_heads), heads(k, n_heads), heads(v, n_heads), is_causal=causal)
    return linear(p, f"{name}.out_proj", merge(out))


def clip_transformer(p: Params, prefix: str, x: torch.Tensor, layers: int, n_heads: int, causal: bool = False):
    for i in range(layers):
        name = f"{prefix}.resblocks.{i}"
        x = x + mha(p, f"{name}.attn", layer_norm(p, f"{name}.ln_1", x), n_heads, causal)
        h = linear(p, f"{name}.mlp.c_fc", layer_norm(p, f"{name}.ln_2", x))
        x = x + linear(p, f"{name}.mlp.c_proj", h * torch.sigmoid(1.702 * h))
    return x


def clip_images(p: Params, config, images: torch.Tensor) -> torch.Tensor:
    """Normalised pixels (N, 3, H, W) -> L2-normalised image features (N, embed_dim), CLIP_BATCH frames a call."""
    v = config.vision
    out = []
    for chunk in images.split(CLIP_BATCH):
        x = F.conv2d(chunk, p["visual.conv1.weight"], stride=v.patch_size).flatten(2).transpose(1, 2)
        cls = p["visual.class_embedding"].expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + p["visual.positional_embedding"]
        x = layer_norm(p, "visual.ln_pre", x)
        x = clip_transformer(p, "visual.transformer", x, v.layers, v.width // v.head_width)
        out.append(F.normalize(layer_norm(p, "visual.ln_post", x[:, 0]) @ p["visual.proj"], dim=-1))
    return torch.cat(out)


def clip_text(p: Params, config, tokens: torch.Tensor) -> torch.Tensor:
    """Token ids (B, 77) -> every token's normalised ln_final state (B, 77, width), as MMAudio's patched CLIP."""
    t = config.text
    x = F.embedding(tokens, p["token_embedding.weight"]) + p["positional_embedding"]
    x = clip_transformer(p, "transformer", x, t.layers, t.heads, causal=True)
    return F.normalize(layer_norm(p, "ln_final", x), dim=-1)


def divided_attention(p: Params, name: str, x: torch.Tensor, n_heads: int, frames: int, over: str) -> torch.Tensor:
    """The CLS query attends to every token; a patch query to [CLS; its group] (same position over time, or same
    slice over space)."""
    b, n, d = x.shape
    q, k, v = (heads(t, n_heads) for t in linear(p, f"{name}.qkv", x).chunk(3, dim=-1))  # (B, H, n, d)
    cls_out = F.scaled_dot_product_attention(q[:, :, :1], k, v)

    def grouped(t: torch.Tensor) -> torch.Tensor:
        t = t[:, :, 1:].unflatten(2, (frames, -1))  # (B, H, F, P, d)
        return t.transpose(2, 3) if over == "time" else t  # (B, H, G, L, d)

    qg, kg, vg = grouped(q), grouped(k), grouped(v)
    g = qg.shape[2]
    kg = torch.cat([k[:, :, None, :1].expand(-1, -1, g, -1, -1), kg], dim=3)
    vg = torch.cat([v[:, :, None, :1].expand(-1, -1, g, -1, -1), vg], dim=3)
    out = F.scaled_dot_product_attention(qg, kg, vg)  # (B, H, G, L, d)
    out = (out.transpose(2, 3) if over == "time" else out).flatten(2, 3)
    return linear(p, f"{name}.proj", merge(torch.cat([cls_out, out], dim=2)))


def synchformer(p: Params, config, segments: torch.Tensor) -> torch.Tensor:
    """Normalised segments (S, 16, 3, 224, 224) -> (S, 8, D), SYNC_BATCH segments a call."""
    eps, n_heads = config.layer_norm_eps, config.num_heads
    pre = "vfeat_extractor"
    out = []
    for chunk in segments.split(SYNC_BATCH):
        x = F.conv3d(
            chunk.transpose(1, 2),
            p[f"{pre}.patch_embed_3d.proj.weight"],
            p[f"{pre}.patch_embed_3d.proj.bias"],
            stride=(config.patch_size_temporal, config.patch_size, config.patch_size),
        )
        s, d, t, h, w = x.shape
        patches = h * w
        x = x.flatten(2).transpose(1, 2)
        pos = p[f"{pre}.pos_embed"][:, 1:].repeat(1, t, 1) + p[f"{pre}.temp_embed"].repeat_interleave(patches, dim=1)
        pos = torch.cat([p[f"{pre}.pos_embed"][:, :1], pos], dim=1)
        x = torch.cat([p[f"{pre}.cls_token"].expand(s, 1, d), x], dim=1) + pos
        for i in range(config.depth):
            name = f"{pre}.blocks.{i}"
            x = x + divided_attention(p, f"{name}.timeattn", layer_norm(p, f"{name}.norm3", x, eps), n_heads, t, "time")
            x = x + divided_attention(p, f"{name}.attn", layer_norm(p, f"{name}.norm1", x, eps), n_heads, t, "space")
            h2 = F.gelu(linear(p, f"{name}.mlp.fc1", layer_norm(p, f"{name}.norm2", x, eps)))
            x = x + linear(p, f"{name}.mlp.fc2", h2)
        x = layer_norm(p, f"{pre}.norm", x[:, 1:], eps).reshape(s * t, patches, d)
        agg = f"{pre}.spatial_attn_agg"
        x = torch.cat([p[f"{agg}.cls_token"].expand(s * t, 1, d), x], dim=1)
        x = x + mha(p, f"{agg}.self_attn", layer_norm(p, f"{agg}.norm1", x, eps), n_heads)
        x = x + linear(p, f"{agg}.linear2", F.gelu(linear(p, f"{agg}.linear1", layer_norm(p, f"{agg}.norm2", x, eps))))
        out.append(x[:, 0].view(s, t, d))
    return torch.cat(out)
