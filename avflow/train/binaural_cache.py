"""The binaural model's training cache: per world clip, the codec latents of both ears, of the mono mix (L + R) / 2,
and the spatio-temporal video features, stacked in one safetensors file that `tensor_file` reads; or, for the
`cues` representation, both ears' interaural cue streams and the mono's features (`avflow.data.interaural_cues`).

Keys: streams.left / streams.right (B, N, C); cond.mono (B, N, C); cond.timing (B, N, 5); cond.spatial
(B, N, 8, bins); cond.video_on, cond.mono_on (B,) ones (the task drops them); with a prior (cues only), cond.prior
(B, 2, N, C): the cue streams of a rule-based rendering of the mono mix (the caller passes the renderer, e.g.
`avflow.pipelines.spatialise.spatialise`, which this layer does not import). Metadata: `representation`, the
codecs' checksum (codec) or the cue stream's settings (cues), `bins` and `prior`; `check_cache` refuses a cache
made with other codecs or settings.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from avflow.codecs.world import WorldCodecs
from avflow.data import interaural_cues
from avflow.errors import ConfigError
from avflow.models.binaural import CUE_STREAM, video_conditions
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


def cue_clip_tensors(audio: torch.Tensor, frames, fps: float, bins: int,
                     prior: interaural_cues.Renderer | None = None) -> dict[str, torch.Tensor]:  # fmt: skip
    """One clip's audio (2, S) [left, right] and frames -> its unbatched cache entries for the `cues` representation:
    the ears' cue streams (N, C) and the mono's features (N, C), C = `CUE_STREAM.dim`; with `prior`, its rendering's
    cue streams (2, N, C)."""
    a = audio.double().numpy()
    n = CUE_STREAM.tokens(a.shape[-1])
    cues = torch.from_numpy(interaural_cues.encode(a, CUE_STREAM, n))  # (2, N, C)
    mono = torch.from_numpy(interaural_cues.mono_features(a.mean(0), CUE_STREAM, n))  # (N, C)
    cond = video_conditions(frames, fps, n, CUE_STREAM.token_rate, bins)
    entry = {
        "streams.left": cues[0], "streams.right": cues[1], "cond.mono": mono, "cond.timing": cond["timing"],
        "cond.spatial": cond["spatial"], "cond.video_on": cond["video_on"], "cond.mono_on": torch.tensor(1.0),
    }  # fmt: skip
    if prior is not None:
        entry["cond.prior"] = interaural_cues.rendered_streams(prior, a.mean(0), frames, fps, CUE_STREAM, n)
    return entry


def cache_metadata(representation: str, codecs: WorldCodecs | None, bins: int, prior: str = "none") -> dict[str, str]:
    """What a cache (and a model trained on it) was made with: `check_cache` and the model export compare it."""
    if representation == "cues":
        return {"representation": "cues", "cue_stream": json.dumps(asdict(CUE_STREAM)), "bins": str(bins),
                "prior": prior}  # fmt: skip
    return {"representation": "codec", "codecs_checksum": codecs.checksum, "bins": str(bins), "prior": "none"}


def _cue_entry(job: tuple) -> dict[str, np.ndarray]:
    """One clip's `cues` entries as arrays (a worker's unit of `cache_world_split`; tensors sent back from worker
    processes each hold a file descriptor, and thousands in flight exhaust the process's limit)."""
    from avflow.world.dataset import load_clip

    folder, bins, render = job
    clip = load_clip(folder)
    entry = cue_clip_tensors(torch.from_numpy(clip.audio), clip.frames, float(clip.meta["fps"]), bins, render)
    return {k: v.numpy() for k, v in entry.items()}


def cache_world_split(world: str | Path, split: str, out: str | Path, codecs: WorldCodecs | None, *, bins: int = 16,
                      limit: int = 0, log=None, representation: str = "codec", prior: str = "none",
                      render_prior: interaural_cues.Renderer | None = None, workers: int = 1) -> Path:  # fmt: skip
    """Every clip of `world/split` (its manifest order; the first `limit` when > 0) into `out`, as codec latents
    (`representation="codec"`, with `codecs`) or cue streams (`"cues"`, no codecs needed; with `prior` named and
    its renderer `render_prior`, the rendering's cue streams too; `workers` processes, the same file for any
    number)."""
    from avflow.world.dataset import load_clip, read_manifest

    if (prior != "none") != (render_prior is not None) or (prior != "none" and representation != "cues"):
        raise ConfigError(f"a cache's prior needs the cues representation, its name and its renderer, got "
                          f"prior {prior!r} for {representation!r}")  # fmt: skip
    rows = read_manifest(world, split)
    rows = rows[:limit] if limit > 0 else rows
    if not rows:
        raise ConfigError(f"{world}/{split}: no clips in the manifest")
    parts: dict[str, list[torch.Tensor]] = {}
    if representation == "cues":
        jobs = [(Path(world) / split / row["id"], bins, render_prior) for row in rows]
        if workers > 1:
            from concurrent.futures import ProcessPoolExecutor

            pool = ProcessPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,))
            entries = pool.map(_cue_entry, jobs, chunksize=16)
        else:
            pool, entries = None, map(_cue_entry, jobs)
    else:
        entries = (clip_tensors(codecs, torch.from_numpy(c.audio), c.frames, float(c.meta["fps"]), bins)
                   for c in (load_clip(Path(world) / split / row["id"]) for row in rows))  # fmt: skip
        pool = None
    try:
        for i, entry in enumerate(entries):
            for k, v in entry.items():
                parts.setdefault(k, []).append(torch.as_tensor(v))
            if log is not None and (i + 1) % 500 == 0:
                log(f"cache {split}: {i + 1}/{len(rows)}")
    finally:
        if pool is not None:
            pool.shutdown()
    tensors = {k: torch.stack(v) for k, v in parts.items()}
    return save_safetensors(tensors, out, metadata=cache_metadata(representation, codecs, bins, prior))


def check_cache(path: str | Path, codecs: WorldCodecs | None, representation: str = "codec",
                prior: str | None = None) -> dict[str, str]:  # fmt: skip
    """The cache's metadata; a one-line error when the cache at `path` was made for another representation, with
    other codecs than `codecs` (codec), other cue stream settings (cues) or, when `prior` is given, another prior."""
    from safetensors import safe_open

    if not Path(path).is_file():
        raise ConfigError(f"{path}: no binaural cache (make it with scripts/train_binaural_v2.py --stage cache, in the "
                          "avflow source repository)")  # fmt: skip
    with safe_open(str(path), "pt") as f:
        metadata = dict(f.metadata() or {})
    made = metadata.get("representation", "codec")
    if made != representation:
        raise ConfigError(f"{path}: a cache of the {made!r} representation, not {representation!r}")
    if representation == "cues":
        if metadata.get("cue_stream") != json.dumps(asdict(CUE_STREAM)):
            raise ConfigError(f"{path}: made with other cue stream settings than avflow.models.binaural.CUE_STREAM")
    else:
        codecs.check_trained_with(metadata.get("codecs_checksum"), f"the cache {path}")
    made_prior = metadata.get("prior", "none")
    if prior is not None and made_prior != prior:
        raise ConfigError(f"{path}: a cache made with prior {made_prior!r}, the model asks {prior!r} (another --work)")
    return metadata
