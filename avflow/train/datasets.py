"""Map-style training datasets: synthetic class-conditional streams and stacked tensors from a safetensors file.

Items are `{"streams": {name: Tensor}, "cond": {name: Tensor}}`; the trainer adds a per-sample `seed`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from avflow.config import data_path
from avflow.errors import ConfigError


@dataclass
class SyntheticConfig:
    size: int = 256
    streams: dict[str, list[int]] = field(default_factory=lambda: {"audio": [8, 4], "video": [4, 6]})  # (N, C)
    num_classes: int = 4
    noise: float = 0.1
    seed: int = 0

    def __post_init__(self):
        if self.size < 1:
            raise ConfigError(f"size: must be >= 1, got {self.size}")


class SyntheticStreams(Dataset):
    """Sample i has label i % num_classes and streams = class mean + `noise` * N(0, 1), all fixed by `seed`."""

    def __init__(self, config: SyntheticConfig):
        self.config = config
        g = torch.Generator().manual_seed(config.seed)
        self.labels = torch.arange(config.size) % config.num_classes
        self.streams = {}
        for s, shape in config.streams.items():
            means = torch.randn(config.num_classes, *shape, generator=g)
            self.streams[s] = means[self.labels] + config.noise * torch.randn(config.size, *shape, generator=g)

    def __len__(self) -> int:
        return self.config.size

    def __getitem__(self, i: int) -> dict:
        return {"streams": {s: x[i] for s, x in self.streams.items()}, "cond": {"label": self.labels[i]}}


@dataclass
class TensorFileConfig:
    file: str = data_path(kind="file")  # safetensors with `streams.<name>` and `cond.<name>`, first dim = sample


class TensorFile(Dataset):
    """Stacked samples held in one safetensors file (loaded into memory)."""

    def __init__(self, config: TensorFileConfig):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(config.file)
        except (SafetensorError, OSError) as exc:
            raise ConfigError(f"{config.file}: cannot read safetensors: {exc}") from None
        self.streams = {k.removeprefix("streams."): v for k, v in tensors.items() if k.startswith("streams.")}
        self.cond = {k.removeprefix("cond."): v for k, v in tensors.items() if k.startswith("cond.")}
        sizes = {v.shape[0] for v in [*self.streams.values(), *self.cond.values()]}
        if not self.streams or len(sizes) != 1:
            raise ConfigError(f"{config.file}: needs `streams.*` tensors with one common first dimension, got {sizes}")
        self.size = sizes.pop()

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict:
        return {"streams": {s: x[i] for s, x in self.streams.items()}, "cond": {k: v[i] for k, v in self.cond.items()}}


class SeededDataset(Dataset):
    """Wraps a dataset indexed by `(index, epoch)` and adds a per-sample `seed` for the task's noise and timesteps.

    The seed depends only on (base seed, epoch, index), so results do not depend on the number of processes.
    A dataset whose items depend on the epoch (a mixture that visits every clip once before any repeats) has
    `item_at_epoch(index, epoch) -> item`, which is then used instead of `dataset[index]`.
    """

    def __init__(self, dataset: Dataset, base_seed: int):
        self.dataset = dataset
        self.base_seed = base_seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, epoch = key
        at_epoch = getattr(self.dataset, "item_at_epoch", None)
        item = dict(at_epoch(index, epoch) if at_epoch is not None else self.dataset[index])
        item["seed"] = sample_seed(self.base_seed, epoch, index)
        return item


def sample_seed(base: int, epoch: int, index: int) -> int:
    """A 63-bit seed mixing (base, epoch, index) with splitmix64."""
    x = (base * 0x9E3779B97F4A7C15 + (epoch + 1) * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) % (1 << 64)
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) % (1 << 64)
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) % (1 << 64)
    return (x ^ (x >> 31)) >> 1


@dataclass(frozen=True, kw_only=True)
class WorldClipsConfig:
    root: str = data_path(kind="dir")  # a world dataset folder (`avflow world make --out`)
    split: str = "train"
    streams: tuple[str, ...] = ("frames", "audio")  # frames: (T, H, W, 3) uint8; audio: (2, samples) float32
    max_clips: int | None = None  # the first clips of the manifest only

    def __post_init__(self):
        if self.split not in ("train", "val", "test"):
            raise ConfigError(f"split: must be train, val or test, got {self.split!r}")
        if not self.streams or set(self.streams) - {"frames", "audio"}:
            raise ConfigError(f"streams: choose from frames, audio, got {list(self.streams)}")
        if self.max_clips is not None and self.max_clips < 1:
            raise ConfigError(f"max_clips: must be >= 1, got {self.max_clips}")


def _same_shapes(shapes: list[tuple], files: list[str], what: str) -> None:
    """A one-line ConfigError naming the first file whose `what` differs in shape from most clips' (a clip cut
    short, or one made with other settings), before they are stacked."""
    common = max(set(shapes), key=shapes.count)
    odd = next((i for i, shape in enumerate(shapes) if shape != common), None)
    if odd is not None:
        raise ConfigError(f"{files[odd]}: {what} of shape {tuple(shapes[odd])}, the other clips' "
                          f"{tuple(common)} (cut short, or made with other settings)")  # fmt: skip


class WorldClips(Dataset):
    """Raw frames and/or binaural audio of a world split, held in memory (codec training)."""

    def __init__(self, cfg: WorldClipsConfig):
        from avflow.world.dataset import load_clip, read_manifest

        rows = read_manifest(cfg.root, cfg.split)[: cfg.max_clips]
        if not rows:
            raise ConfigError(f"root: {cfg.root}/{cfg.split} has no clips")
        stems = [f"{cfg.root}/{cfg.split}/{row['id']}" for row in rows]
        clips = [load_clip(stem) for stem in stems]
        if "frames" in cfg.streams:
            _same_shapes([c.frames.shape for c in clips], [stem + ".npz" for stem in stems], "frames")
        if "audio" in cfg.streams:
            _same_shapes([c.audio.shape for c in clips], [stem + ".wav" for stem in stems], "audio")
        self.streams = {}
        if "frames" in cfg.streams:
            self.streams["frames"] = torch.from_numpy(np.stack([c.frames for c in clips]))  # (N, T, H, W, 3)
        if "audio" in cfg.streams:
            self.streams["audio"] = torch.from_numpy(np.stack([c.audio for c in clips]))  # (N, 2, samples)

    def __len__(self) -> int:
        return next(iter(self.streams.values())).shape[0]

    def __getitem__(self, i: int) -> dict:
        return {"streams": {s: x[i] for s, x in self.streams.items()}, "cond": {}}
