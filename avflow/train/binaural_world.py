"""Training the binaural model on the procedural world: the dataset (streams and video conditions computed once in
memory), the PCA feature basis fit and the export of a trainer run to the shipped model file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from avflow.codecs.binaural_features import (
    FEATURES_FILE,
    SAMPLES_PER_TOKEN,
    BinauralFeatures,
    load_features,
    num_tokens,
)
from avflow.errors import ConfigError
from avflow.models.binaural import MODEL_FILE, video_conditions
from avflow.weights import load_strict, read_state_dict, save_safetensors


def clip_ids(root: str | Path, split: str, limit: int = 0) -> list[Path]:
    """Stems of the clips listed in root/split/manifest.jsonl."""
    manifest = Path(root) / split / "manifest.jsonl"
    if not manifest.is_file():
        raise ConfigError(f"{manifest}: no world manifest (make one with `avflow world make`)")
    stems = [Path(root) / split / json.loads(line)["id"] for line in manifest.read_text().splitlines() if line]
    return stems[:limit] if limit > 0 else stems


@dataclass(frozen=True, kw_only=True)
class BinauralWorldConfig:
    root: str = ""  # a world dataset folder (train/val/test with manifests)
    split: str = "train"
    limit: int = 0  # 0: all clips of the split
    features: str = ""  # PCA basis safetensors; empty: the shipped asset
    bins: int = 16


class BinauralWorld(Dataset):
    """World clips as streams left/right (N, 20) and conditions timing/spatial/video_on, computed once in memory."""

    def __init__(self, config: BinauralWorldConfig):
        if not config.root:
            raise ConfigError("data: binaural_world needs `root`, a world dataset folder")
        from avflow.world.dataset import load_clip

        codec = load_features(config.features or FEATURES_FILE)
        self.items = []
        for stem in clip_ids(config.root, config.split, config.limit):
            clip = load_clip(stem)
            with torch.no_grad():
                streams = codec.encode(torch.from_numpy(clip.audio)[None])
            n = num_tokens(clip.audio.shape[1])
            cond = video_conditions(clip.frames, clip.meta["fps"], n, 16000 / SAMPLES_PER_TOKEN, config.bins)
            self.items.append({"streams": {s: x[0] for s, x in streams.items()}, "cond": cond})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def fit_feature_basis(root: str | Path, out: str | Path, limit: int = 0) -> BinauralFeatures:
    """Fits the PCA basis on both ears of the world's train split and writes it as safetensors."""
    from avflow.world.dataset import load_clip

    wavs = [torch.from_numpy(load_clip(s).audio) for s in clip_ids(root, "train", limit)]
    n = min(w.shape[1] for w in wavs)
    codec = BinauralFeatures()
    codec.fit(torch.cat([w[:, :n] for w in wavs]))
    save_safetensors(codec.state_dict(), out)
    return codec


def export_trainer_weights(run_dir: str | Path, out: str | Path = MODEL_FILE, weights: str = "ema_0.05") -> Path:
    """A trainer run's `{weights}.safetensors` + config.yaml -> a `save_binaural` file (fp16, config in metadata)."""
    from avflow.config import from_dict, read_yaml
    from avflow.models.binaural import BinauralConfig, BinauralFlow, save_binaural

    run_dir = Path(run_dir)
    model = BinauralFlow(from_dict(BinauralConfig, read_yaml(run_dir / "config.yaml")["model"]["args"], "model.args"))
    file = run_dir / f"{weights}.safetensors"
    load_strict(model, read_state_dict(file), str(file))
    save_binaural(model, out)
    return Path(out)
