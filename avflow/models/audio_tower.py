"""Text-to-audio tower over audio latents `(B, N, C)` in the MMAudio network layout, without the video streams.

It is the MMAudio network with the CLIP and Synchformer streams removed: audio latents and text tokens share joint
attention in `joint_blocks`, then `fused_blocks` see the audio alone. Parameter names equal the MMAudio checkpoint's,
so `load_from_mmaudio` copies every audio/text weight of an official `.pth` state dict and drops the rest:

    kept:    audio_input_proj.*, text_input_proj.*, text_cond_proj.*, global_cond_mlp.*, t_embed.mlp.*,
             joint_blocks.N.{latent_block,text_block}.*, fused_blocks.N.*, final_layer.*,
             latent_mean, latent_std, empty_string_feat
    dropped: clip_input_proj.*, clip_cond_proj.*, sync_input_proj.*, sync_pos_emb, empty_clip_feat,
             empty_sync_feat, joint_blocks.N.clip_block.*, t_embed.freqs, latent_rot, clip_rot

Global conditioning is `t_embed(t) + global_cond_mlp(text_cond_proj(mean text token))`. Per-token times `(B, N)`
modulate each audio token with its own time; the text stream uses the smallest time of the sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from avflow.errors import ConfigError
from avflow.nn.attention import joint_attention
from avflow.nn.mmaudio_blocks import MLP, ChannelLastConv1d, ConvMLP, DiTBlock, FinalBlock, TimestepEmbedder
from avflow.nn.rope import RopeTable, rope_table
from avflow.nn.towers import TowerState
from avflow.weights import load_strict

ROPE_THETA = 10000


@dataclass(frozen=True, kw_only=True)
class AudioTowerConfig:
    latent_dim: int = 20
    text_dim: int = 384
    hidden_dim: int = 128
    depth: int = 4
    fused_depth: int = 2
    num_heads: int = 2
    mlp_ratio: float = 4.0
    text_seq_len: int = 32
    v2: bool = False  # MMAudio v2 details: SiLU input activations, hidden_dim timestep frequencies, max_period 1

    def __post_init__(self) -> None:
        """Sizes the network can be built with (MMAudioConfig's checks plus positive sizes), each a one-line
        ConfigError naming the field, so a bad size fails when the config loads, not at the first step."""
        for name in ("latent_dim", "text_dim", "hidden_dim", "depth", "num_heads", "text_seq_len"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if not (math.isfinite(self.mlp_ratio) and self.mlp_ratio > 0):
            raise ConfigError(f"mlp_ratio: must be a positive number, got {self.mlp_ratio}")
        if self.hidden_dim % self.num_heads or (self.hidden_dim // self.num_heads) % 2:
            raise ConfigError(
                f"hidden_dim: {self.hidden_dim} must split into num_heads={self.num_heads} heads of even size (RoPE)"
            )
        if not 0 <= self.fused_depth <= self.depth:  # depth - fused_depth joint blocks (none: text by global cond)
            raise ConfigError(
                f"fused_depth: need 0 <= fused_depth <= depth, got fused_depth={self.fused_depth}, depth={self.depth}"
            )


class AudioTextBlock(nn.Module):
    """MMAudio's JointBlock without the CLIP stream: audio latents and text tokens in one attention.

    The last joint block only lets the text contribute keys and values (`pre_only`), as in MMAudio.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float, pre_only: bool):
        super().__init__()
        self.pre_only = pre_only
        self.latent_block = DiTBlock(dim, heads, mlp_ratio, kernel_size=3, padding=1)
        self.text_block = DiTBlock(dim, heads, mlp_ratio, pre_only=pre_only, kernel_size=1)

    def forward(self, x: Tensor, text: Tensor, c_tok: Tensor, c_glob: Tensor, rope: RopeTable) -> tuple[Tensor, Tensor]:
        """x `(B, N, D)`, text `(B, S, D)`, c_tok `(B, N or 1, D)`, c_glob `(B, 1, D)`."""
        x_qkv, x_mod = self.latent_block.pre_attention(x, c_tok, rope)
        t_qkv, t_mod = self.text_block.pre_attention(text, c_glob, None)
        x_out, t_out = joint_attention([x_qkv, t_qkv])
        x = self.latent_block.post_attention(x, x_out, x_mod)
        if not self.pre_only:
            text = self.text_block.post_attention(text, t_out, t_mod)
        return x, text


def embed_time(embedder: TimestepEmbedder, t: Tensor) -> Tensor:
    """TimestepEmbedder over any shape: `(B, K)` -> `(B, K, D)`."""
    return embedder(t.flatten()).unflatten(0, t.shape)


def audio_rope(n: int, head_dim: int, device: torch.device, positions: Tensor | None = None) -> RopeTable:
    """MMAudio latent RoPE for positions 0..n-1, or for explicit (fractional) `positions` `(N,)`."""
    if positions is None:
        return rope_table(n, head_dim, ROPE_THETA, device=device)
    freqs = 1.0 / ROPE_THETA ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim)
    angles = positions.float()[:, None] * freqs
    return RopeTable(angles.cos(), angles.sin())


class AudioTower(nn.Module):
    """Text-to-audio flow network over `(B, N, latent_dim)`; velocity in the t = 1 data convention."""

    DROPPED_PREFIXES = ("clip_input_proj.", "clip_cond_proj.", "sync_input_proj.")
    DROPPED_KEYS = ("sync_pos_emb", "empty_clip_feat", "empty_sync_feat", "t_embed.freqs", "latent_rot", "clip_rot")

    def __init__(self, config: AudioTowerConfig):
        super().__init__()
        self.config = c = config
        dim = c.hidden_dim
        act = nn.SiLU if c.v2 else nn.SELU
        self.audio_input_proj = nn.Sequential(
            ChannelLastConv1d(c.latent_dim, dim, kernel_size=7, padding=3),
            act(),
            ConvMLP(dim, dim * 4, kernel_size=7, padding=3),
        )
        text_layers = [nn.Linear(c.text_dim, dim)] + ([nn.SiLU()] if c.v2 else []) + [MLP(dim, dim * 4)]
        self.text_input_proj = nn.Sequential(*text_layers)
        self.text_cond_proj = nn.Linear(dim, dim)
        self.global_cond_mlp = MLP(dim, dim * 4)
        self.t_embed = TimestepEmbedder(dim, dim if c.v2 else 256, 1.0 if c.v2 else 10000.0)
        n_joint = c.depth - c.fused_depth
        self.joint_blocks = nn.ModuleList(
            [AudioTextBlock(dim, c.num_heads, c.mlp_ratio, pre_only=(i == n_joint - 1)) for i in range(n_joint)]
        )
        self.fused_blocks = nn.ModuleList(
            [DiTBlock(dim, c.num_heads, c.mlp_ratio, kernel_size=3, padding=1) for _ in range(c.fused_depth)]
        )
        self.final_layer = FinalBlock(dim, c.latent_dim)
        # latent statistics and the encoded empty string travel with MMAudio checkpoints; unused in `velocity`
        self.latent_mean = nn.Parameter(torch.zeros(1, 1, c.latent_dim), requires_grad=False)
        self.latent_std = nn.Parameter(torch.ones(1, 1, c.latent_dim), requires_grad=False)
        self.empty_string_feat = nn.Parameter(torch.zeros(c.text_seq_len, c.text_dim), requires_grad=False)
        self.initialize_weights()

    @property
    def n_blocks(self) -> int:
        return len(self.joint_blocks) + len(self.fused_blocks)

    @property
    def dim(self) -> int:
        return self.config.hidden_dim

    def initialize_weights(self) -> None:
        """MMAudio's init: xavier Linear, zero adaLN and output layers."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.t_embed.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embed.mlp[2].weight, std=0.02)
        blocks = [b for j in self.joint_blocks for b in (j.latent_block, j.text_block)] + list(self.fused_blocks)
        for b in [*blocks, self.final_layer]:
            nn.init.zeros_(b.adaLN_modulation[-1].weight)
            nn.init.zeros_(b.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.conv.weight)
        nn.init.zeros_(self.final_layer.conv.bias)

    # --- block-level interface used by the joint model and its fusion modules ---
    def embed(self, x: Tensor, t: Tensor, text: Tensor, positions: Tensor | None = None) -> TowerState:
        """x `(B, N, C)`, t `(B,)` or `(B, N)` in [0, 1], text `(B, S, text_dim)` -> state."""
        b, n, _ = x.shape
        if t.ndim == 1:
            t = t[:, None]  # (B, 1)
        text_h = self.text_input_proj(text)  # (B, S, D)
        global_text = self.global_cond_mlp(self.text_cond_proj(text_h.mean(dim=1)))[:, None]  # (B, 1, D)
        c_tok = embed_time(self.t_embed, t) + global_text  # (B, N or 1, D)
        c_glob = embed_time(self.t_embed, t.amin(dim=1, keepdim=True)) + global_text  # (B, 1, D)
        rotary = audio_rope(n, self.dim // self.config.num_heads, x.device, positions)
        h = self.audio_input_proj(x)
        return TowerState(h, grid=(n,), extras={"text": text_h, "c_tok": c_tok, "c_glob": c_glob, "rotary": rotary})

    def run_block(self, i: int, s: TowerState) -> None:
        e = s.extras
        if i < len(self.joint_blocks):
            s.x, e["text"] = self.joint_blocks[i](s.x, e["text"], e["c_tok"], e["c_glob"], e["rotary"])
        else:
            s.x = self.fused_blocks[i - len(self.joint_blocks)](s.x, e["c_tok"], e["rotary"])

    def head(self, s: TowerState) -> Tensor:
        return self.final_layer(s.x, s.extras["c_tok"])  # (B, N, C)

    def forward(self, x: Tensor, t: Tensor, text: Tensor) -> Tensor:
        """Velocity `(B, N, C)` for x_t at time t (t = 1 is data)."""
        s = self.embed(x, t, text)
        for i in range(self.n_blocks):
            self.run_block(i, s)
        return self.head(s)

    def load_from_mmaudio(self, state_dict: dict[str, Tensor]) -> list[str]:
        """Copy the audio/text weights of an MMAudio network state dict strictly; returns the dropped keys."""
        kept, dropped = {}, []
        for k, v in state_dict.items():
            if k in self.DROPPED_KEYS or k.startswith(self.DROPPED_PREFIXES) or ".clip_block." in k:
                dropped.append(k)
            else:
                kept[k] = v
        load_strict(self, kept, "MMAudio weights")
        return dropped
