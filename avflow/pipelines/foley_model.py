"""Foley model: MMAudio network + audio VAE + BigVGAN, from conditioning features to a waveform."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from avflow.codecs.audio_vae import AudioVAE, AudioVAEConfig
from avflow.codecs.bigvgan import BigVGAN, BigVGANConfig
from avflow.errors import ConfigError
from avflow.flow.sampling import SamplingConfig, check_seed, sample_with
from avflow.models.mmaudio import MMAudio
from avflow.models.mmaudio_config import SAMPLING, MMAudioConfig
from avflow.nn.mmaudio_blocks import winograd_convolutions
from avflow.pipelines.foley_windows import DEFAULT_SEED
from avflow.pipelines.inputs import MAX_SOUND_S
from avflow.pipelines.winograd_store import kept_winograd_choices
from avflow.precision import autocast_weights


def sample_latents(
    network: MMAudio,
    x0: torch.Tensor,
    cond: dict[str, torch.Tensor],
    sampling: SamplingConfig = SAMPLING,
    *,
    negative_text_f: torch.Tensor | None = None,
    generator=None,
    batched: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[torch.Tensor, int]:
    """(normalized latents (B, N, C), NFE) from noise x0 under `cond` from `network.preprocess_conditions`.

    The negative branches use the learned empty conditions, with `negative_text_f` (B, Nt, text_dim) in place of
    the empty string when given; `generator` may wrap the network's `velocity` (e.g. for window overlaps);
    `progress(done, steps)` hears of every solver step. The network's kernel-3 convolutions run as Winograd F(4, 3)
    meanwhile where that measured faster on this machine (`winograd_convolutions`; the choices kept per machine by
    `kept_winograd_choices`). Under autocast the network's weights are cast once for the call (`autocast_weights`).
    """
    negative = network.empty_conditions(x0.shape[0], negative_text_f) if sampling.guided else None
    model = generator if generator is not None else network
    with kept_winograd_choices(), winograd_convolutions(network), autocast_weights(network):
        result = sample_with(
            sampling, model, {"audio": x0}, cond, negative=negative, batched=batched, progress=progress
        )
    return result.streams["audio"], result.nfe


def component_problems(network: MMAudioConfig, vae: AudioVAEConfig, vocoder: BigVGANConfig) -> list[str]:
    """Where the configs of a foley model's network, VAE and vocoder do not fit together, in words (read off the
    configs alone, so a spec is checked before any weights are read)."""
    problems = []
    if vae.embed_dim != network.latent_dim:
        problems.append(f"VAE latents have {vae.embed_dim} channels, the network {network.latent_dim}")
    if vae.data_dim != vocoder.num_mels:
        problems.append(f"VAE decodes {vae.data_dim} mel bins, the vocoder takes {vocoder.num_mels}")
    if vocoder.hop_length != network.hop_length:
        problems.append(f"vocoder hop {vocoder.hop_length} != network hop {network.hop_length}")
    if vocoder.sample_rate != network.sample_rate:
        problems.append(f"vocoder rate {vocoder.sample_rate} Hz != network rate {network.sample_rate} Hz")
    return problems


def check_components(
    network: MMAudioConfig, vae: AudioVAEConfig, vocoder: BigVGANConfig, where: str | None = None
) -> None:
    """A one-line ConfigError (naming `where` the configs came from, e.g. the model config .json) unless the
    network's, VAE's and vocoder's configs fit together (`component_problems`)."""
    problems = component_problems(network, vae, vocoder)
    if problems:
        prefix = f"{where}: " if where else ""
        raise ConfigError(prefix + "foley model components do not fit: " + "; ".join(problems))


class FoleyModel(nn.Module):
    """Turns CLIP / sync / text features (any may be None) into mono audio (B, samples) at `sample_rate`."""

    def __init__(self, network: MMAudio, vae: AudioVAE, vocoder: BigVGAN, sampling: SamplingConfig = SAMPLING) -> None:
        super().__init__()
        check_components(network.config, vae.config, vocoder.config)
        self.network, self.vae, self.vocoder = network, vae, vocoder
        self.sampling = sampling  # used when a call passes none

    @property
    def sample_rate(self) -> int:
        return self.network.config.sample_rate

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def num_samples(self, duration: float) -> int:
        return round(duration * self.sample_rate)

    def _features(self, name: str, feats: torch.Tensor | None, empty: torch.Tensor, length: int, batch: int):
        """Given features checked against (batch, length, dim), or the learned empty ones expanded."""
        if feats is None:
            return empty.to(self.device).reshape(1, -1, empty.shape[-1]).expand(batch, length, -1)
        if feats.ndim != 3 or feats.shape[0] != batch or feats.shape[1:] != (length, empty.shape[-1]):
            raise ConfigError(
                f"{name} features must be ({batch}, {length}, {empty.shape[-1]}) for this duration, "
                f"got {tuple(feats.shape)}"
            )
        if not bool(torch.isfinite(feats).all()):
            raise ConfigError(f"{name} features hold NaN or infinite values")
        return feats.to(self.device, empty.dtype)

    @staticmethod
    def _batch(batch: int | None, features: dict[str, torch.Tensor | None]) -> int:
        """The batch size: `batch`, else the given features' (each a (B, tokens, dim) tensor), else 1; at least 1
        and the same for every given feature, else a one-line ConfigError."""
        for name, feats in features.items():
            if feats is not None and (not isinstance(feats, torch.Tensor) or feats.ndim != 3):
                got = f"shape {tuple(feats.shape)}" if isinstance(feats, torch.Tensor) else type(feats).__name__
                raise ConfigError(f"{name} features must be a tensor (B, tokens, dim), got {got}")
        given = [f.shape[0] for f in features.values() if f is not None]
        batch = batch if batch is not None else (given[0] if given else 1)
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ConfigError(f"batch must be a whole number >= 1, got {batch!r}")
        if any(b != batch for b in given):
            raise ConfigError(f"conditioning features disagree on the batch size: {given} (batch={batch})")
        return batch

    @torch.no_grad()
    def generate(
        self,
        duration: float,
        clip_f: torch.Tensor | None = None,
        sync_f: torch.Tensor | None = None,
        text_f: torch.Tensor | None = None,
        *,
        negative_text_f: torch.Tensor | None = None,
        batch: int | None = None,
        seed: int = DEFAULT_SEED,
        sampling: SamplingConfig | None = None,
    ) -> torch.Tensor:
        """Waveform (B, round(duration * sample_rate)) in [-1, 1]; the same seed gives the same audio (default:
        `DEFAULT_SEED`, the foley commands' --seed).

        clip_f (B, 8 fps frames, clip_dim), sync_f (B, sync tokens, sync_dim), text_f (B, tokens, text_dim);
        a missing one is replaced by the network's learned empty features (text only: clip_f = sync_f = None).
        Bad features (shape, NaN), batch, seed or duration are one-line ConfigErrors before sampling.
        """
        seed = check_seed(seed)
        if duration > MAX_SOUND_S:  # one window of a typo's 1e9 s would allocate its noise before any check
            raise ConfigError(f"duration must be at most {MAX_SOUND_S:g} s (one hour), got {duration:g}; "
                              "FoleyPipeline windows long clips")  # fmt: skip
        features = {"CLIP": clip_f, "sync": sync_f, "text": text_f, "negative text": negative_text_f}
        batch = self._batch(batch, features)
        lengths = self.network.set_duration(duration)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        shape = (batch, lengths.latent, self.network.config.latent_dim)
        x0 = torch.randn(shape, generator=generator, device=self.device, dtype=self.network.latent_mean.dtype)
        latents = self.sample(x0, clip_f, sync_f, text_f, negative_text_f=negative_text_f, sampling=sampling)
        return self.decode(latents, self.num_samples(duration))

    @torch.no_grad()
    def sample(
        self,
        x0: torch.Tensor,
        clip_f: torch.Tensor | None = None,
        sync_f: torch.Tensor | None = None,
        text_f: torch.Tensor | None = None,
        *,
        negative_text_f: torch.Tensor | None = None,
        sampling: SamplingConfig | None = None,
    ) -> torch.Tensor:
        """Noise x0 (B, N, C) -> unnormalized latents (B, N, C) at the network's current sequence lengths."""
        latents = self.sample_normalized(x0, clip_f, sync_f, text_f, negative_text_f=negative_text_f, sampling=sampling)
        return self.network.unnormalize(latents)

    @torch.no_grad()
    def sample_normalized(
        self,
        x0: torch.Tensor,
        clip_f: torch.Tensor | None = None,
        sync_f: torch.Tensor | None = None,
        text_f: torch.Tensor | None = None,
        *,
        negative_text_f: torch.Tensor | None = None,
        sampling: SamplingConfig | None = None,
        generator=None,
        progress: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Normalized latents (B, N, C) sampled with `sampling` (default: the model's); `generator` may wrap the
        network's `velocity` (e.g. for window overlaps). The negative branches use the learned empty conditions, with
        `negative_text_f` in place of the empty string when given; `progress(done, steps)` after every step."""
        sampling = sampling or self.sampling
        net, batch = self.network, x0.shape[0]
        text_len = net.config.text_seq_len
        clip_f = self._features("CLIP", clip_f, net.empty_clip_feat, net.clip_seq_len, batch)
        sync_f = self._features("sync", sync_f, net.empty_sync_feat, net.sync_seq_len, batch)
        text_f = self._features("text", text_f, net.empty_string_feat, text_len, batch)
        if negative_text_f is not None:
            negative_text_f = self._features("negative text", negative_text_f, net.empty_string_feat, text_len, batch)
        cond = net.preprocess_conditions(clip_f, sync_f, text_f)  # computed once, reused at every step
        return sample_latents(
            net, x0, cond, sampling, negative_text_f=negative_text_f, generator=generator, progress=progress
        )[0]

    @torch.no_grad()
    def decode(
        self, latents: torch.Tensor, num_samples: int | None = None, progress: Callable[[int, int], None] | None = None
    ) -> torch.Tensor:
        """Unnormalized latents (B, N, C) -> waveform (B, num_samples), trimmed or zero-padded. `progress(done,
        total)` after each of the vocoder's upsampling levels."""
        mel = self.vae.decode(latents.transpose(1, 2))  # (B, n_mels, 2 N)
        wav = (self.vocoder(mel) if progress is None else self.vocoder(mel, progress=progress))[:, 0]  # (B, 2 N hop)
        if num_samples is None:
            return wav
        if wav.shape[-1] < num_samples:
            wav = F.pad(wav, (0, num_samples - wav.shape[-1]))
        return wav[:, :num_samples]
