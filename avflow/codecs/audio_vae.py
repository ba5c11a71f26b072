"""MMAudio's audio VAE: log mel (B, data_dim, frames) <-> latents (B, embed_dim, frames / 2)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from avflow.codecs.audio_vae_blocks import AttnBlock1D, Downsample1D, MPConv1D, ResnetBlock1D, Upsample1D, mp_silu
from avflow.errors import WeightsError
from avflow.weights import load_strict, read_state_dict


@dataclass(frozen=True, kw_only=True)
class AudioVAEConfig:
    data_dim: int = 80  # mel bins
    embed_dim: int = 20  # latent channels
    hidden_dim: int = 384
    ch_mult: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 2
    down_layers: tuple[int, ...] = (0,)  # encoder levels followed by a x2 downsample
    clip_act: float = 256.0

    @property
    def downsample(self) -> int:
        return 2 ** len(self.down_layers)


AUDIO_VAE_16K = AudioVAEConfig(data_dim=80, embed_dim=20, hidden_dim=384)
AUDIO_VAE_44K = AudioVAEConfig(data_dim=128, embed_dim=40, hidden_dim=512)
AUDIO_VAE_CONFIGS = {"16k": AUDIO_VAE_16K, "44k": AUDIO_VAE_44K}


@dataclass
class LatentDistribution:
    """Diagonal Gaussian over latents (B, embed_dim, n)."""

    mean: torch.Tensor
    logvar: torch.Tensor

    @classmethod
    def from_moments(cls, moments: torch.Tensor) -> LatentDistribution:
        mean, logvar = moments.chunk(2, dim=1)
        return cls(mean, logvar.clamp(-30.0, 20.0))

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * noise

    def mode(self) -> torch.Tensor:
        return self.mean


class _Level(nn.Module):
    """One resolution level: residual blocks, then an optional resampler."""

    def __init__(self, blocks: list[nn.Module], resample: nn.Module | None, name: str):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self._resample_name = name if resample is not None else None
        if resample is not None:
            self.add_module(name, resample)  # "downsample" / "upsample", the official key names

    @property
    def resample(self) -> nn.Module | None:
        return None if self._resample_name is None else getattr(self, self._resample_name)


class _Mid(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block_1 = ResnetBlock1D(channels, channels)
        self.attn_1 = AttnBlock1D(channels)
        self.block_2 = ResnetBlock1D(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder1D(nn.Module):
    def __init__(self, c: AudioVAEConfig):
        super().__init__()
        self.clip_act = c.clip_act
        self.conv_in = MPConv1D(c.data_dim, c.hidden_dim, 3)
        self.down = nn.ModuleList()
        ch = c.hidden_dim
        for level, mult in enumerate(c.ch_mult):
            blocks = []
            for _ in range(c.num_res_blocks):
                blocks.append(ResnetBlock1D(ch, c.hidden_dim * mult))
                ch = c.hidden_dim * mult
            resample = Downsample1D(ch) if level in c.down_layers else None
            self.down.append(_Level(blocks, resample, "downsample"))
        self.mid = _Mid(ch)
        self.conv_out = MPConv1D(ch, 2 * c.embed_dim, 3)
        self.learnable_gain = nn.Parameter(torch.zeros([]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, data_dim, T) -> (B, 2 embed_dim, T / 2)
        h = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                h = block(h).clamp(-self.clip_act, self.clip_act)
            if level.resample is not None:
                h = level.resample(h)
        h = self.mid(h).clamp(-self.clip_act, self.clip_act)
        return self.conv_out(mp_silu(h), gain=self.learnable_gain + 1)


class Decoder1D(nn.Module):
    def __init__(self, c: AudioVAEConfig):
        super().__init__()
        self.clip_act = c.clip_act
        up_layers = {level + 1 for level in c.down_layers}
        ch = c.hidden_dim * c.ch_mult[-1]
        self.conv_in = MPConv1D(c.embed_dim, ch, 3)
        self.mid = _Mid(ch)
        levels: list[_Level] = []
        for level in reversed(range(len(c.ch_mult))):
            blocks = []
            for _ in range(c.num_res_blocks + 1):
                blocks.append(ResnetBlock1D(ch, c.hidden_dim * c.ch_mult[level]))
                ch = c.hidden_dim * c.ch_mult[level]
            resample = Upsample1D(ch) if level in up_layers else None
            levels.insert(0, _Level(blocks, resample, "upsample"))
        self.up = nn.ModuleList(levels)  # indexed by level, run from the deepest one
        self.conv_out = MPConv1D(ch, c.data_dim, 3)
        self.learnable_gain = nn.Parameter(torch.zeros([]))

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, embed_dim, n) -> (B, data_dim, 2 n)
        h = self.mid(self.conv_in(z)).clamp(-self.clip_act, self.clip_act)
        for level in reversed(self.up):
            for block in level.block:
                h = block(h).clamp(-self.clip_act, self.clip_act)
            if level.resample is not None:
                h = level.resample(h)
        return self.conv_out(mp_silu(h), gain=self.learnable_gain + 1)


class AudioVAE(nn.Module):
    """Encodes raw log mel to a latent distribution and decodes latents back to raw log mel.

    `data_mean`/`data_std` (1, data_dim, 1) normalize the mel; they come with the checkpoint.
    """

    def __init__(self, config: AudioVAEConfig = AUDIO_VAE_16K):
        super().__init__()
        self.config = config
        self.register_buffer("data_mean", torch.zeros(1, config.data_dim, 1))
        self.register_buffer("data_std", torch.ones(1, config.data_dim, 1))
        self.encoder = Encoder1D(config)
        self.decoder = Decoder1D(config)

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    def encode(self, mel: torch.Tensor) -> LatentDistribution:  # (B, data_dim, T)
        return LatentDistribution.from_moments(self.encoder((mel - self.data_mean) / self.data_std))

    def decode(self, z: torch.Tensor) -> torch.Tensor:  # (B, embed_dim, n) -> (B, data_dim, 2 n)
        return self.decoder(z) * self.data_std + self.data_mean

    @torch.no_grad()
    def fold(self) -> AudioVAE:
        """Bake the magnitude-preserving weight normalization into every convolution (inference form)."""
        for module in self.modules():
            if isinstance(module, MPConv1D):
                module.fold()
        return self

    def load_weights(
        self, state_dict: Mapping[str, torch.Tensor], folded: bool = False, source: str = "audio VAE weights"
    ) -> AudioVAE:
        """Load a state dict in the official layout; `folded=False`: raw weights as the official files store them."""
        load_strict(self, state_dict, source)
        for module in self.modules():
            if isinstance(module, MPConv1D):
                module.folded = folded
        return self.fold()

    @classmethod
    def from_file(cls, path: str | Path, config: AudioVAEConfig) -> AudioVAE:
        """Load an official `v1-16.pth` / `v1-44.pth` or a safetensors file with the same keys."""
        state_dict = read_state_dict(path)
        if not state_dict:
            raise WeightsError(f"{path}: not a state dict")
        return cls(config).load_weights(state_dict, source=str(path))
