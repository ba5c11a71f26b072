"""The binaural model's training cache: per world clip, the codec latents of both ears, of the mono mix (L + R) / 2,
and the spatio-temporal video features, stacked in one safetensors file that `tensor_file` reads.

Keys: streams.left / streams.right (B, N, C); cond.mono (B, N, C); cond.timing (B, N, 5); cond.spatial
(B, N, 8, bins); cond.video_on, cond.mono_on (B,) ones (the task drops them). Metadata: the codecs' checksum and
`bins`; `check_cache` refuses a cache made with other codecs.
"""

from __future__ import annotations

from pathlib import Path

import torch

from avflow.codecs.world import WorldCodecs
from avflow.errors import ConfigError
from avflow.models.binaural import video_conditions
from avflow.weights import save_safetensors


def mono_latents(codecs: WorldCodecs, mono: torch.Tensor) -> torch.Tensor:
    """mono (B, S) -> codec latents (B, N, C) of the mono on both ears (one stream of [mono, mono])."""
    return codecs.audio.encode(torch.stack([mono, mono], dim=1))["left"]


def clip_tensors(codecs: WorldCodecs, audio: torch.Tensor, frames, fps: float, bins: int) -> dict[str, torch.Tensor]:
    """One clip's audio (2, S) [left, right] and frames (T, H, W, 3) uint8 -> its unbatched cache entries."""
    spl = codecs.audio.samples_per_latent
    n = codecs.audio.latent_length(audio.shape[-1])
    if n == 0:
        raise ConfigError(f"a clip of {audio.shape[-1]} samples is shorter than one latent ({spl} samples)")
    audio = audio[:, : n * spl].float()
    with torch.no_grad():
        ears = codecs.audio.encode(audio[None])
        mono = mono_latents(codecs, audio.mean(0)[None])
    cond = video_conditions(frames, fps, n, codecs.audio.latent_rate, bins)
    return {
        "streams.left": ears["left"][0], "streams.right": ears["right"][0], "cond.mono": mono[0],
        "cond.timing": cond["timing"], "cond.spatial": cond["spatial"], "cond.video_on": cond["video_on"],
        "cond.mono_on": torch.tensor(1.0),
    }  # fmt: skip


def cache_world_split(world: str | Path, split: str, out: str | Path, codecs: WorldCodecs, *, bins: int = 16,
                      limit: int = 0, log=None) -> Path:  # fmt: skip
    """Every clip of `world/split` (its manifest order; the first `limit` when > 0) into `out`."""
    from avflow.world.dataset import load_clip, read_manifest

    rows = read_manifest(world, split)
    rows = rows[:limit] if limit > 0 else rows
    if not rows:
        raise ConfigError(f"{world}/{split}: no clips in the manifest")
    parts: dict[str, list[torch.Tensor]] = {}
    for i, row in enumerate(rows):
        clip = load_clip(Path(world) / split / row["id"])
        entry = clip_tensors(codecs, torch.from_numpy(clip.audio), clip.frames, float(clip.meta["fps"]), bins)
        for k, v in entry.items():
            parts.setdefault(k, []).append(v)
        if log is not None and (i + 1) % 500 == 0:
            log(f"cache {split}: {i + 1}/{len(rows)}")
    tensors = {k: torch.stack(v) for k, v in parts.items()}
    return save_safetensors(tensors, out, metadata={"codecs_checksum": codecs.checksum, "bins": str(bins)})


def check_cache(path: str | Path, codecs: WorldCodecs) -> None:
    """A one-line error when the cache at `path` was made with other codecs than `codecs`."""
    from safetensors import safe_open

    if not Path(path).is_file():
        raise ConfigError(f"{path}: no binaural cache (make it with scripts/train_binaural_v2.py --stage cache)")
    with safe_open(str(path), "pt") as f:
        metadata = dict(f.metadata() or {})
    codecs.check_trained_with(metadata.get("codecs_checksum"), f"the cache {path}")
