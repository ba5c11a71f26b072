"""Video tower with the state dict of diffusers' `WanTransformer3DModel` (Wan 2.1 / 2.2 text-to-video layout).

`forward(x, timestep, text)` follows diffusers (σ = 1 is noise, `timestep = 1000·σ`, returns noise − data);
`velocity(x, t, text)` follows avflow (t = 1 is data): `timestep = 1000·(1 − t)` and the output is negated.
Timesteps may be per sample `(B,)` or per latent frame `(B, T)` (Wan 2.2 per-token modulation, computed once per
frame), so clean condition frames can sit at t = 1 next to noisy ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avflow.errors import ConfigError
from avflow.nn.towers import TowerState
from avflow.nn.wan_blocks import WanBlock, WanConditionEmbedder, WanRotary
from avflow.weights import load_strict

# WanRotary splits a head into height and width parts of 2 * (head_dim // 6) each and gives time the rest: each axis
# gets at least one rotary pair from 6 on (an odd head dim leaves a channel no pair rotates)
MIN_HEAD_DIM = 6


@dataclass(frozen=True, kw_only=True)
class WanConfig:
    """Field names follow diffusers' config so an official `config.json` maps onto it."""

    patch_size: tuple[int, int, int] = (1, 2, 2)
    num_attention_heads: int = 2
    attention_head_dim: int = 64
    in_channels: int = 16
    out_channels: int = 16
    text_dim: int = 384
    freq_dim: int = 256
    ffn_dim: int = 512
    num_layers: int = 4
    cross_attn_norm: bool = True
    eps: float = 1e-6

    def __post_init__(self) -> None:
        """Sizes the network can be built and run with, each a one-line ConfigError naming the field, so a bad size
        fails when the config loads, not with a shape error at the first step."""
        if len(self.patch_size) != 3 or any(p < 1 for p in self.patch_size):
            raise ConfigError(f"patch_size: must be 3 sizes >= 1 (time, height, width), got {list(self.patch_size)}")
        for name in ("num_attention_heads", "in_channels", "out_channels", "text_dim", "ffn_dim", "num_layers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.attention_head_dim < MIN_HEAD_DIM or self.attention_head_dim % 2:
            raise ConfigError(
                f"attention_head_dim: must be even and >= {MIN_HEAD_DIM} (the 3-D RoPE gives time, height and width "
                f"an even part of at least 2 each), got {self.attention_head_dim}"
            )
        if self.freq_dim < 2 or self.freq_dim % 2:
            raise ConfigError(f"freq_dim: must be even and >= 2 (cos and sin halves), got {self.freq_dim}")
        if not (math.isfinite(self.eps) and self.eps > 0):
            raise ConfigError(f"eps: must be a positive number, got {self.eps}")

    @property
    def dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @classmethod
    def from_diffusers(cls, config: dict) -> WanConfig:
        """Keep the fields we model; refuse image-conditioned variants (I2V keys are not implemented)."""
        if config.get("image_dim") or config.get("added_kv_proj_dim"):
            raise ConfigError("Wan image-to-video configs (image_dim / added_kv_proj_dim) are not supported")
        fields = {k: v for k, v in config.items() if k in cls.__dataclass_fields__}
        if "patch_size" in fields:
            fields["patch_size"] = tuple(fields["patch_size"])
        return cls(**fields)


class WanVideoTower(nn.Module):
    """Wan DiT over video latents `(B, C, T, H, W)` with text cross-attention."""

    def __init__(self, config: WanConfig):
        super().__init__()
        self.config = c = config
        dim = c.dim
        self.rope = WanRotary(c.attention_head_dim)
        self.patch_embedding = nn.Conv3d(c.in_channels, dim, kernel_size=c.patch_size, stride=c.patch_size)
        self.condition_embedder = WanConditionEmbedder(dim, c.freq_dim, c.text_dim)
        self.blocks = nn.ModuleList(
            [WanBlock(dim, c.ffn_dim, c.num_attention_heads, c.eps, c.cross_attn_norm) for _ in range(c.num_layers)]
        )
        self.proj_out = nn.Linear(dim, c.out_channels * math.prod(c.patch_size))
        self.scale_shift_table = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    @property
    def dim(self) -> int:
        return self.config.dim

    # --- block-level interface used by the joint model and its fusion modules ---
    def embed(self, x: Tensor, timestep: Tensor, text: Tensor, t_positions: Tensor | None = None) -> TowerState:
        """x `(B, C, T, H, W)`; timestep `(B,)` or `(B, T)` in Wan units; text `(B, S, text_dim)` -> state."""
        pt, ph, pw = self.config.patch_size
        b, _, frames, height, width = x.shape
        if frames % pt or height % ph or width % pw:
            raise ConfigError(f"video latents {tuple(x.shape)} are not divisible by the patch size {(pt, ph, pw)}")
        grid = (frames // pt, height // ph, width // pw)
        if timestep.ndim == 1:
            timestep = timestep[:, None]  # (B, 1)
        elif timestep.shape[1] == frames and pt > 1:
            timestep = timestep[:, ::pt]  # one time per patch of frames
        if timestep.shape[1] not in (1, grid[0]):
            raise ConfigError(f"per-frame timesteps {tuple(timestep.shape)} do not match {grid[0]} latent frames")
        temb, modulation = self.condition_embedder.time(timestep)  # (B, T|1, D), (B, T|1, 6, D)
        h = self.patch_embedding(x).flatten(2).transpose(1, 2).contiguous()  # (B, L, D)
        extras = {
            "text": self.condition_embedder.text_embedder(text),
            "temb": temb,
            "modulation": modulation,
            "rotary": self.rope(*grid, device=x.device, t_positions=t_positions),
            "shape": (b, frames, height, width),
        }
        return TowerState(h, grid=grid, extras=extras)

    def run_block(self, i: int, s: TowerState) -> None:
        e = s.extras
        s.x = self.blocks[i](s.x, e["text"], e["modulation"], e["rotary"])

    def head(self, s: TowerState) -> Tensor:
        """Final adaLN + projection + unpatchify -> `(B, C, T, H, W)` in diffusers' sign."""
        b, frames, height, width = s.extras["shape"]
        pt, ph, pw = self.config.patch_size
        tf, th, tw = s.grid
        shift, scale = (self.scale_shift_table[:, None] + s.extras["temb"][:, :, None]).unbind(2)  # (B, T|1, D)
        x = s.x.view(b, shift.shape[1], -1, s.x.shape[-1])
        x = F.layer_norm(x, x.shape[-1:], eps=self.config.eps) * (1 + scale[:, :, None]) + shift[:, :, None]
        x = self.proj_out(x.flatten(1, 2))  # (B, L, pt*ph*pw*C)
        x = x.view(b, tf, th, tw, pt, ph, pw, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.reshape(b, -1, frames, height, width)

    def forward(self, x: Tensor, timestep: Tensor, text: Tensor) -> Tensor:
        """diffusers convention: timestep `(B,)`/`(B, T)` with 1000 = noise; returns noise − data."""
        s = self.embed(x, timestep, text)
        for i in range(self.n_blocks):
            self.run_block(i, s)
        return self.head(s)

    def velocity(self, x: Tensor, t: Tensor, text: Tensor) -> Tensor:
        """avflow convention: t `(B,)`/`(B, T)` with 1 = data; returns data − noise."""
        return -self.forward(x, 1000.0 * (1.0 - t), text)

    def load_diffusers_state_dict(self, state_dict: dict[str, Tensor]) -> None:
        """Strict load of a diffusers `WanTransformer3DModel` state dict (text-to-video layout)."""
        load_strict(self, state_dict, "Wan weights")
