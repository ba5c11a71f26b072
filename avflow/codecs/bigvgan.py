"""BigVGAN mel vocoders: v1 at 16 kHz (MMAudio's best_netG.pt) and NVIDIA's v2 at 44.1 kHz (128 bands, 512x)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from avflow.codecs.bigvgan_blocks import (
    AMPBlock1,
    AMPBlock2,
    AntiAliasedActivation,
    conv_frames,
    conv_transpose_frames,
    to_frames,
)
from avflow.codecs.fused_activation import compiled_anti_aliased_snake
from avflow.codecs.weight_norm import fold_weight_norm
from avflow.weights import load_strict, read_state_dict

FILTER_BUFFERS = (".upsample.filter", ".lowpass.filter")  # recomputable, may be absent from a checkpoint


@dataclass(frozen=True, kw_only=True)
class BigVGANConfig:
    num_mels: int = 80
    upsample_rates: tuple[int, ...] = (4, 4, 2, 2, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (8, 8, 4, 4, 4, 4)
    upsample_initial_channel: int = 1536
    resblock: str = "1"  # "1": AMPBlock1, "2": AMPBlock2
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = field(default_factory=lambda: ((1, 3, 5),) * 3)
    activation: str = "snakebeta"  # "snake" | "snakebeta"
    snake_logscale: bool = True
    use_tanh_at_final: bool = True  # v1: tanh; v2 44k: False -> clamp to [-1, 1]
    use_bias_at_final: bool = True  # v2 44k: conv_post without bias
    sample_rate: int = 16000

    @property
    def hop_length(self) -> int:
        hop = 1
        for rate in self.upsample_rates:
            hop *= rate
        return hop

    @classmethod
    def from_dict(cls, values: Mapping) -> BigVGANConfig:
        """Build from an official config dict, ignoring training-only keys."""
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        for key in ("upsample_rates", "upsample_kernel_sizes", "resblock_kernel_sizes"):
            if key in known:
                known[key] = tuple(known[key])
        if "resblock_dilation_sizes" in known:
            known["resblock_dilation_sizes"] = tuple(tuple(d) for d in known["resblock_dilation_sizes"])
        if "sampling_rate" in values:
            known["sample_rate"] = int(values["sampling_rate"])
        return cls(**known)


BIGVGAN_V1_16K = BigVGANConfig(sample_rate=16000)
BIGVGAN_V2_44K = BigVGANConfig(
    num_mels=128,
    upsample_rates=(8, 4, 2, 2, 2, 2),
    upsample_kernel_sizes=(16, 8, 4, 4, 4, 4),
    use_tanh_at_final=False,
    use_bias_at_final=False,
    sample_rate=44100,
)
BIGVGAN_CONFIGS = {"16k": BIGVGAN_V1_16K, "44k": BIGVGAN_V2_44K}


class BigVGAN(nn.Module):
    """Log mel (B, num_mels, frames) -> waveform (B, 1, frames * hop_length) in [-1, 1]. Weights are plain
    (weight norm folded at load time)."""

    def __init__(self, config: BigVGANConfig = BIGVGAN_V1_16K):
        super().__init__()
        c = self.config = config
        if c.activation not in ("snake", "snakebeta"):
            raise ValueError(f"unknown BigVGAN activation {c.activation!r}")
        if c.resblock not in ("1", "2"):
            raise ValueError(f"unknown BigVGAN resblock {c.resblock!r}")
        with_beta = c.activation == "snakebeta"
        block = AMPBlock1 if c.resblock == "1" else AMPBlock2
        self.num_kernels = len(c.resblock_kernel_sizes)
        ch = c.upsample_initial_channel
        self.conv_pre = nn.Conv1d(c.num_mels, ch, 7, padding=3)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for i, (rate, kernel) in enumerate(zip(c.upsample_rates, c.upsample_kernel_sizes)):
            ch_in, ch = ch, c.upsample_initial_channel // 2 ** (i + 1)
            up = nn.ConvTranspose1d(ch_in, ch, kernel, rate, padding=(kernel - rate) // 2)
            self.ups.append(nn.ModuleList([up]))  # nested, as in the official key layout "ups.{i}.0"
            for k, d in zip(c.resblock_kernel_sizes, c.resblock_dilation_sizes):
                self.resblocks.append(block(ch, k, tuple(d), with_beta, c.snake_logscale))
        self.activation_post = AntiAliasedActivation(ch, with_beta, c.snake_logscale)
        self.conv_post = nn.Conv1d(ch, 1, 7, padding=3, bias=c.use_bias_at_final)

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    def forward(self, mel: torch.Tensor, progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """The first level (widest) runs on (B, C, T), where the convolutions are already at the matmul peak; the
        next ones on channels-last frames (B, C, 1, T) (see `avflow.codecs.bigvgan_blocks`). `progress(levels done,
        levels)` after every upsampling level (with its residual blocks), for a progress bar: a window's decoding
        takes seconds on a CPU."""
        x = self.conv_pre(mel)  # (B, C, frames)
        for i, up in enumerate(self.ups):
            if i < 2:
                x = up[0](x)  # (B, C / 2, T * rate)
                x = to_frames(x) if i == 1 else x
            else:
                x = conv_transpose_frames(up[0], x)  # (B, C / 2, 1, T * rate)
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            x = sum(block(x) for block in blocks) / self.num_kernels
            if progress is not None:
                progress(i + 1, len(self.ups))
        x = conv_frames(self.conv_post, self.activation_post(x))[:, :, 0]  # (B, 1, frames * hop)
        return torch.tanh(x) if self.config.use_tanh_at_final else x.clamp(-1.0, 1.0)

    def compile_activations(self) -> BigVGAN:
        """Run every anti-aliased activation as one compiled kernel in float32 inference
        (`avflow.codecs.fused_activation`; compiled at the first call, needs a C++ compiler on the CPU)."""
        fused = compiled_anti_aliased_snake()
        for module in self.modules():
            if isinstance(module, AntiAliasedActivation):
                module.fused = fused
        return self

    def load_weights(self, state_dict: Mapping[str, torch.Tensor], source: str = "BigVGAN weights") -> BigVGAN:
        """Load an official generator state dict (weight_g/weight_v, parametrizations or plain weights)."""
        if "generator" in state_dict and isinstance(state_dict["generator"], Mapping):
            state_dict = state_dict["generator"]
        load_strict(self, fold_weight_norm(state_dict, source), source, optional=FILTER_BUFFERS)
        return self

    @classmethod
    def from_file(cls, path: str | Path, config: BigVGANConfig) -> BigVGAN:
        """Load `best_netG.pt` / `bigvgan_generator.pt` ({"generator": state_dict}) or a safetensors file."""
        return cls(config).load_weights(read_state_dict(path, subkey="generator"), source=str(path))
