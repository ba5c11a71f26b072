"""CLIP image and text towers (open_clip's ViT layout), as MMAudio uses DFN5B-CLIP-ViT-H-14-384.

Parameter names follow open_clip's `CLIP` state dict exactly, so official checkpoints load strictly.
MMAudio's text features are the ln_final states of all 77 tokens (no EOT pooling, no text_projection).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True, kw_only=True)
class CLIPVisionConfig:
    image_size: int = 378
    patch_size: int = 14
    width: int = 1280
    layers: int = 32
    head_width: int = 80
    mlp_ratio: float = 4.0


@dataclass(frozen=True, kw_only=True)
class CLIPTextConfig:
    context_length: int = 77
    vocab_size: int = 49408
    width: int = 1024
    heads: int = 16
    layers: int = 24


@dataclass(frozen=True, kw_only=True)
class CLIPConfig:
    """Defaults: DFN5B-CLIP-ViT-H-14-384 (open_clip `ViT-H-14-378-quickgelu`)."""

    embed_dim: int = 1024
    quick_gelu: bool = True
    vision: CLIPVisionConfig = field(default_factory=CLIPVisionConfig)
    text: CLIPTextConfig = field(default_factory=CLIPTextConfig)

    @classmethod
    def from_open_clip(cls, config: dict) -> CLIPConfig:
        """Build from an open_clip `model_cfg` dict (embed_dim, quick_gelu, vision_cfg, text_cfg)."""
        return cls(
            embed_dim=config["embed_dim"],
            quick_gelu=config.get("quick_gelu", False),
            vision=CLIPVisionConfig(**config["vision_cfg"]),
            text=CLIPTextConfig(**config["text_cfg"]),
        )


class QuickGELU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class SelfAttention(nn.Module):
    """Multi-head self-attention with nn.MultiheadAttention's parameter names (in_proj_*, out_proj)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: Tensor, causal: bool = False) -> Tensor:
        b, n, d = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (B, N, 3D)
        q, k, v = qkv.view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # (B, H, N, d) each
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int, act: nn.Module):
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.gelu = act
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, quick_gelu: bool):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = MLP(width, int(width * mlp_ratio), QuickGELU() if quick_gelu else nn.GELU())

    def forward(self, x: Tensor, causal: bool = False) -> Tensor:
        x = x + self.attn(self.ln_1(x), causal=causal)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float, quick_gelu: bool):
        super().__init__()
        self.resblocks = nn.ModuleList(
            ResidualAttentionBlock(width, heads, mlp_ratio, quick_gelu) for _ in range(layers)
        )

    def forward(self, x: Tensor, causal: bool = False) -> Tensor:
        for block in self.resblocks:
            x = block(x, causal=causal)
        return x


class VisionTransformer(nn.Module):
    """ViT image tower: patch conv, CLS token, pre-LN transformer, ln_post, CLS pooling, projection.

    The stride-`patch_size` conv drops trailing pixels that do not fill a patch, so 384 px frames give
    the same 27x27 grid as the 378 px model size (the last 6 rows/cols are ignored), as in MMAudio.
    """

    def __init__(self, config: CLIPVisionConfig, embed_dim: int, quick_gelu: bool):
        super().__init__()
        width, self.patch_size = config.width, config.patch_size
        self.grid = config.image_size // config.patch_size
        self.conv1 = nn.Conv2d(3, width, kernel_size=config.patch_size, stride=config.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(width))
        self.positional_embedding = nn.Parameter(torch.empty(self.grid**2 + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, config.layers, width // config.head_width, config.mlp_ratio, quick_gelu)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.empty(width, embed_dim))

    def forward(self, x: Tensor) -> Tensor:
        """(N, 3, H, W) normalised pixels -> (N, embed_dim), not L2-normalised."""
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        if grid != (self.grid, self.grid):
            raise ValueError(f"CLIP expects images giving a {self.grid}x{self.grid} patch grid, got {tuple(x.shape)}")
        x = self.conv1(x).flatten(2).transpose(1, 2)  # (N, g*g, W)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0]) @ self.proj


class CLIP(nn.Module):
    """open_clip `CLIP` with MMAudio's encode_image / encode_text behaviour."""

    def __init__(self, config: CLIPConfig | None = None):
        super().__init__()
        config = config or CLIPConfig()
        self.config = config
        t = config.text
        self.visual = VisionTransformer(config.vision, config.embed_dim, config.quick_gelu)
        self.transformer = Transformer(t.width, t.layers, t.heads, 4.0, config.quick_gelu)
        self.token_embedding = nn.Embedding(t.vocab_size, t.width)
        self.positional_embedding = nn.Parameter(torch.empty(t.context_length, t.width))
        self.ln_final = nn.LayerNorm(t.width)
        self.text_projection = nn.Parameter(torch.empty(t.width, config.embed_dim))  # unused by MMAudio
        self.logit_scale = nn.Parameter(torch.empty(()))  # unused by MMAudio

    @property
    def text_dim(self) -> int:
        return self.config.text.width

    def encode_image(self, images: Tensor, normalize: bool = True) -> Tensor:
        """(N, 3, H, W) normalised pixels -> (N, embed_dim)."""
        x = self.visual(images)
        return F.normalize(x, dim=-1) if normalize else x

    def encode_text(self, tokens: Tensor, normalize: bool = True) -> Tensor:
        """(B, 77) token ids -> (B, 77, text width): every token's ln_final state (MMAudio's patched encode_text)."""
        x = self.token_embedding(tokens) + self.positional_embedding.to(self.token_embedding.weight.dtype)
        x = self.ln_final(self.transformer(x, causal=True))
        return F.normalize(x, dim=-1) if normalize else x
