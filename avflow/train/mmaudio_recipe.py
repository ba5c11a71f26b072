"""The MMAudio training recipe: video-audio + audio-text mixtures from feature caches (every clip of a source once
before any repeats), learned empty conditions for missing modalities, CFG dropout of the video (CLIP and sync
together) and of the text, logit-normal timesteps, latent statistics from the data for networks trained from
scratch; official-layout export."""

from __future__ import annotations

import json
import math
from bisect import bisect_right
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from torch.utils.data import Dataset

from avflow.codecs.mel import MEL_CONFIGS
from avflow.data.cache import MANIFEST, FeatureCache
from avflow.errors import ConfigError, MissingPathError, OutputError
from avflow.flow.loss import flow_matching_loss, noised_streams
from avflow.flow.timesteps import TimestepSampler
from avflow.models.mmaudio import MMAudio, build_mmaudio, load_official_state_dict
from avflow.models.mmaudio_config import MMAudioConfig, sequence_lengths, variant_config

# ----------------------------------------------------------------------------------------------------------------
# Model


@dataclass(frozen=True, kw_only=True)
class MMAudioModelConfig:
    variant: str = "small_16k"  # a name in avflow.models.mmaudio_config.CONFIGS
    overrides: dict[str, int | float | bool] = field(default_factory=dict)  # MMAudioConfig fields (tiny test nets)
    init: str | None = None  # official-layout checkpoint (.pth / .safetensors) to fine-tune from
    # The per-channel latent_mean / latent_std the network normalizes its latents with. auto: the init checkpoint's
    # (kept bit-exact); a network without init needs one of: a feature cache folder (mean and std over its clips'
    # `audio` latents, as MMAudio's compute_latent_stats on its first video dataset), a weights file holding
    # latent_mean / latent_std, or none (mean 0, std 1: normalize_latents then does nothing).
    latent_stats: str = "auto"

    def __post_init__(self):
        if self.init is not None and not Path(self.init).is_file():
            raise MissingPathError(f"init: checkpoint not found: {self.init}")
        if self.latent_stats not in ("auto", "none"):
            if self.init is not None:
                raise ConfigError(f"latent_stats: {self.latent_stats!r} with init: a fine-tune keeps the "
                                  "checkpoint's statistics (its network was trained with them); leave latent_stats "
                                  "auto")  # fmt: skip
            if not Path(self.latent_stats).exists():
                raise MissingPathError(
                    f"latent_stats: no such feature cache folder or weights file: {self.latent_stats}"
                )


def build_model(args: MMAudioModelConfig) -> MMAudio:
    """The network, loaded strictly from `init` when given (its latent statistics with it); a fresh network gets
    its latent statistics from `latent_stats`."""
    try:
        config = variant_config(args.variant, args.overrides)
    except ConfigError as exc:
        raise ConfigError(f"model.args: {exc}") from None
    model = build_mmaudio(config)
    if args.init is not None:
        load_official_state_dict(model, args.init)
        return model
    if args.latent_stats == "auto":
        raise ConfigError(
            "model.args.latent_stats: a network trained from scratch (no model.args.init) needs its latents' "
            "statistics: name the first video-audio feature cache of data.train.args.sources (e.g. "
            "model.args.latent_stats=caches/vggsound_train: per-channel mean and std of its latents, as MMAudio), "
            "a weights file holding latent_mean / latent_std, or none (mean 0, std 1)"
        )
    if args.latent_stats == "none":  # mean 0, std 1 (build_mmaudio leaves NaN); also on the meta device
        with torch.no_grad():
            model.latent_mean.fill_(0.0)
            model.latent_std.fill_(1.0)
        return model
    if Path(args.latent_stats).is_dir():
        mean, std = latent_stats_of_cache(args.latent_stats)
    else:
        mean, std = _latent_stats_of_file(args.latent_stats)
    where = f"model.args.latent_stats {args.latent_stats}"
    if mean.numel() != config.latent_dim or std.numel() != config.latent_dim:
        raise ConfigError(f"{where}: statistics of {mean.numel()} channels, the network's latents have "
                          f"{config.latent_dim}")  # fmt: skip
    if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
        raise ConfigError(f"{where}: non-finite statistics or a std of 0 (a constant latent channel)")
    with torch.no_grad():
        model.latent_mean.copy_(mean.reshape(model.latent_mean.shape))
        model.latent_std.copy_(std.reshape(model.latent_std.shape))
    return model


def latent_stats_of_cache(folder: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (unbiased) std of the `audio` latents of every clip of a feature cache (MMAudio's
    `compute_latent_stats`: over clips and latent frames of the VAE means), accumulated in float64; float32."""
    cache = FeatureCache(folder)
    if "audio" not in cache.streams:
        raise ConfigError(f"model.args.latent_stats: {cache.folder}: no clip has an `audio` latent stream")
    total = total_sq = None
    count = 0
    for clip_id in cache.ids:
        latents = cache.load(clip_id).get("audio")
        if latents is None:  # an audio-text or video-only clip of a mixed cache
            continue
        x = latents.double().reshape(-1, cache.streams["audio"][-1])  # (N, C)
        total = x.sum(0) if total is None else total + x.sum(0)
        total_sq = x.square().sum(0) if total_sq is None else total_sq + x.square().sum(0)
        count += x.shape[0]
    if count < 2:
        raise ConfigError(f"model.args.latent_stats: {cache.folder}: too few latent frames for a std ({count})")
    mean = total / count
    var = (total_sq - count * mean.square()) / (count - 1)
    return mean.float(), var.clamp_min(0).sqrt().float()


def _latent_stats_of_file(path: str) -> tuple[torch.Tensor, torch.Tensor]:
    from avflow.weights import read_state_dict

    state = read_state_dict(path)
    if "latent_mean" not in state or "latent_std" not in state:
        raise ConfigError(f"model.args.latent_stats: {path}: holds no latent_mean / latent_std")
    return state["latent_mean"].float().flatten(), state["latent_std"].float().flatten()


def export_official(model: MMAudio, path: str | Path) -> tuple[Path, Path]:
    """Write `BASE.pth` (torch.save of the official keys) and `BASE.safetensors`; both load strictly with
    `load_official_state_dict` and with the official code's `load_weights`.

    `path` is the base name, its suffixes appended, so dots in it stay (`ft_sigma0.05` -> `ft_sigma0.05.pth`, not
    `ft_sigma0.pth`); a path ending in .pth or .safetensors names one of the pair (its base is the rest). Existing
    files of that name are replaced, each atomically (a reader sees the old file or the new one), as the other
    Python save helpers (`save_torch`, `save_safetensors`) do."""
    from avflow.weights import save_safetensors, save_torch

    path = Path(path)
    name = path.name[: -len(path.suffix)] if path.suffix in (".pth", ".safetensors") else path.name
    if not name or path.is_dir():
        raise OutputError(f"{path}: export_official takes a base file name (BASE.pth and BASE.safetensors are "
                          "written), not a folder")  # fmt: skip
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    pth, st = path.with_name(f"{name}.pth"), path.with_name(f"{name}.safetensors")
    save_torch(state, pth)
    save_safetensors(state, st)
    return pth, st


# ----------------------------------------------------------------------------------------------------------------
# Data: a weighted mixture of feature caches


@dataclass
class MixtureConfig:
    sources: dict[str, float]  # cache folder -> share of each epoch's items (e.g. VGGSound 1.0, AudioCaps 0.5)
    size: int = 10000  # items per epoch (split over the sources in proportion to their weights)
    seed: int = 0
    checksum: str | None = None  # expected weights checksum of every cache (None = not checked)

    def __post_init__(self):
        if not self.sources:
            raise ConfigError("sources: needs at least one cache folder")
        if self.size < 1:
            raise ConfigError(f"size: must be >= 1, got {self.size}")
        for folder, w in self.sources.items():
            if not Path(folder).is_dir():
                raise MissingPathError(f"sources: cache folder not found: {folder}")
            if not w > 0:
                raise ConfigError(f"sources: weight of {folder} must be > 0, got {w}")


def _extractor_of(cache: FeatureCache) -> str:
    """The extractor name a cache's manifest records ("" when unnamed, e.g. an older avflow's)."""
    return json.loads((cache.folder / MANIFEST).read_text()).get("extractor", "")


def build_differences(a: FeatureCache, b: FeatureCache) -> list[str]:
    """How cache b was built otherwise than cache a: encoder weights, extractor, extraction settings (mode,
    duration). An extractor or setting one of them does not record (an older avflow's manifest, a cache built from
    Python without settings) is unknown, not a difference."""
    found = []
    if a.checksum != b.checksum:
        found.append(f"encoder weights (checksum {a.checksum} vs {b.checksum})")
    ea, eb = _extractor_of(a), _extractor_of(b)
    if ea and eb and ea != eb:
        found.append(f"extractor {ea} vs {eb}")
    sa, sb = a.settings or {}, b.settings or {}
    found += [f"--{key} {sa[key]} vs {sb[key]}" for key in sorted(sa.keys() & sb.keys()) if sa[key] != sb[key]]
    return found


def check_same_build(caches: list[FeatureCache]) -> None:
    """A one-line ConfigError where a source was built with other encoder weights, extractor or settings than the
    first: its features would be another encoder's (or another duration's) mixed into one training set silently."""
    first = caches[0]
    for other in caches[1:]:
        found = build_differences(first, other)
        if found:
            raise ConfigError(
                f"data.args.sources: {first.folder} and {other.folder} were built with different {'; '.join(found)}: "
                f"a mixture needs caches of one build; rebuild {other.folder} like {first.folder} (avflow cache "
                "build ... --overwrite) or train on one of them"
            )


class MMAudioMixture(Dataset):
    """Each epoch, source s gets `shares[s]` of the `size` items (size x weight / total weight, rounded) and visits
    its clips in a fresh random order, every clip once before any repeats (`source_of`). With weight = repeats x
    clips and size = the sum, every clip is seen exactly `repeats` times an epoch, as MMAudio's shuffled
    concatenation of its datasets (VGGSound x 5).

    Missing conditions (no video in audio-text sets, no caption) are zero tensors of the right shape with
    `has_video` / `has_text` = 0, so the recipe swaps in the learned empty conditions.
    """

    def __init__(self, config: MixtureConfig):
        self.config = config
        self.caches = [FeatureCache(f, config.checksum) for f in config.sources]
        for c in self.caches:
            if not len(c):
                raise ConfigError(f"{c.folder}: feature cache is empty")
        check_same_build(self.caches)
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
        # items per epoch of each source: `size` split in proportion to the weights (largest remainders)
        exact = [config.size * w / sum(config.sources.values()) for w in config.sources.values()]
        self.shares = [math.floor(x) for x in exact]
        by_remainder = sorted(range(len(exact)), key=lambda s: (self.shares[s] - exact[s], s))
        for s in by_remainder[: config.size - sum(self.shares)]:
            self.shares[s] += 1
        self.starts = [sum(self.shares[:s]) for s in range(len(self.shares))]
        self._perms: tuple[int, dict[tuple, torch.Tensor]] = (-1, {})

    def __len__(self) -> int:
        return self.config.size

    def _perm(self, epoch: int, key: tuple[int, int], n: int) -> torch.Tensor:
        """randperm(n) seeded by (seed, key), kept while items of `epoch` are asked for."""
        from avflow.train.datasets import sample_seed

        cached_epoch, perms = self._perms
        if cached_epoch != epoch:
            perms = {}
            self._perms = (epoch, perms)
        if key not in perms:
            g = torch.Generator().manual_seed(sample_seed(self.config.seed, key[0], -1 - key[1]))
            perms[key] = torch.randperm(n, generator=g)
        return perms[key]

    def source_of(self, i: int, epoch: int = 0) -> tuple[int, int]:
        """(source, clip index) of item i in `epoch`.

        The epoch's items are dealt to the sources in a (seed, epoch) random order, `shares[s]` to source s; source
        s's k-th item of epoch e is position p = e * shares[s] + k of an endless sequence of permutations of its
        clips (permutation c = p // clips, seeded by (seed, c, s)): every clip once before any repeats, in a new
        order each time round, whatever the epoch boundaries. Fixed by (seed, epoch, i): a resume gets the same.
        """
        slot = int(self._perm(epoch, (epoch, 0), self.config.size)[i])
        s = bisect_right(self.starts, slot) - 1  # the last source starting at or before slot (shares may be 0)
        n = len(self.caches[s])
        cycle, r = divmod(epoch * self.shares[s] + slot - self.starts[s], n)
        return s, int(self._perm(epoch, (cycle, 1 + s), n)[r])

    def item_at_epoch(self, i: int, epoch: int) -> dict:
        """Item i of `epoch` (`SeededDataset` asks for items this way when a dataset has this method)."""
        s, j = self.source_of(i, epoch)
        item = self.caches[s].load(self.caches[s].ids[j])
        cond = {k: item.get(k, torch.zeros(self.shapes[k])) for k in ("clip_f", "sync_f", "text_f") if k in self.shapes}
        if "audio_std" in self.shapes:  # VAE posterior std; 0 where a source has none (its latent is the mean)
            cond["audio_std"] = item.get("audio_std", torch.zeros(self.shapes["audio"]))
        cond["has_video"] = torch.tensor(float("clip_f" in item and "sync_f" in item))
        cond["has_text"] = torch.tensor(float("text_f" in item))
        return {"streams": {"audio": item["audio"]}, "cond": cond}

    def __getitem__(self, i: int) -> dict:
        return self.item_at_epoch(i, 0)


# ----------------------------------------------------------------------------------------------------------------
# Data against the network: caches of another duration, mode or encoders are refused before the first step

# (stream, MMAudioConfig field of its length, what its frames are called)
LENGTHS = (("audio", "latent_seq_len", "latents"), ("clip_f", "clip_seq_len", "CLIP"),
           ("sync_f", "sync_seq_len", "sync frames"))  # fmt: skip


def network_duration(config: MMAudioConfig) -> float | None:
    """The clip duration the network's sequence lengths are MMAudio's for (8.0 s: 250, 64, 192 at 16 kHz), else
    None (lengths set by hand)."""
    duration = config.clip_seq_len / 8  # CLIP frames at 8 fps
    try:
        lengths = sequence_lengths(duration, config.sample_rate, config.hop_length)
    except ConfigError:
        return None
    ok = tuple(lengths) == (config.latent_seq_len, config.clip_seq_len, config.sync_seq_len)
    return duration if ok else None


def _mode_problem(config: MMAudioConfig, settings: dict, where: str) -> str | None:
    mode = settings.get("mode")
    if mode not in MEL_CONFIGS or MEL_CONFIGS[mode].sample_rate == config.sample_rate:
        return None
    net_mode = next((m for m, mel in MEL_CONFIGS.items() if mel.sample_rate == config.sample_rate), None)
    rebuild = f"--mode {net_mode}" if net_mode else "the network's mode"
    return (f"{where}: built with --mode {mode} ({MEL_CONFIGS[mode].sample_rate} Hz audio); the network takes "
            f"{config.sample_rate} Hz audio: rebuild the cache with {rebuild} or train a {mode} network "
            "(model.args.variant)")  # fmt: skip


def _length_problem(config: MMAudioConfig, streams: dict, settings: dict | None, where: str | None) -> str | None:
    have = {k: streams[k][0] for k, _, _ in LENGTHS if k in streams}
    if all(have[k] == getattr(config, field) for k, field, _ in LENGTHS if k in have):
        return None
    own = ", ".join(f"{have[k]} {label}" for k, _, label in LENGTHS if k in have)
    duration = (settings or {}).get("duration")
    if where is None:
        built = f"the training clips have {own} (a feature cache built with another --duration?)"
    elif duration is not None:
        built = f"{where}: built with --duration {duration} ({own})"
    else:
        built = f"{where}: its clips have {own}"
    net = (config.latent_seq_len, config.clip_seq_len, config.sync_seq_len)
    d = network_duration(config)
    trains = f"the network trains on {d} s {net}" if d is not None else f"the network's sequence lengths are {net}"
    rebuild = f"--duration {d:g}" if d is not None else "the network's duration"
    lengths = ", ".join(f"{field}: {have[k]}" for k, field, _ in LENGTHS if k in have)
    return (f"{built}; {trains}: rebuild the cache with {rebuild} or set the network's sequence lengths "
            f"(model.args.overrides {{{lengths}}})")  # fmt: skip


def fit_problem(
    config: MMAudioConfig, streams: dict[str, tuple[int, ...]], settings: dict | None = None, where: str | None = None
) -> str | None:
    """Why clips of these stream shapes (one clip's, no batch dim) cannot train the network of `config`, as one line
    (naming the cache `where` and its extraction `settings` when given), or None: a cache of another --mode,
    --duration or other encoders, said before the first step fails on tensor shapes."""
    problem = _mode_problem(config, settings or {}, where or "the training data")
    problem = problem or _length_problem(config, streams, settings, where)
    if problem:
        return problem
    want = {
        "audio": (config.latent_seq_len, config.latent_dim),
        "clip_f": (config.clip_seq_len, config.clip_dim),
        "sync_f": (config.sync_seq_len, config.sync_dim),
        "text_f": (config.text_seq_len, config.text_dim),
    }
    for k, shape in want.items():
        if k in streams and tuple(streams[k]) != shape:
            return (f"{where or 'the training data'}: stream {k!r} has shape {tuple(streams[k])} per clip, the "
                    f"network takes {shape}: features of other encoders (or --mode) than the network's")  # fmt: skip
    return None


def check_caches_fit(config: MMAudioConfig, caches: list[FeatureCache]) -> None:
    """A one-line ConfigError naming the first cache the network of `config` cannot train on (`fit_problem`)."""
    for cache in caches:
        problem = fit_problem(config, cache.streams, cache.settings, str(cache.folder))
        if problem:
            raise ConfigError(problem)


def _trained_config(net: MMAudio) -> MMAudioConfig:
    """The network's config with the sequence lengths it runs at now (`set_duration` may have changed them)."""
    lengths = {"latent_seq_len": net.latent_seq_len, "clip_seq_len": net.clip_seq_len,
               "sync_seq_len": net.sync_seq_len}  # fmt: skip
    same = all(getattr(net.config, k) == v for k, v in lengths.items())
    return net.config if same else replace(net.config, **lengths)


@torch.compiler.disable
def check_batch_fits(net: MMAudio, batch: dict) -> None:
    """A one-line ConfigError where a batch's features cannot train `net` (`fit_problem`), before a step fails on
    tensor shapes; outside torch.compile (plain Python on shapes)."""
    streams = {"audio": tuple(batch["streams"]["audio"].shape[1:])}
    streams.update({k: tuple(v.shape[1:]) for k, v in batch["cond"].items() if k in ("clip_f", "sync_f", "text_f")})
    problem = fit_problem(_trained_config(net), streams)
    if problem:
        raise ConfigError(problem)


# ----------------------------------------------------------------------------------------------------------------
# Task


@dataclass(frozen=True, kw_only=True)
class MMAudioRecipeConfig:
    timesteps: Literal["uniform", "logit_normal", "shifted"] = "logit_normal"
    logit_mean: float = 0.0
    logit_scale: float = 1.0
    shift: float = 1.0
    sigma_min: float = 0.0
    # CFG dropout: a dropped condition is replaced by the network's learned empty feature. video_dropout drops CLIP
    # and sync together (one draw per sample: MMAudio's null_video), text_dropout the text (its own draw, as MMAudio);
    # clip_dropout / sync_dropout add independent drops of one of them (0: MMAudio).
    video_dropout: float = 0.1
    text_dropout: float = 0.1
    clip_dropout: float = 0.0
    sync_dropout: float = 0.0
    normalize_latents: bool = True  # train on (latent - latent_mean) / latent_std, as MMAudio
    sample_posterior: bool = True  # latent = mean + std * N(0, 1) when the cache has `audio_std` (as MMAudio)

    def __post_init__(self):
        for name in ("video_dropout", "text_dropout", "clip_dropout", "sync_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name}: must be in [0, 1], got {getattr(self, name)}")


DROPPED = ("clip", "sync", "text")


class MMAudioRecipe:
    """Flow matching on the `audio` latent with per-condition empty features; randomness per sample seed."""

    leaves_parameters_unused = False  # dropped conditions are selected with torch.where: every parameter has a grad

    def __init__(self, config: MMAudioRecipeConfig):
        self.config = config
        self.timesteps = TimestepSampler(config.timesteps, config.logit_mean, config.logit_scale, config.shift)
        self.rates = torch.tensor([config.clip_dropout, config.sync_dropout, config.text_dropout])

    def prepare(self, batch: dict, device: torch.device) -> dict:
        audio = batch["streams"]["audio"]
        cond = batch["cond"]
        posterior = self.config.sample_posterior and "audio_std" in cond
        noise, t, drop, eps, video = [], [], [], [], []
        for seed in batch["seed"].tolist():
            g = torch.Generator().manual_seed(seed)
            noise.append(torch.randn(audio.shape[1:], generator=g, dtype=audio.dtype))
            t.append(self.timesteps(1, generator=g))
            drop.append(torch.rand(3, generator=g) < self.rates)
            if posterior:
                eps.append(torch.randn(audio.shape[1:], generator=g, dtype=audio.dtype))
            video.append(torch.rand((), generator=g) < self.config.video_dropout)  # last: the draws above unchanged
        drop = torch.stack(drop)  # (B, 3) clip, sync, text
        drop[:, :2] |= torch.stack(video)[:, None]  # CLIP and sync dropped together
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

    def check_data(self, model: nn.Module, data: Dataset) -> None:
        """A one-line ConfigError naming the first cache of `data` (an MMAudioMixture) that `model` cannot train on:
        another --duration, --mode or other encoders. For the trainer, once the model and the data are built;
        `loss` checks each batch's shapes too (without the cache's name)."""
        caches = getattr(data, "caches", None)
        if caches is not None:
            check_caches_fit(_trained_config(model), caches)

    def loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        net: MMAudio = model
        check_batch_fits(net, batch)
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
