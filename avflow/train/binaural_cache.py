"""The binaural model's training cache: per world clip, the codec latents of both ears, of the mono mix (L + R) / 2,
and the spatio-temporal video features, stacked in one safetensors file that `tensor_file` reads; or, for the
`cues` representation, both ears' interaural cue streams and the mono's features (`avflow.data.interaural_cues`).

Keys: streams.left / streams.right (B, N, C); cond.mono (B, N, C); cond.timing (B, N, 5); cond.spatial
(B, N, 8, bins); cond.video_on, cond.mono_on (B,) ones (the task drops them); with a prior (cues only), cond.prior
(B, 2, N, C): the cue streams of a rule-based rendering of the mono mix (the caller passes the renderer, e.g.
`avflow.pipelines.spatialise.spatialise`, which this layer does not import). Metadata: `representation`, the
codecs' checksum (codec) or the cue stream's settings (cues), `bins` and `prior`; the world it was made from
(`world`: its folder; `world_settings`: its dataset.json), `split`, `limit` and `rows`; `check_cache` refuses a cache
made with other codecs or settings, from another world or with another number of clips, or damaged.
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


def world_metadata(world: str | Path, split: str, limit: int, rows: int) -> dict[str, str]:
    """Where a cache's clips came from: the world folder (resolved), its settings file's content (compact JSON; ""
    for a world without one), the split, the `limit` asked and the rows it holds; `check_cache` compares them."""
    from avflow.world.dataset import SETTINGS_FILE

    settings = Path(world) / SETTINGS_FILE
    text = json.dumps(json.loads(settings.read_text()), sort_keys=True) if settings.is_file() else ""
    return {"world": str(Path(world).resolve()), "world_settings": text, "split": split, "limit": str(limit),
            "rows": str(rows)}  # fmt: skip


def expected_rows(world: str | Path, split: str, limit: int) -> int:
    """The rows a cache of `world/split` with `limit` holds: the manifest's clips, at most `limit` when > 0."""
    from avflow.world.dataset import read_manifest

    n = len(read_manifest(world, split))
    return min(n, limit) if limit > 0 else n


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

    if limit < 0:
        raise ConfigError(f"a cache's limit of clips must be >= 0 (0: all), got {limit}")
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
    metadata = cache_metadata(representation, codecs, bins, prior) | world_metadata(world, split, limit, len(rows))
    return save_safetensors(tensors, out, metadata=metadata)


def check_cache(path: str | Path, codecs: WorldCodecs | None, representation: str = "codec",
                prior: str | None = None, *, world: str | Path | None = None, split: str | None = None,
                limit: int = 0) -> dict[str, str]:  # fmt: skip
    """The cache's metadata; a one-line error when the cache at `path` is damaged, was made for another
    representation, with other codecs than `codecs` (codec), other cue stream settings (cues) or, when `prior` is
    given, another prior; with `world` and `split`, when it was made from another world folder or world settings
    (where it records them) or holds another number of clips than that split with `limit` gives."""
    from safetensors import safe_open

    from avflow.errors import first_line

    if not Path(path).is_file():
        raise ConfigError(f"{path}: no binaural cache (make it with scripts/train_binaural_v2.py --stage cache, in the "
                          "avflow source repository)")  # fmt: skip
    again = f"delete {path} to make it again (scripts/train_binaural_v2.py --stage cache)"
    try:
        with safe_open(str(path), "pt") as f:
            metadata = dict(f.metadata() or {})
            rows = {(f.get_slice(k).get_shape() or [None])[0] for k in f.keys()}
    except Exception as exc:  # safetensors' own error (an empty or truncated file) or an OSError
        raise ConfigError(f"{path}: a damaged cache ({first_line(exc)}); {again}") from None
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
    if world is not None and split is not None:
        now = world_metadata(world, split, limit, expected_rows(world, split, limit))
        differ = [
            f"{k} {metadata[k]!r}, now {now[k]!r}" for k in ("world", "split") if metadata.get(k, now[k]) != now[k]
        ]
        if metadata.get("world_settings", now["world_settings"]) != now["world_settings"]:
            differ.append(f"other world settings than {Path(world) / 'dataset.json'}")
        if differ:
            raise ConfigError(f"{path}: made from another world ({'; '.join(differ)}); {again}")
        if rows != {int(now["rows"])}:
            held = "/".join(str(r) for r in sorted(rows, key=str)) or "no"
            raise ConfigError(f"{path}: holds {held} clips, {world}/{split} with --limit {limit} gives {now['rows']} "
                              f"(made with another --limit or world); {again}")  # fmt: skip
    return metadata
