"""MMAudio's configurations: the network's constructor arguments per official variant, the sequence lengths a clip
duration gives, and the published sampling settings."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple

from avflow.errors import ConfigError
from avflow.flow.sampling import SamplingConfig

SYNC_TOKENS_PER_SEGMENT = 8


# ----------------------------------------------------------------------------------------------------------------
# Sequence lengths


class SequenceLengths(NamedTuple):
    """Token counts for one clip duration, derived as MMAudio's SequenceConfig derives them."""

    latent: int
    clip: int
    sync: int


def sequence_lengths(
    duration: float,
    sample_rate: int = 16000,
    hop_length: int = 256,
    *,
    latent_downsample: int = 2,
    clip_fps: float = 8,
    sync_fps: float = 25,
    sync_segment_frames: int = 16,
    sync_step: int = 8,
    sync_downsample: int = 2,
) -> SequenceLengths:
    """8 s -> 250 latents at 16 kHz (hop 256), 345 at 44.1 kHz (hop 512); 64 CLIP frames; 192 sync tokens."""
    if not math.isfinite(duration):  # NaN would reach int() as a bare ValueError
        raise ConfigError(f"duration must be a finite number of seconds, got {duration}")
    latent = int(math.ceil(duration * sample_rate / hop_length / latent_downsample))
    clip = int(duration * clip_fps)
    sync_frames = duration * sync_fps
    segments = (sync_frames - sync_segment_frames) // sync_step + 1
    sync = int(segments * sync_segment_frames / sync_downsample)
    if latent < 1 or clip < 1 or sync < SYNC_TOKENS_PER_SEGMENT:
        raise ConfigError(
            f"duration {duration} s is too short for MMAudio (needs >= {sync_segment_frames / sync_fps:.2f} s)"
        )
    return SequenceLengths(latent, clip, sync)


# ----------------------------------------------------------------------------------------------------------------
# Configurations


@dataclass(frozen=True, kw_only=True)
class MMAudioConfig:
    """Constructor arguments of the network (names as in the reference); seq lens are for `duration` seconds."""

    latent_dim: int = 20
    clip_dim: int = 1024
    sync_dim: int = 768
    text_dim: int = 1024
    hidden_dim: int = 448
    depth: int = 12
    fused_depth: int = 8
    num_heads: int = 7
    mlp_ratio: float = 4.0
    latent_seq_len: int = 250
    clip_seq_len: int = 64
    sync_seq_len: int = 192
    text_seq_len: int = 77
    v2: bool = False
    sample_rate: int = 16000
    hop_length: int = 256  # audio samples per mel frame; latents are 2 mel frames

    def __post_init__(self) -> None:
        if self.hidden_dim % self.num_heads or (self.hidden_dim // self.num_heads) % 2:
            raise ConfigError(f"hidden_dim {self.hidden_dim} must split into {self.num_heads} heads of even size")
        if not 0 <= self.fused_depth < self.depth:
            raise ConfigError(f"need 0 <= fused_depth < depth, got fused_depth={self.fused_depth}, depth={self.depth}")
        if self.sync_seq_len % SYNC_TOKENS_PER_SEGMENT:
            raise ConfigError(f"sync_seq_len {self.sync_seq_len} is not a multiple of {SYNC_TOKENS_PER_SEGMENT}")

    @property
    def joint_depth(self) -> int:
        return self.depth - self.fused_depth

    @property
    def head_dim(self) -> int:
        return self.hidden_dim // self.num_heads


_16K = dict(latent_dim=20, latent_seq_len=250, sample_rate=16000, hop_length=256)
_44K = dict(latent_dim=40, latent_seq_len=345, sample_rate=44100, hop_length=512)

CONFIGS: dict[str, MMAudioConfig] = {
    "small_16k": MMAudioConfig(**_16K, hidden_dim=448, num_heads=7, depth=12, fused_depth=8),
    "small_44k": MMAudioConfig(**_44K, hidden_dim=448, num_heads=7, depth=12, fused_depth=8),
    "medium_44k": MMAudioConfig(**_44K, hidden_dim=896, num_heads=14, depth=12, fused_depth=8),
    "large_44k": MMAudioConfig(**_44K, hidden_dim=896, num_heads=14, depth=21, fused_depth=14),
    "large_44k_v2": MMAudioConfig(**_44K, hidden_dim=896, num_heads=14, depth=21, fused_depth=14, v2=True),
}


# MMAudio's published sampling settings (Euler, 25 steps, CFG 4.5), for every variant.
SAMPLING = SamplingConfig(steps=25, cfg_strength=4.5)


def get_config(name: str) -> MMAudioConfig:
    if name not in CONFIGS:
        raise ConfigError(f"unknown MMAudio variant {name!r}; choose from {', '.join(CONFIGS)}")
    return CONFIGS[name]


def variant_config(name: str, overrides: dict | None = None) -> MMAudioConfig:
    """A variant's config with some fields replaced (`model.args.variant` / `overrides` of a training run, e.g. a
    network of another depth); an unknown field is a one-line ConfigError."""
    try:
        return replace(get_config(name), **(overrides or {}))
    except TypeError as exc:
        raise ConfigError(f"overrides of {name}: {exc}") from None
