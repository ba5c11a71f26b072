"""Feature caches: per-clip latents and conditioning features in safetensors shards, with a manifest.

Layout of a cache folder:
  manifest.json                      format, `weights_checksum` of the codec/encoder weights, extractor name
  shard_r{rank}_{k}.safetensors      tensors `{clip_id}/{stream}` (e.g. `abc/audio`, `abc/clip_f`); metadata holds
                                     the ids and the weights checksum. Written atomically, so a shard on disk is
                                     complete and extraction resumes by skipping the ids found in shards.
Extraction under torchrun: rank r takes ids[r::world_size]; ranks never write the same file.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from avflow.errors import AvflowError, ConfigError

FORMAT = "avflow-feature-cache-v1"
MANIFEST = "manifest.json"
SHARD_GLOB = "shard_*.safetensors"

# An extractor maps one clip record (any object with an `id`) to its named streams, each without a batch dim.
Extractor = Callable[[object], dict[str, torch.Tensor]]


class StaleCacheError(ConfigError):
    """The cache was built from other weights than the ones in use."""


def weights_checksum(*sources: nn.Module | dict | str | Path) -> str:
    """sha256 over modules' state dicts (names, dtypes, shapes, bytes) and files' contents, in order."""
    h = hashlib.sha256()
    for src in sources:
        if isinstance(src, (str, Path)):
            with open(src, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 22), b""):
                    h.update(chunk)
            continue
        state = src.state_dict() if isinstance(src, nn.Module) else src
        for name in sorted(state):
            t = state[name].detach().cpu().contiguous().reshape(-1)
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:32]


def _read_manifest(folder: Path) -> dict | None:
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except ValueError as exc:
        raise AvflowError(f"{path}: unreadable cache manifest ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise AvflowError(f"{path}: not an avflow feature cache (format {manifest.get('format')!r})")
    return manifest


def check_checksum(folder: Path, manifest: dict, expected: str | None) -> None:
    if expected is not None and manifest["weights_checksum"] != expected:
        raise StaleCacheError(
            f"{folder}: stale feature cache: built with weights {manifest['weights_checksum']}, "
            f"current weights are {expected}; rebuild it (avflow cache build ... --overwrite)"
        )


def _shard_ids(path: Path) -> tuple[list[str], str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return json.loads(meta.get("ids", "[]")), meta.get("weights_checksum", "")


@dataclass
class BuildSummary:
    written: int = 0  # clips extracted in this run
    skipped: int = 0  # clips already in complete shards
    failed: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)
    shards: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        return (
            f"{self.written} extracted, {self.skipped} already cached, {len(self.failed)} failed, "
            f"{self.shards} shards in {self.seconds:.1f} s"
        )


def build_cache(
    folder: str | Path,
    records: Iterable,
    extractor: Extractor,
    checksum: str,
    *,
    extractor_name: str = "",
    shard_size: int = 256,
    rank: int = 0,
    world_size: int = 1,
    overwrite: bool = False,
    stop_after: int | None = None,
) -> BuildSummary:
    """Extract this rank's slice of `records` into shards; resumable; a cache from other weights is an error.

    Errors raised by the extractor for single clips (AvflowError, OSError, ValueError) are reported, skipped and
    counted. `stop_after` (tests) stops after that many shards, as a crash would.
    """
    start = time.perf_counter()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(folder)
    if manifest is not None and manifest["weights_checksum"] != checksum:
        if not overwrite:
            check_checksum(folder, manifest, checksum)
        for p in folder.glob(SHARD_GLOB):  # every rank removes stale shards; fresh ones carry the new checksum
            try:
                if _shard_ids(p)[1] != checksum:
                    p.unlink(missing_ok=True)
            except Exception:  # noqa: BLE001 - vanished or unreadable: not ours to keep
                pass
        manifest = None
    if manifest is None:
        from avflow.weights import atomic_write

        manifest = {"format": FORMAT, "weights_checksum": checksum, "extractor": extractor_name}
        atomic_write(folder / MANIFEST, lambda f: f.write(json.dumps(manifest, indent=1).encode()))

    mine = list(records)[rank::world_size]
    done: set[str] = set()
    next_index = 0
    prefix = f"shard_r{rank:04d}_"
    for path in folder.glob(SHARD_GLOB):
        ids, shard_sum = _shard_ids(path)
        if shard_sum == checksum:
            done.update(ids)
        if path.name.startswith(prefix):
            next_index = max(next_index, int(path.stem.removeprefix(prefix)) + 1)
    summary = BuildSummary()
    buffer: dict[str, torch.Tensor] = {}
    ids: list[str] = []

    def flush() -> None:
        nonlocal next_index, buffer, ids
        from avflow.weights import save_safetensors

        meta = {"ids": json.dumps(ids), "weights_checksum": checksum}
        save_safetensors(buffer, folder / f"{prefix}{next_index:06d}.safetensors", metadata=meta)
        next_index, summary.shards, buffer, ids = next_index + 1, summary.shards + 1, {}, []

    for record in mine:
        clip_id = str(record.id)
        if clip_id in done:
            summary.skipped += 1
            continue
        try:
            streams = extractor(record)
        except (AvflowError, OSError, ValueError) as exc:
            summary.failed.append((clip_id, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
            continue
        for name, value in streams.items():
            buffer[f"{clip_id}/{name}"] = value.detach().float().cpu().contiguous()
        ids.append(clip_id)
        summary.written += 1
        if len(ids) >= shard_size:
            flush()
            if stop_after is not None and summary.shards >= stop_after:
                break
    else:
        if ids:
            flush()
    summary.seconds = time.perf_counter() - start
    if summary.failed:
        first = "; ".join(f"{i}: {r}" for i, r in summary.failed[:3])
        warnings.warn(f"{folder}: {len(summary.failed)} clips failed and were skipped ({first})", stacklevel=2)
    return summary


class FeatureCache:
    """Read access to a cache folder: `ids`, `streams`, `load(id) -> {stream: Tensor}`.

    With `expected_checksum`, a cache built from other weights raises StaleCacheError (one line).
    """

    def __init__(self, folder: str | Path, expected_checksum: str | None = None):
        self.folder = Path(folder)
        manifest = _read_manifest(self.folder)
        if manifest is None:
            raise ConfigError(f"{self.folder}: no feature cache here (missing {MANIFEST})")
        check_checksum(self.folder, manifest, expected_checksum)
        self.checksum = manifest["weights_checksum"]
        self.where: dict[str, Path] = {}
        for path in sorted(self.folder.glob(SHARD_GLOB)):
            ids, shard_sum = _shard_ids(path)
            if shard_sum != self.checksum:
                raise StaleCacheError(f"{path}: shard built with weights {shard_sum}, manifest says {self.checksum}")
            for i in ids:
                self.where.setdefault(i, path)
        self.ids = sorted(self.where)
        self._handles: dict[Path, object] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, clip_id: str) -> bool:
        return clip_id in self.where

    def _open(self, path: Path):
        from safetensors import safe_open

        if self._pid != os.getpid():  # a forked loader worker opens its own handles
            self._handles, self._pid = {}, os.getpid()
        if path not in self._handles:
            f = safe_open(str(path), framework="pt")
            keys: dict[str, list[str]] = {}
            for k in f.keys():
                keys.setdefault(k.rpartition("/")[0], []).append(k)
            self._handles[path] = (f, keys)
        return self._handles[path]

    def load(self, clip_id: str) -> dict[str, torch.Tensor]:
        if clip_id not in self.where:
            raise KeyError(f"{self.folder}: clip {clip_id!r} is not cached")
        f, keys = self._open(self.where[clip_id])
        return {k.rpartition("/")[2]: f.get_tensor(k) for k in keys[clip_id]}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handles": {}}


class MediaExtractor:
    """The MMAudio extractor: `audio` (VAE latent mean, (N, C)) and `audio_std` from the first `duration` seconds
    of a record's audio; `clip_f`, `sync_f` from its video when it has one; `text_f` from its caption.

    `encoders` is an `avflow.encoders.features.Encoders`, `vae` an `AudioVAE`, `mel` its `MelSpectrogram`.
    """

    def __init__(self, encoders, vae, mel, duration: float = 8.0, device: str | torch.device = "cpu"):
        self.encoders, self.vae, self.mel = encoders, vae.eval(), mel
        self.duration, self.device = duration, torch.device(device)

    @torch.no_grad()
    def __call__(self, record) -> dict[str, torch.Tensor]:
        from avflow.data.audio import read_audio

        world_video = record.world.with_suffix(".mp4") if getattr(record, "world", None) is not None else None
        video = record.video or (world_video if world_video is not None and world_video.is_file() else None)
        source = record.audio or video
        if source is None:
            raise AvflowError(f"clip {record.id}: no audio or video file")
        sr = self.mel.sample_rate
        wave, _ = read_audio(source, sr, channels=1)  # (1, samples)
        n = round(self.duration * sr)
        if wave.shape[1] < n:
            raise AvflowError(f"{source}: shorter than {self.duration} s")
        mel = self.mel(wave[:, :n].to(self.device))  # (1, n_mels, frames)
        dist = self.vae.encode(mel)
        out = {"audio": dist.mean[0].transpose(0, 1), "audio_std": dist.std[0].transpose(0, 1)}  # (N, C)
        if video is not None:
            feats = self.encoders.encode_video(video, record.caption, self.duration)
            out["clip_f"], out["sync_f"] = feats.clip_f[0], feats.sync_f[0]
            if feats.text_f is not None:
                out["text_f"] = feats.text_f[0]
        elif record.caption:
            out["text_f"] = self.encoders.encode_text([record.caption])[0]
        return out
