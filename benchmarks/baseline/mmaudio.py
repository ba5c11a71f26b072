"""The MMAudio network and its Euler + CFG sampler the reference's way, as plain functions of a state dict.

Conditions are preprocessed once (the sample's and the empty ones); every step runs the conditional and the
unconditional forward separately with batch 1; adaLN on every token, the audio input projection and the t-embedding
per forward; attention by F.scaled_dot_product_attention; v = w v_c + (1 - w) v_u; t on a float32 linspace.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Params = dict[str, torch.Tensor]


def linear(p: Params, name: str, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, p[f"{name}.weight"], p.get(f"{name}.bias"))


def conv_tokens(p: Params, name: str, x: torch.Tensor, padding: int) -> torch.Tensor:
    """Conv1d on (B, N, C) tokens (permute, convolve, permute back)."""
    y = F.conv1d(x.permute(0, 2, 1), p[f"{name}.weight"], p.get(f"{name}.bias"), padding=padding)
    return y.permute(0, 2, 1)


def mlp(p: Params, name: str, x: torch.Tensor) -> torch.Tensor:
    return linear(p, f"{name}.w2", F.silu(linear(p, f"{name}.w1", x)) * linear(p, f"{name}.w3", x))


def conv_mlp(p: Params, name: str, x: torch.Tensor, padding: int) -> torch.Tensor:
    h = F.silu(conv_tokens(p, f"{name}.w1", x, padding)) * conv_tokens(p, f"{name}.w3", x, padding)
    return conv_tokens(p, f"{name}.w2", h, padding)


def rope_rotations(length: int, dim: int, scaling: float = 1.0) -> torch.Tensor:
    """(1, N, dim / 2, 2, 2) rotation matrices, theta 10000."""
    pos = torch.arange(length, dtype=torch.float32)
    freqs = 1.0 / (10000 ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)) * scaling
    rot = pos[:, None] * freqs[None]
    rot = torch.stack([torch.cos(rot), -torch.sin(rot), torch.sin(rot), torch.cos(rot)], dim=-1)
    return rot.view(1, length, dim // 2, 2, 2)


def apply_rope(x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    xf = x.float().view(*x.shape[:-1], -1, 1, 2)
    return (rot[..., 0] * xf[..., 0] + rot[..., 1] * xf[..., 1]).reshape(*x.shape).to(x.dtype)


class PlainMMAudio:
    """Forward of an MMAudio network (config `MMAudioConfig`) from its official state dict `params`."""

    def __init__(self, params: Params, config, latent_len: int, clip_len: int, sync_len: int):
        self.p, self.c = params, config
        self.latent_len, self.clip_len, self.sync_len = latent_len, clip_len, sync_len
        hd, device = config.hidden_dim // config.num_heads, params["latent_mean"].device
        self.latent_rot = rope_rotations(latent_len, hd).to(device)
        self.clip_rot = rope_rotations(clip_len, hd, latent_len / clip_len).to(device)

    # -- conditions --------------------------------------------------------------------------------------------

    def preprocess_conditions(self, clip_f, sync_f, text_f) -> dict[str, torch.Tensor]:
        p, v2 = self.p, self.c.v2
        b = clip_f.shape[0]
        sync_f = (sync_f.view(b, self.sync_len // 8, 8, -1) + p["sync_pos_emb"]).flatten(1, 2)
        clip_f = linear(p, "clip_input_proj.0", clip_f)
        clip_f = conv_mlp(p, "clip_input_proj.2" if v2 else "clip_input_proj.1", F.silu(clip_f) if v2 else clip_f, 1)
        sync_f = conv_tokens(p, "sync_input_proj.0", sync_f, 3)
        sync_f = conv_mlp(p, "sync_input_proj.2", F.silu(sync_f) if v2 else F.selu(sync_f), 1)
        text_f = linear(p, "text_input_proj.0", text_f)
        text_f = mlp(p, "text_input_proj.2" if v2 else "text_input_proj.1", F.silu(text_f) if v2 else text_f)
        sync_f = F.interpolate(sync_f.transpose(1, 2), size=self.latent_len, mode="nearest-exact").transpose(1, 2)
        return {
            "clip_f": clip_f,
            "sync_f": sync_f,
            "text_f": text_f,
            "clip_f_c": linear(p, "clip_cond_proj", clip_f.mean(dim=1)),
            "text_f_c": linear(p, "text_cond_proj", text_f.mean(dim=1)),
        }

    def empty_conditions(self) -> dict[str, torch.Tensor]:
        p = self.p
        return self.preprocess_conditions(
            p["empty_clip_feat"].unsqueeze(0).expand(1, self.clip_len, -1),
            p["empty_sync_feat"].unsqueeze(0).expand(1, self.sync_len, -1),
            p["empty_string_feat"].unsqueeze(0),
        )

    # -- blocks ------------------------------------------------------------------------------------------------

    def pre_attention(self, name: str, x, c, rot, pre_only: bool):
        p, h = self.p, self.c.num_heads
        mod = linear(p, f"{name}.adaLN_modulation.1", F.silu(c)).chunk(2 if pre_only else 6, dim=-1)
        x = F.layer_norm(x, x.shape[-1:]) * (1 + mod[1]) + mod[0]
        b, n, d = x.shape
        qkv = linear(p, f"{name}.attn.qkv", x).view(b, n, h, d // h, 3).permute(0, 2, 1, 3, 4)  # (B, H, N, Dh, 3)
        q, k, v = (t.squeeze(-1) for t in qkv.chunk(3, dim=-1))
        q = F.rms_norm(q, q.shape[-1:], p[f"{name}.attn.q_norm.weight"])
        k = F.rms_norm(k, k.shape[-1:], p[f"{name}.attn.k_norm.weight"])
        if rot is not None:
            q, k = apply_rope(q, rot), apply_rope(k, rot)
        return (q, k, v), mod[2:]

    def post_attention(self, name: str, x, attn_out, mod, kernel: int):
        gate_msa, shift_mlp, scale_mlp, gate_mlp = mod
        pad = kernel // 2
        proj = (
            conv_tokens(self.p, f"{name}.linear1", attn_out, pad)
            if kernel > 1
            else linear(self.p, f"{name}.linear1", attn_out)
        )
        x = x + proj * gate_msa
        r = F.layer_norm(x, x.shape[-1:]) * (1 + scale_mlp) + shift_mlp
        r = conv_mlp(self.p, f"{name}.ffn", r, pad) if kernel > 1 else mlp(self.p, f"{name}.ffn", r)
        return x + r * gate_mlp

    @staticmethod
    def attention(q, k, v) -> torch.Tensor:
        out = F.scaled_dot_product_attention(q.contiguous(), k.contiguous(), v.contiguous())
        b, h, n, d = out.shape
        return out.permute(0, 2, 1, 3).reshape(b, n, h * d).contiguous()

    def timestep_embedding(self, t: torch.Tensor) -> torch.Tensor:
        size, max_period = (self.c.hidden_dim, 1) if self.c.v2 else (256, 10000)
        freqs = 1.0 / (10000 ** (torch.arange(0, size, 2, dtype=torch.float32, device=t.device) / size))
        freqs = freqs * (10000 / max_period)
        args = t[:, None].float() * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1).to(t.dtype)
        return linear(self.p, "t_embed.mlp.2", F.silu(linear(self.p, "t_embed.mlp.0", emb)))

    def predict_flow(self, latent, t, cond) -> torch.Tensor:
        p, c = self.p, self.c
        clip_f, text_f = cond["clip_f"], cond["text_f"]
        x = conv_tokens(p, "audio_input_proj.0", latent, 3)
        x = conv_mlp(p, "audio_input_proj.2", F.silu(x) if c.v2 else F.selu(x), 3)
        global_c = mlp(p, "global_cond_mlp", cond["clip_f_c"] + cond["text_f_c"])
        global_c = self.timestep_embedding(t).unsqueeze(1) + global_c.unsqueeze(1)
        extended_c = global_c + cond["sync_f"]
        joint = c.depth - c.fused_depth
        for i in range(joint):
            pre_only = i == joint - 1
            name = f"joint_blocks.{i}"
            x_qkv, x_mod = self.pre_attention(f"{name}.latent_block", x, extended_c, self.latent_rot, False)
            c_qkv, c_mod = self.pre_attention(f"{name}.clip_block", clip_f, global_c, self.clip_rot, pre_only)
            t_qkv, t_mod = self.pre_attention(f"{name}.text_block", text_f, global_c, None, pre_only)
            out = self.attention(*(torch.cat([x_qkv[j], c_qkv[j], t_qkv[j]], dim=2) for j in range(3)))
            n, nc = x.shape[1], clip_f.shape[1]
            x = self.post_attention(f"{name}.latent_block", x, out[:, :n], x_mod, 3)
            if not pre_only:
                clip_f = self.post_attention(f"{name}.clip_block", clip_f, out[:, n : n + nc], c_mod, 3)
                text_f = self.post_attention(f"{name}.text_block", text_f, out[:, n + nc :], t_mod, 1)
        for i in range(c.fused_depth):
            name = f"fused_blocks.{i}"
            qkv, mod = self.pre_attention(name, x, extended_c, self.latent_rot, False)
            x = self.post_attention(name, x, self.attention(*qkv), mod, 3)
        shift, scale = linear(p, "final_layer.adaLN_modulation.1", F.silu(global_c)).chunk(2, dim=-1)
        x = F.layer_norm(x, x.shape[-1:]) * (1 + scale) + shift
        return conv_tokens(p, "final_layer.conv", x, 3)

    # -- sampling ----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, x0, clip_f, sync_f, text_f, steps: int = 25, cfg_strength: float = 4.5) -> torch.Tensor:
        """Euler from t = 0 to 1 with plain CFG; returns normalized latents (B, N, C)."""
        cond = self.preprocess_conditions(clip_f, sync_f, text_f)
        empty = {k: v.expand(x0.shape[0], *v.shape[1:]) for k, v in self.empty_conditions().items()}
        x, grid = x0, torch.linspace(0, 1, steps + 1, device=x0.device)
        for t, t_next in zip(grid[:-1], grid[1:]):
            tt = t * torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
            v = cfg_strength * self.predict_flow(x, tt, cond) + (1 - cfg_strength) * self.predict_flow(x, tt, empty)
            x = x + (t_next - t) * v
        return x
