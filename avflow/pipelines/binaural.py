"""Binaural generation from video: the world training dataset and the sampling pipeline.

Assets (shipped, fitted/trained on the procedural world): avflow/assets/binaural/features.safetensors (the PCA basis
of `avflow.codecs.binaural_features`) and avflow/assets/binaural/model.safetensors (a small `BinauralFlow`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from avflow.codecs.binaural_features import SAMPLES_PER_TOKEN, BinauralFeatures, load_features, num_tokens
from avflow.errors import ConfigError, WeightsError
from avflow.flow import cfg as cfg_branch
from avflow.flow import sample
from avflow.nn.spatiotemporal import video_features
from avflow.weights import load_strict, read_state_dict, save_safetensors

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "binaural"
FEATURES_FILE = ASSET_DIR / "features.safetensors"
MODEL_FILE = ASSET_DIR / "model.safetensors"


def clip_ids(root: str | Path, split: str, limit: int = 0) -> list[Path]:
    """Stems of the clips listed in root/split/manifest.jsonl."""
    manifest = Path(root) / split / "manifest.jsonl"
    if not manifest.is_file():
        raise ConfigError(f"{manifest}: no world manifest (make one with `avflow world make`)")
    stems = [Path(root) / split / json.loads(line)["id"] for line in manifest.read_text().splitlines() if line]
    return stems[:limit] if limit > 0 else stems


def conditions_for(frames: np.ndarray, fps: float, n_samples: int, bins: int = 16) -> dict[str, torch.Tensor]:
    """Unbatched video conditions at the token rate of `n_samples` of 16 kHz audio."""
    n = num_tokens(n_samples)
    feats = video_features(frames, fps, n, token_rate=16000 / SAMPLES_PER_TOKEN, bins=bins)
    return {**feats, "video_on": torch.tensor(1.0)}


@dataclass
class BinauralWorldConfig:
    root: str = ""  # a world dataset folder (train/val/test with manifests)
    split: str = "train"
    limit: int = 0  # 0: all clips of the split
    features: str = ""  # PCA basis safetensors; empty: the shipped asset
    bins: int = 16


class BinauralWorld(Dataset):
    """World clips as streams left/right (N, 20) and conditions timing/spatial/video_on, computed once in memory."""

    def __init__(self, cfg: BinauralWorldConfig):
        if not cfg.root:
            raise ConfigError("data: binaural_world needs `root`, a world dataset folder")
        from avflow.world.dataset import load_clip

        codec = load_features(cfg.features or FEATURES_FILE)
        self.items = []
        for stem in clip_ids(cfg.root, cfg.split, cfg.limit):
            clip = load_clip(stem)
            with torch.no_grad():
                streams = codec.encode(torch.from_numpy(clip.audio)[None])
            cond = conditions_for(clip.frames, clip.meta["fps"], clip.audio.shape[1], cfg.bins)
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


class BinauralPipeline:
    """Video frames -> binaural (2, N) audio with a trained `BinauralFlow` and the feature codec."""

    def __init__(self, model, codec: BinauralFeatures, steps: int = 16, guidance: float = 2.0):
        self.model, self.codec, self.steps, self.guidance = model.eval(), codec.eval(), steps, guidance

    @classmethod
    def from_assets(cls, model_file: str | Path = MODEL_FILE, features_file: str | Path = FEATURES_FILE, **kw):
        from avflow.models.binaural import load_binaural

        if not Path(model_file).is_file():
            raise WeightsError(f"{model_file}: no trained binaural model weights")
        return cls(load_binaural(model_file), load_features(features_file), **kw)

    @torch.no_grad()
    def generate(self, frames: np.ndarray, fps: float, n_samples: int, seed: int = 0, decode_iters: int = 32):
        """(T, H, W, 3) uint8 frames -> (2, n_samples) float32 [left, right] at 16 kHz."""
        cond = {k: v[None] for k, v in conditions_for(frames, fps, n_samples, self.model.cfg.bins).items()}
        n = num_tokens(n_samples)
        g = torch.Generator().manual_seed(seed)
        noise = {s: torch.randn(1, n, self.model.cfg.latent_dim, generator=g) for s in ("left", "right")}
        empty = self.model.empty_conditions(1, n)
        guidance = cfg_branch(self.guidance, cond=empty) if self.guidance != 1.0 else []
        result = sample(self.model, noise, cond, steps=self.steps, solver="euler", guidance=guidance)
        return self.codec.decode(result.streams, n_samples, iters=decode_iters)[0].numpy().astype(np.float32)


def export_trainer_weights(run_dir: str | Path, out: str | Path = MODEL_FILE, weights: str = "ema_0.05") -> Path:
    """A trainer run's `{weights}.safetensors` + config.yaml -> a `save_binaural` file (fp16, config in metadata)."""
    from avflow.config import read_yaml
    from avflow.models.binaural import BinauralConfig, BinauralFlow, save_binaural

    run_dir = Path(run_dir)
    model = BinauralFlow(BinauralConfig(**read_yaml(run_dir / "config.yaml")["model"]["args"]))
    file = run_dir / f"{weights}.safetensors"
    load_strict(model, read_state_dict(file), str(file))
    save_binaural(model, out)
    return Path(out)
