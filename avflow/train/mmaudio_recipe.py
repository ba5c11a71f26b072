"""The MMAudio training recipe: video-audio + audio-text mixtures from feature caches, learned empty conditions for
missing modalities, independent CFG dropout per condition, logit-normal timesteps; official-layout export."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from torch.utils.data import Dataset

from avflow.data.cache import FeatureCache
from avflow.errors import ConfigError
from avflow.flow.loss import flow_matching_loss, noised_streams
from avflow.flow.timesteps import TimestepSampler
from avflow.models.mmaudio import MMAudio, build_mmaudio, load_official_state_dict
from avflow.models.mmaudio_config import variant_config

# ----------------------------------------------------------------------------------------------------------------
# Model


@dataclass(frozen=True, kw_only=True)
class MMAudioModelConfig:
    variant: str = "small_16k"  # a name in avflow.models.mmaudio_config.CONFIGS
    overrides: dict[str, int | float | bool] = field(default_factory=dict)  # MMAudioConfig fields (tiny test nets)
    init: str | None = None  # official-layout checkpoint (.pth / .safetensors) to fine-tune from

    def __post_init__(self):
        if self.init is not None and not Path(self.init).is_file():
            raise ConfigError(f"init: checkpoint not found: {self.init}")


def build_model(args: MMAudioModelConfig) -> MMAudio:
    """The network, loaded strictly from `init` when given; fresh networks get latent statistics mean 0, std 1."""
    try:
        config = variant_config(args.variant, args.overrides)
    except ConfigError as exc:
        raise ConfigError(f"model.args: {exc}") from None
    model = build_mmaudio(config)
    if args.init is not None:
        load_official_state_dict(model, args.init)
    else:
        with torch.no_grad():
            model.latent_mean.zero_()
            model.latent_std.fill_(1.0)
    return model


def export_official(model: MMAudio, path: str | Path) -> tuple[Path, Path]:
    """Write `path.pth` (torch.save of the official keys) and `path.safetensors`; both load strictly with
    `load_official_state_dict` and with the official code's `load_weights`."""
    from avflow.weights import atomic_write, save_safetensors

    path = Path(path)
    base = path.with_suffix("") if path.suffix in (".pth", ".safetensors") else path
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    pth, st = base.with_suffix(".pth"), base.with_suffix(".safetensors")
    atomic_write(pth, lambda f: torch.save(state, f))
    save_safetensors(state, st)
    return pth, st


# ----------------------------------------------------------------------------------------------------------------
# Data: a weighted mixture of feature caches


@dataclass
class MixtureConfig:
    sources: dict[str, float]  # cache folder -> sampling weight (e.g. VGGSound 1.0, AudioCaps 0.5)
    size: int = 10000  # samples per epoch
    seed: int = 0
    checksum: str | None = None  # expected weights checksum of every cache (None = not checked)

    def __post_init__(self):
        if not self.sources:
            raise ConfigError("sources: needs at least one cache folder")
        for folder, w in self.sources.items():
            if not Path(folder).is_dir():
                raise ConfigError(f"sources: cache folder not found: {folder}")
            if not w > 0:
                raise ConfigError(f"sources: weight of {folder} must be > 0, got {w}")


class MMAudioMixture(Dataset):
    """Item i picks a source with probability ∝ weight and a clip in it, both fixed by (seed, i).

    Missing conditions (no video in audio-text sets, no caption) are zero tensors of the right shape with
    `has_video` / `has_text` = 0, so the recipe swaps in the learned empty conditions.
    """

    def __init__(self, config: MixtureConfig):
        self.config = config
        self.caches = [FeatureCache(f, config.checksum) for f in config.sources]
        for c in self.caches:
            if not len(c):
                raise ConfigError(f"{c.folder}: feature cache is empty")
        self.weights = torch.tensor(list(config.sources.values()), dtype=torch.float64)
        # every stream of every clip (shard headers: no tensor read), not the first clip's: a clip without video
        # features gets empty ones, and clips whose shapes differ are a one-line error now, not a failed step later
        self.shapes: dict[str, tuple[int, ...]] = {}
        where: dict[str, str] = {}
        for c in self.caches:
            for k, shape in c.streams.items():
                if k not in self.shapes:
                    self.shapes[k], where[k] = shape, f"clip {c.example[k]!r} of {c.folder}"
                elif self.shapes[k] != shape:
                    raise ConfigError(
                        f"data.args.sources: stream {k!r} of clip {c.example[k]!r} of {c.folder} has shape {shape}, "
                        f"of {where[k]} {self.shapes[k]} (caches built with another --duration or --mode?)"
                    )
        if "audio" not in self.shapes:
            raise ConfigError("data.args.sources: no cache has an `audio` latent stream")

    def __len__(self) -> int:
        return self.config.size

    def source_of(self, i: int) -> tuple[int, int]:
        from avflow.train.datasets import sample_seed

        g = torch.Generator().manual_seed(sample_seed(self.config.seed, -1, i))
        s = int(torch.multinomial(self.weights, 1, generator=g))
        return s, int(torch.randint(len(self.caches[s]), (1,), generator=g))

    def __getitem__(self, i: int) -> dict:
        s, j = self.source_of(i)
        item = self.caches[s].load(self.caches[s].ids[j])
        cond = {k: item.get(k, torch.zeros(self.shapes[k])) for k in ("clip_f", "sync_f", "text_f") if k in self.shapes}
        if "audio_std" in self.shapes:  # VAE posterior std; 0 where a source has none (its latent is the mean)
            cond["audio_std"] = item.get("audio_std", torch.zeros(self.shapes["audio"]))
        cond["has_video"] = torch.tensor(float("clip_f" in item and "sync_f" in item))
        cond["has_text"] = torch.tensor(float("text_f" in item))
        return {"streams": {"audio": item["audio"]}, "cond": cond}


# ----------------------------------------------------------------------------------------------------------------
# Task


@dataclass(frozen=True, kw_only=True)
class MMAudioRecipeConfig:
    timesteps: Literal["uniform", "logit_normal", "shifted"] = "logit_normal"
    logit_mean: float = 0.0
    logit_scale: float = 1.0
    shift: float = 1.0
    sigma_min: float = 0.0
    clip_dropout: float = 0.1  # each condition is replaced by its learned empty feature independently
    sync_dropout: float = 0.1
    text_dropout: float = 0.1
    normalize_latents: bool = True  # train on (latent - latent_mean) / latent_std, as MMAudio
    sample_posterior: bool = True  # latent = mean + std * N(0, 1) when the cache has `audio_std` (as MMAudio)

    def __post_init__(self):
        for name in ("clip_dropout", "sync_dropout", "text_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name}: must be in [0, 1], got {getattr(self, name)}")


DROPPED = ("clip", "sync", "text")


class MMAudioRecipe:
    """Flow matching on the `audio` latent with per-condition empty features; randomness per sample seed."""

    def __init__(self, config: MMAudioRecipeConfig):
        self.config = config
        self.timesteps = TimestepSampler(config.timesteps, config.logit_mean, config.logit_scale, config.shift)
        self.rates = torch.tensor([config.clip_dropout, config.sync_dropout, config.text_dropout])

    def prepare(self, batch: dict, device: torch.device) -> dict:
        audio = batch["streams"]["audio"]
        cond = batch["cond"]
        posterior = self.config.sample_posterior and "audio_std" in cond
        noise, t, drop, eps = [], [], [], []
        for seed in batch["seed"].tolist():
            g = torch.Generator().manual_seed(seed)
            noise.append(torch.randn(audio.shape[1:], generator=g, dtype=audio.dtype))
            t.append(self.timesteps(1, generator=g))
            drop.append(torch.rand(3, generator=g) < self.rates)
            if posterior:
                eps.append(torch.randn(audio.shape[1:], generator=g, dtype=audio.dtype))
        drop = torch.stack(drop)  # (B, 3) clip, sync, text
        if posterior:
            audio = audio + cond["audio_std"] * torch.stack(eps)  # (B, N, C)
        b = audio.shape[0]
        has_video = cond.get("has_video", torch.ones(b)).bool()
        has_text = cond.get("has_text", torch.ones(b)).bool()
        missing = torch.stack([~has_video, ~has_video, ~has_text], dim=1)
        return {
            "streams": {"audio": audio.to(device, non_blocking=True)},
            "cond": {k: cond[k].to(device, non_blocking=True) for k in ("clip_f", "sync_f", "text_f") if k in cond},
            "noise": {"audio": torch.stack(noise).to(device)},
            "t": {"audio": torch.cat(t).to(device)},
            "drop": {name: (drop[:, i] | missing[:, i]).to(device) for i, name in enumerate(DROPPED)},
            "cfg_drop": {name: drop[:, i].to(device) for i, name in enumerate(DROPPED)},  # dropout only (stats)
        }

    def loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        net: MMAudio = model
        x1 = batch["streams"]["audio"]
        if self.config.normalize_latents:
            x1 = net.normalize(x1)
        xt, target, mask = noised_streams({"audio": x1}, batch["t"], batch["noise"], self.config.sigma_min)
        c, d, b = batch["cond"], batch["drop"], x1.shape[0]
        empty_clip = net.empty_clip_feat.expand(net.clip_seq_len, -1)
        empty_sync = net.empty_sync_feat.expand(net.sync_seq_len, -1)
        # A condition no source provides is the learned empty one for every sample.
        clip_f = _where_batch(d["clip"], empty_clip, c.get("clip_f", empty_clip.expand(b, -1, -1)))  # (B, Nc, Dc)
        sync_f = _where_batch(d["sync"], empty_sync, c.get("sync_f", empty_sync.expand(b, -1, -1)))  # (B, Ns, Ds)
        text_f = _where_batch(
            d["text"], net.empty_string_feat, c.get("text_f", net.empty_string_feat.expand(b, -1, -1))
        )
        cond = net.preprocess_conditions(clip_f, sync_f, text_f)
        pred = net.velocity(xt, batch["t"], cond)
        return flow_matching_loss(pred["audio"], target["audio"], mask["audio"]).mean()


def _where_batch(mask: torch.Tensor, empty: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """empty (broadcast over the batch) where mask (B,) else x."""
    return torch.where(mask.view(-1, *([1] * (x.ndim - 1))), empty.to(x.dtype).expand_as(x), x)


def binomial_tolerance(n: int, p: float, sigmas: float = 4.0) -> float:
    """Half-width of a `sigmas`-sigma interval of a rate measured over n Bernoulli(p) draws."""
    return sigmas * math.sqrt(p * (1 - p) / n)
