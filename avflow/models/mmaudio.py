"""MMAudio-compatible flow network (arXiv 2412.15322): loads the official checkpoints unchanged.

Joint blocks attend over audio-latent, CLIP and text tokens; fused blocks over audio latents only. Conditioning is
adaLN: global = t-embedding + MLP(CLIP mean + text mean), plus per-frame Synchformer features for the audio
latents. The network works on normalized latents (`normalize` / `unnormalize` with the checkpoint's mean/std).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from avflow.errors import ConfigError, WeightsError
from avflow.models.mmaudio_config import (
    CONFIGS,
    SYNC_TOKENS_PER_SEGMENT,
    MMAudioConfig,
    SequenceLengths,
    get_config,
    sequence_lengths,
)
from avflow.nn.mmaudio_blocks import (
    MLP,
    ChannelLastConv1d,
    ConvMLP,
    DistinctRows,
    DiTBlock,
    FinalBlock,
    JointBlock,
    TimestepEmbedder,
)
from avflow.nn.rope import RopeTable, aligned_freq_scaling, rope_table
from avflow.weights import load_strict, read_state_dict

Cond = dict[str, torch.Tensor]

ROPE_THETA = 10000
# Old buffers saved in the official .pth files; they are recomputed here.
STALE_CHECKPOINT_KEYS = ("t_embed.freqs", "latent_rot", "clip_rot")


# ----------------------------------------------------------------------------------------------------------------
# Network


class MMAudio(nn.Module):
    """The MMAudio flow network; implements the generator protocol on the stream "audio" (B, N, latent_dim)."""

    def __init__(self, config: MMAudioConfig):
        super().__init__()
        self.config = config
        c = config
        d, act = c.hidden_dim, (nn.SiLU if c.v2 else nn.SELU)
        self.audio_input_proj = nn.Sequential(
            ChannelLastConv1d(c.latent_dim, d, kernel_size=7, padding=3),
            act(),
            ConvMLP(d, d * 4, kernel_size=7, padding=3),
        )
        self.clip_input_proj = nn.Sequential(
            nn.Linear(c.clip_dim, d),
            *([nn.SiLU()] if c.v2 else []),
            ConvMLP(d, d * 4, kernel_size=3, padding=1),
        )
        self.sync_input_proj = nn.Sequential(
            ChannelLastConv1d(c.sync_dim, d, kernel_size=7, padding=3),
            act(),
            ConvMLP(d, d * 4, kernel_size=3, padding=1),
        )
        self.text_input_proj = nn.Sequential(
            nn.Linear(c.text_dim, d),
            *([nn.SiLU()] if c.v2 else []),
            MLP(d, d * 4),
        )
        self.clip_cond_proj = nn.Linear(d, d)
        self.text_cond_proj = nn.Linear(d, d)
        self.global_cond_mlp = MLP(d, d * 4)
        self.sync_pos_emb = nn.Parameter(torch.zeros(1, 1, SYNC_TOKENS_PER_SEGMENT, c.sync_dim))
        self.final_layer = FinalBlock(d, c.latent_dim)
        if c.v2:
            self.t_embed = TimestepEmbedder(d, frequency_embedding_size=d, max_period=1)
        else:
            self.t_embed = TimestepEmbedder(d, frequency_embedding_size=256, max_period=10000)
        self.joint_blocks = nn.ModuleList(
            [JointBlock(d, c.num_heads, c.mlp_ratio, pre_only=(i == c.joint_depth - 1)) for i in range(c.joint_depth)]
        )
        self.fused_blocks = nn.ModuleList(
            [DiTBlock(d, c.num_heads, c.mlp_ratio, kernel_size=3, padding=1) for _ in range(c.fused_depth)]
        )
        # Checkpoint statistics and learned empty conditions (NaN mean/std until weights are loaded).
        self.latent_mean = nn.Parameter(torch.full((1, 1, c.latent_dim), float("nan")), requires_grad=False)
        self.latent_std = nn.Parameter(torch.full((1, 1, c.latent_dim), float("nan")), requires_grad=False)
        self.empty_string_feat = nn.Parameter(torch.zeros(c.text_seq_len, c.text_dim), requires_grad=False)
        self.empty_clip_feat = nn.Parameter(torch.zeros(1, c.clip_dim))
        self.empty_sync_feat = nn.Parameter(torch.zeros(1, c.sync_dim))

        self.latent_seq_len, self.clip_seq_len, self.sync_seq_len = c.latent_seq_len, c.clip_seq_len, c.sync_seq_len
        self._rope_cache: dict[Any, tuple[RopeTable, RopeTable]] = {}
        self._empty_cache: dict[str, tuple[Any, Cond]] = {}

    # -- sequence lengths and rotary tables ----------------------------------------------------------------------

    def update_seq_lengths(self, latent_seq_len: int, clip_seq_len: int, sync_seq_len: int) -> None:
        """Switch to another clip length; rotary tables and cached empty conditions are rebuilt on next use."""
        if sync_seq_len % SYNC_TOKENS_PER_SEGMENT:
            raise ConfigError(f"sync_seq_len {sync_seq_len} is not a multiple of {SYNC_TOKENS_PER_SEGMENT}")
        self.latent_seq_len, self.clip_seq_len, self.sync_seq_len = latent_seq_len, clip_seq_len, sync_seq_len
        self.clear_caches()

    def clear_caches(self) -> None:
        """Drop the cached rotary tables and preprocessed empty conditions."""
        self._rope_cache.clear()
        self._empty_cache.clear()

    def set_duration(self, duration: float) -> SequenceLengths:
        """Set the sequence lengths for a clip of `duration` seconds (as MMAudio derives them)."""
        lengths = sequence_lengths(duration, self.config.sample_rate, self.config.hop_length)
        self.update_seq_lengths(lengths.latent, lengths.clip, lengths.sync)
        return lengths

    def rope_tables(self, device: torch.device) -> tuple[RopeTable, RopeTable]:
        """Latent and aligned CLIP rotary tables (CLIP frame i rotates like latent i * N / Nc)."""
        key = (device, self.latent_seq_len, self.clip_seq_len)
        if key not in self._rope_cache:
            hd = self.config.head_dim
            latent = rope_table(self.latent_seq_len, hd, ROPE_THETA, device=device)
            scaling = aligned_freq_scaling(self.clip_seq_len, self.latent_seq_len)
            clip = rope_table(self.clip_seq_len, hd, ROPE_THETA, freq_scaling=scaling, device=device)
            self._rope_cache = {key: (latent, clip)}
        return self._rope_cache[key]

    # -- latent normalization ------------------------------------------------------------------------------------

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.latent_mean) / self.latent_std

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.latent_std + self.latent_mean

    # -- conditions ----------------------------------------------------------------------------------------------

    def visual_conditions(self, clip_f: torch.Tensor, sync_f: torch.Tensor) -> Cond:
        """CLIP (B, Nc, clip_dim) and Synchformer (B, Ns, sync_dim) features -> projected tokens and summaries."""
        if clip_f.shape[1] != self.clip_seq_len or sync_f.shape[1] != self.sync_seq_len:
            raise ConfigError(
                f"MMAudio expects {self.clip_seq_len} CLIP and {self.sync_seq_len} sync tokens for this duration, "
                f"got {clip_f.shape[1]} and {sync_f.shape[1]} (call set_duration first)"
            )
        b = sync_f.shape[0]
        segments = self.sync_seq_len // SYNC_TOKENS_PER_SEGMENT
        sync_f = (sync_f.view(b, segments, SYNC_TOKENS_PER_SEGMENT, -1) + self.sync_pos_emb).flatten(1, 2)
        clip_f = self.clip_input_proj(clip_f)  # (B, Nc, D)
        sync_f = self.sync_input_proj(sync_f)  # (B, Ns, D)
        # Per-frame sync conditioning upsampled to the audio latent rate.
        sync_f = F.interpolate(sync_f.transpose(1, 2), size=self.latent_seq_len, mode="nearest-exact")
        return {
            "clip_f": clip_f,
            "sync_f": sync_f.transpose(1, 2),  # (B, N, D)
            "clip_f_c": self.clip_cond_proj(clip_f.mean(dim=1)),  # (B, D)
        }

    def text_conditions(self, text_f: torch.Tensor) -> Cond:
        """Text token features (B, Nt, text_dim) -> projected tokens and summary."""
        text_f = self.text_input_proj(text_f)  # (B, Nt, D)
        return {"text_f": text_f, "text_f_c": self.text_cond_proj(text_f.mean(dim=1))}  # (B, D)

    def preprocess_conditions(self, clip_f: torch.Tensor, sync_f: torch.Tensor, text_f: torch.Tensor) -> Cond:
        """Everything that does not depend on the latent or t; computed once per sample, reused at every step."""
        return {**self.visual_conditions(clip_f, sync_f), **self.text_conditions(text_f)}

    def _cached(self, name: str, params: list[torch.Tensor], build) -> Cond:
        """Learned empty conditions, cached at inference until the weights or sequence lengths change."""
        if torch.is_grad_enabled():
            return build()
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
        hit = self._empty_cache.get(name)
        if hit is None or hit[0] != key:
            hit = (key, build())
            self._empty_cache[name] = hit
        return hit[1]

    def _empty_visual(self) -> Cond:
        """Preprocessed empty CLIP and sync conditions, batch 1."""
        mods = (self.clip_input_proj, self.sync_input_proj, self.clip_cond_proj)
        params = [self.empty_clip_feat, self.empty_sync_feat, self.sync_pos_emb]
        params += [p for m in mods for p in m.parameters()]

        def build() -> Cond:
            clip = self.empty_clip_feat.unsqueeze(0).expand(1, self.clip_seq_len, -1)
            sync = self.empty_sync_feat.unsqueeze(0).expand(1, self.sync_seq_len, -1)
            return self.visual_conditions(clip, sync)

        return self._cached("visual", params, build)

    def _empty_text(self) -> Cond:
        """Preprocessed empty-string text conditions, batch 1."""
        params = [self.empty_string_feat, *self.text_input_proj.parameters(), *self.text_cond_proj.parameters()]
        return self._cached("text", params, lambda: self.text_conditions(self.empty_string_feat.unsqueeze(0)))

    def empty_conditions(self, batch: int, negative_text_f: torch.Tensor | None = None) -> Cond:
        """Learned empty CLIP/sync conditions with the empty string, or with `negative_text_f` (B, Nt, text_dim)."""
        text = self._empty_text() if negative_text_f is None else self.text_conditions(negative_text_f)
        cond = {**self._empty_visual(), **text}
        return {k: v.expand(batch, *v.shape[1:]) for k, v in cond.items()}

    # -- flow ----------------------------------------------------------------------------------------------------

    def _project_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """audio_input_proj, run once per distinct batch row (guidance branches repeat the same latent)."""
        if latent.shape[0] > 1 and not torch.is_grad_enabled():
            unique, inverse = torch.unique(latent.flatten(1), dim=0, return_inverse=True)
            if unique.shape[0] < latent.shape[0]:
                return self.audio_input_proj(unique.view(-1, *latent.shape[1:]))[inverse]
        return self.audio_input_proj(latent)

    def predict_flow(self, latent: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        """Velocity for normalized latents (B, N, C) at times t (B,) under preprocessed conditions."""
        if latent.shape[1] != self.latent_seq_len:
            raise ConfigError(
                f"MMAudio expects {self.latent_seq_len} latents for this duration, got {latent.shape[1]} "
                "(call set_duration first)"
            )
        latent_rope, clip_rope = self.rope_tables(latent.device)
        clip_f, text_f = cond["clip_f"], cond["text_f"]
        x = self._project_latent(latent)  # (B, N, D)
        global_c = self.global_cond_mlp(cond["clip_f_c"] + cond["text_f_c"])  # (B, D)
        global_c = self.t_embed(t).unsqueeze(1) + global_c.unsqueeze(1)  # (B, 1, D)
        extended_c = global_c + cond["sync_f"]  # (B, N, D)
        if not torch.is_grad_enabled():
            extended_c = DistinctRows.of(extended_c)  # adaLN once per distinct conditioning row
        for block in self.joint_blocks:
            x, clip_f, text_f = block(x, clip_f, text_f, global_c, extended_c, latent_rope, clip_rope)
        for block in self.fused_blocks:
            x = block(x, extended_c, latent_rope)
        # The official weights modulate the final layer with the global conditioning (MMAudio issue #55).
        return self.final_layer(x, global_c)  # (B, N, C)

    def forward(
        self, latent: torch.Tensor, clip_f: torch.Tensor, sync_f: torch.Tensor, text_f: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """Reference-style call: conditions are preprocessed inside (use predict_flow to reuse them)."""
        return self.predict_flow(latent, t, self.preprocess_conditions(clip_f, sync_f, text_f))

    def velocity(
        self, streams: dict[str, torch.Tensor], t: dict[str, torch.Tensor], cond: Cond, *, cross_modal: bool = True
    ) -> dict[str, torch.Tensor]:
        """Generator protocol; `cross_modal=False` swaps in the empty CLIP and sync conditions (text kept)."""
        x, tt = streams["audio"], t["audio"]
        if tt.ndim == 2:
            if not bool((tt == tt[:, :1]).all()):
                raise ConfigError("the MMAudio network takes one time per sample; per-frame times are not supported")
            tt = tt[:, 0]
        if not cross_modal:
            empty = self._empty_visual()
            cond = {**cond, **{k: v.expand(x.shape[0], *v.shape[1:]) for k, v in empty.items()}}
        return {"audio": self.predict_flow(x, tt.to(x.dtype), cond)}


# ----------------------------------------------------------------------------------------------------------------
# Building and loading


def build_mmaudio(name_or_config: str | MMAudioConfig, device: torch.device | str | None = None) -> MMAudio:
    """Network for a variant name (see CONFIGS) or a config, with uninitialized statistics; device may be "meta"."""
    config = get_config(name_or_config) if isinstance(name_or_config, str) else name_or_config
    with torch.device(device or "cpu"):
        return MMAudio(config)


def load_official_state_dict(
    model: MMAudio,
    source: str | Path | dict[str, torch.Tensor],
    *,
    name: str | None = None,
    config_name: str = "this model's config",
) -> MMAudio:
    """Load an official MMAudio checkpoint (.pth, .safetensors or a state dict) strictly.

    The stale buffers listed in STALE_CHECKPOINT_KEYS are dropped; any other missing, extra or mis-shaped key
    raises WeightsError naming it (`avflow.weights.load_strict`), or, where the checkpoint is a network of other
    sizes, naming those sizes and the config's (`config_name`: where the config came from, e.g. its JSON file).
    Meta tensors into a network built on the meta device check keys and shapes without any data.
    """
    where = name or (str(source) if isinstance(source, (str, Path)) else "state dict")
    state = read_state_dict(source) if isinstance(source, (str, Path)) else dict(source)
    for k in STALE_CHECKPOINT_KEYS:
        state.pop(k, None)
    try:
        load_strict(model, state, where, assign=any(p.is_meta for p in model.parameters()))
    except WeightsError:
        own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        if own == {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}:
            raise  # this model's shape: its values are wrong (non-finite, integer), as load_strict says
        variants = official_variants_of(state)
        if variants:
            raise WeightsError(f"{where}: holds a {' or '.join(variants)} network (the official variant's keys and "
                               f"shapes), not one of this model's shape (hidden {model.config.hidden_dim}, depth "
                               f"{model.config.depth}, latent {model.config.latent_dim})") from None  # fmt: skip
        sizes = size_mismatch(state, model.config)
        if sizes is None:
            raise
        raise WeightsError(f"checkpoint {where}: {sizes[0]}; {config_name}: {sizes[1]}") from None
    model.clear_caches()
    return model


# The config fields that shape the network's parameters, as a checkpoint's tensor shapes give them.
SIZE_FIELDS = ("hidden_dim", "depth", "num_heads", "v2", "latent_dim", "clip_dim", "sync_dim", "text_dim",
               "text_seq_len")  # fmt: skip


def checkpoint_sizes(state: dict[str, torch.Tensor]) -> dict[str, Any] | None:
    """The `SIZE_FIELDS` (and fused_depth) of the network a state dict holds, read off its tensor shapes, or None
    where it is no MMAudio network (its input projections or blocks are missing)."""
    shapes = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    need = ("audio_input_proj.0.weight", "clip_input_proj.0.weight", "sync_input_proj.0.weight",
            "text_input_proj.0.weight", "empty_string_feat")  # fmt: skip
    head = shapes.get("joint_blocks.0.latent_block.attn.q_norm.weight")
    if any(len(shapes.get(k, ())) < 2 for k in need) or head is None or not head[0]:
        return None
    hidden = shapes["audio_input_proj.0.weight"][0]
    return {
        "hidden_dim": hidden,
        "depth": _block_count(shapes, "joint_blocks.") + _block_count(shapes, "fused_blocks."),
        "fused_depth": _block_count(shapes, "fused_blocks."),
        "num_heads": hidden // head[0],
        "v2": any(k.startswith("clip_input_proj.2.") for k in shapes),  # v2: a SiLU after the first Linear
        "latent_dim": shapes["audio_input_proj.0.weight"][1],
        "clip_dim": shapes["clip_input_proj.0.weight"][1],
        "sync_dim": shapes["sync_input_proj.0.weight"][1],
        "text_dim": shapes["text_input_proj.0.weight"][1],
        "text_seq_len": shapes["empty_string_feat"][0],
    }


def _block_count(shapes: dict[str, tuple], prefix: str) -> int:
    """How many blocks `prefix.<i>.` the keys hold."""
    return len({k[len(prefix) :].split(".", 1)[0] for k in shapes if k.startswith(prefix)})


def _holds_network_of(config: MMAudioConfig, sizes: dict[str, Any], state: dict[str, torch.Tensor]) -> bool:
    """Whether `config` with `sizes` builds a network (on the meta device) of exactly `state`'s keys and shapes."""
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        return False
    try:
        config = replace(config, **sizes)
    except ConfigError:  # e.g. heads that do not split the width
        return False
    expected = build_mmaudio(config, device="meta").state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items() if k not in STALE_CHECKPOINT_KEYS}
    return {k: tuple(v.shape) for k, v in expected.items()} == shapes


def size_mismatch(state: dict[str, torch.Tensor], config: MMAudioConfig) -> tuple[str, str] | None:
    """(the checkpoint's sizes, the config's) where they differ, in words ("hidden_dim 64, depth 3 (fused 1)" and
    "hidden_dim 128, depth 4"); None where the checkpoint is no MMAudio network (the config with its sizes does not
    build a network of exactly its keys and shapes) or its sizes are the config's."""
    found = checkpoint_sizes(state)
    if found is None or not _holds_network_of(config, found, state):
        return None
    fused_differs = found["fused_depth"] != config.fused_depth
    differ = [f for f in SIZE_FIELDS if found[f] != getattr(config, f) or (f == "depth" and fused_differs)]
    if not differ:
        return None
    ours = {f: getattr(config, f) for f in (*SIZE_FIELDS, "fused_depth")}
    return _sizes_in_words(found, differ, fused=True), _sizes_in_words(ours, differ, fused=fused_differs)


def _sizes_in_words(sizes: dict[str, Any], fields: list[str], *, fused: bool) -> str:
    """`fields` of `sizes` in words ("hidden_dim 64, depth 3 (fused 1), v2 false"), the fused depth by the depth."""
    words = [f"{f} {str(sizes[f]).lower()}" for f in fields]
    return ", ".join(w + (f" (fused {sizes['fused_depth']})" if fused and f == "depth" else "")
                     for f, w in zip(fields, words))  # fmt: skip


def official_variants_of(state: dict[str, torch.Tensor]) -> list[str]:
    """The official variants (`CONFIGS`) whose network has exactly `state`'s keys and shapes (built on the meta
    device: no memory, about 0.3 s for all five)."""
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    found = []
    for variant in CONFIGS:
        expected = build_mmaudio(variant, device="meta").state_dict()
        if {k: tuple(v.shape) for k, v in expected.items() if k not in STALE_CHECKPOINT_KEYS} == shapes:
            found.append(variant)
    return found
