"""Feature caches: per-clip latents and conditioning features in safetensors shards, with a manifest.

Layout of a cache folder:
  manifest.json                      format, `weights_checksum` of the codec/encoder weights, extractor name and
                                     extraction `settings` (e.g. mode, duration); a build with other ones is an error
  shard_r{rank}_{k}.safetensors      tensors `{clip_id}/{stream}` (e.g. `abc/audio`, `abc/clip_f`); metadata holds
                                     the ids, the weights checksum, extractor and settings. Written atomically, so a
                                     shard on disk is complete and extraction resumes by skipping the ids found in
                                     shards; a damaged shard is a one-line error when read, and moved aside (its
                                     clips extracted again) by a build.
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


class DamagedShardError(ConfigError):
    """A shard that cannot be read (truncated or corrupted file)."""


def _damaged(path: Path, exc: Exception) -> DamagedShardError:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return DamagedShardError(
        f"{path}: damaged cache shard ({reason}); delete it and rerun `avflow cache build` with the same "
        "arguments, which extracts its clips again"
    )


def _scan_shard(path: Path, shapes: bool = False) -> tuple[list[str], dict, dict[str, tuple[int, ...]]]:
    """(ids, metadata, {key: shape} when `shapes`) from a shard's header; reads no tensor. Damaged: one line."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()} if shapes else {}
        ids = json.loads(meta.get("ids", "[]"))
        if not isinstance(ids, list):
            raise ValueError("its `ids` metadata is not a list")
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - SafetensorError (truncated, bad header), OSError, bad JSON
        raise _damaged(path, exc) from None
    return [str(i) for i in ids], meta, found


def _shard_ids(path: Path) -> tuple[list[str], str]:
    ids, meta, _ = _scan_shard(path)
    return ids, meta.get("weights_checksum", "")


def _normal(settings: dict | None) -> dict:
    return json.loads(json.dumps(settings or {}, sort_keys=True))


def _shard_matches(
    meta: dict, manifest: dict | None, checksum: str, extractor_name: str, settings: dict | None
) -> bool:
    """Whether a shard was made by these weights, extractor and settings (None: unknown, not compared). A shard
    without extractor/settings metadata, from an older avflow, has its manifest's (unknown if that has none)."""
    if meta.get("weights_checksum", "") != checksum:
        return False
    old = manifest or {}
    if meta.get("extractor", old.get("extractor", extractor_name)) != extractor_name:
        return False
    try:
        shard_settings = json.loads(meta["settings"]) if "settings" in meta else old.get("settings")
    except ValueError:
        return False
    return settings is None or shard_settings is None or _normal(shard_settings) == settings


def _describe(settings: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in settings.items()) or "no settings"


def check_manifest(
    folder: str | Path, checksum: str, extractor_name: str = "", settings: dict | None = None, overwrite: bool = False
) -> dict | None:
    """The manifest of an existing cache folder (None if none) after checking that it was built with these weights,
    extractor and settings, unless `overwrite`: else a one-line error that suggests --overwrite. Reads no shard.

    A manifest from an older avflow has no `settings`: they are unknown and accepted with a note (a cache built with
    another duration or mode still fails at load, naming a clip and both shapes), so a long extraction is not
    thrown away for a missing record.
    """
    folder, settings = Path(folder), _normal(settings)
    manifest = _read_manifest(folder) if folder.is_dir() else None
    if manifest is None or overwrite:
        return manifest
    check_checksum(folder, manifest, checksum)
    old_name = manifest.get("extractor", "")
    if old_name != extractor_name:
        raise ConfigError(
            f"{folder}: cache built with extractor {old_name or '(unnamed)'!r}, this build uses "
            f"{extractor_name or '(unnamed)'!r}; rebuild it (avflow cache build ... --overwrite) or use another folder"
        )
    if "settings" not in manifest:
        if settings:
            warnings.warn(
                f"{folder}: the cache's manifest does not record its extraction settings (an older avflow); assuming "
                f"they were {_describe(settings)}; if not, rebuild it with --overwrite",
                stacklevel=2,
            )
    elif _normal(manifest["settings"]) != settings:
        raise ConfigError(
            f"{folder}: cache built with {_describe(_normal(manifest['settings']))}, this build uses "
            f"{_describe(settings)}; rerun with those settings, or rebuild it (avflow cache build ... --overwrite)"
        )
    return manifest


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
    settings: dict | None = None,
    shard_size: int = 256,
    rank: int = 0,
    world_size: int = 1,
    overwrite: bool = False,
    stop_after: int | None = None,
) -> BuildSummary:
    """Extract this rank's slice of `records` into shards; resumable; a cache from other weights, extractor or
    `settings` (what else shapes the features: e.g. mode, duration) is a one-line error unless `overwrite`.

    With `overwrite`, the old shards are kept until this rank's build has finished and written its shards, so a
    build that fails or is stopped leaves the old clips (rerun it with --overwrite to go on). Errors raised by the
    extractor for single clips (AvflowError, OSError, ValueError) are reported, skipped and counted; when every clip
    fails and none is cached, that is a one-line error. A damaged shard is moved aside (`*.damaged`) with a note and
    its clips are extracted again. Ctrl-C writes the clips extracted so far before it stops the build.
    `stop_after` (tests) stops after that many shards, as a crash would.
    """
    from avflow.weights import atomic_write

    start = time.perf_counter()
    folder, settings = Path(folder), _normal(settings)
    records = list(records)
    if not records:
        raise ConfigError(f"{folder}: no clips to extract (empty table?); nothing was built or deleted")
    old_manifest = check_manifest(folder, checksum, extractor_name, settings, overwrite)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"format": FORMAT, "weights_checksum": checksum, "extractor": extractor_name, "settings": settings}
    # settings unknown (an older manifest): --overwrite rebuilds, else they are assumed (check_manifest's note)
    unknown = old_manifest is not None and "settings" not in old_manifest and bool(settings) and overwrite
    replacing = old_manifest is not None and (unknown or not (
        old_manifest["weights_checksum"] == checksum
        and old_manifest.get("extractor", "") == extractor_name
        and _normal(old_manifest.get("settings", settings)) == settings
    ))  # fmt: skip
    if old_manifest is None:
        atomic_write(folder / MANIFEST, lambda f: f.write(json.dumps(manifest, indent=1).encode()))

    mine = records[rank::world_size]
    done: set[str] = set()
    stale: list[Path] = []
    next_index = 0
    prefix = f"shard_r{rank:04d}_"
    for path in sorted(folder.glob(f"{prefix}*")):  # damaged ones moved aside keep their index
        try:
            next_index = max(next_index, int(path.name.removeprefix(prefix).split(".")[0]) + 1)
        except ValueError:
            pass
    for path in sorted(folder.glob(SHARD_GLOB)):
        try:
            ids, meta, _ = _scan_shard(path)
        except FileNotFoundError:  # another rank moved it aside
            continue
        except DamagedShardError as exc:
            aside = path.with_name(path.name + ".damaged")
            try:
                path.rename(aside)
                warnings.warn(f"{exc}: moved aside to {aside.name}; its clips are extracted again", stacklevel=2)
            except OSError:
                pass
            continue
        if _shard_matches(meta, old_manifest, checksum, extractor_name, settings) and not (
            unknown and "settings" not in meta
        ):
            done.update(ids)
        else:
            stale.append(path)
    summary = BuildSummary()
    buffer: dict[str, torch.Tensor] = {}
    ids: list[str] = []
    shard_meta = {"weights_checksum": checksum, "extractor": extractor_name, "settings": json.dumps(settings)}

    def flush() -> None:
        nonlocal next_index, buffer, ids
        from avflow.weights import save_safetensors

        meta = {"ids": json.dumps(ids), **shard_meta}
        save_safetensors(buffer, folder / f"{prefix}{next_index:06d}.safetensors", metadata=meta)
        next_index, summary.shards, buffer, ids = next_index + 1, summary.shards + 1, {}, []

    stopped = False
    try:
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
                    stopped = True
                    break
    except KeyboardInterrupt:
        if ids:  # keep what was extracted: a rerun resumes after it
            flush()
        raise
    if ids:
        flush()
    summary.seconds = time.perf_counter() - start
    if summary.failed:
        first = "; ".join(f"{i}: {r}" for i, r in summary.failed[:3])
        if not summary.written and not summary.skipped:
            raise ConfigError(
                f"{folder}: all {len(summary.failed)} clips failed ({first}); "
                + ("the old cache is kept" if replacing else "nothing was extracted")
            )
        warnings.warn(f"{folder}: {len(summary.failed)} clips failed and were skipped ({first})", stacklevel=2)
    if not stopped and overwrite:
        for p in stale:  # only now that this rank's new shards are written; every rank removes stale shards
            p.unlink(missing_ok=True)
        if replacing:
            atomic_write(folder / MANIFEST, lambda f: f.write(json.dumps(manifest, indent=1).encode()))
    return summary


class FeatureCache:
    """Read access to a cache folder: `ids`, `streams` ({stream: shape} over every clip of every shard; a clip may
    lack some, e.g. an audio-only clip has no `clip_f`), `stream_counts` ({stream: clips having it}),
    `load(id) -> {stream: Tensor}`.

    Reads only the shards' headers when opened. With `expected_checksum`, a cache built from other weights raises
    StaleCacheError (one line); a damaged shard, or clips whose stream shapes differ (built with another duration
    or mode), is a one-line ConfigError.
    """

    def __init__(self, folder: str | Path, expected_checksum: str | None = None):
        self.folder = Path(folder)
        manifest = _read_manifest(self.folder)
        if manifest is None:
            raise ConfigError(f"{self.folder}: no feature cache here (missing {MANIFEST})")
        check_checksum(self.folder, manifest, expected_checksum)
        self.checksum = manifest["weights_checksum"]
        self.settings: dict | None = manifest.get("settings")
        self.where: dict[str, Path] = {}
        self.streams: dict[str, tuple[int, ...]] = {}
        self.stream_counts: dict[str, int] = {}
        example: dict[str, str] = {}
        for path in sorted(self.folder.glob(SHARD_GLOB)):
            ids, meta, shapes = _scan_shard(path, shapes=True)
            shard_sum = meta.get("weights_checksum", "")
            if shard_sum != self.checksum:
                raise StaleCacheError(f"{path}: shard built with weights {shard_sum}, manifest says {self.checksum}")
            if not _shard_matches(meta, manifest, self.checksum, manifest.get("extractor", ""),
                                  manifest.get("settings")):  # fmt: skip
                raise StaleCacheError(
                    f"{path}: shard built with other extraction settings than the manifest's (an unfinished "
                    "--overwrite rebuild?); finish the rebuild (avflow cache build ... --overwrite)"
                )
            fresh = {i for i in ids if i not in self.where}
            for i in ids:
                self.where.setdefault(i, path)
            for key, shape in shapes.items():
                clip_id, _, name = key.rpartition("/")
                if clip_id not in fresh:
                    continue
                if name not in self.streams:
                    self.streams[name], example[name] = shape, clip_id
                elif self.streams[name] != shape:
                    raise ConfigError(
                        f"{self.folder}: stream {name!r} of clip {clip_id!r} has shape {shape}, of clip "
                        f"{example[name]!r} {self.streams[name]} (clips extracted with another --duration or "
                        "--mode?); rebuild the cache with one setting (avflow cache build ... --overwrite)"
                    )
                self.stream_counts[name] = self.stream_counts.get(name, 0) + 1
        self.example = example  # {stream: a clip id that has it}
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
            try:
                f = safe_open(str(path), framework="pt")
            except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError: damaged or removed since opened
                raise _damaged(path, exc) from None
            keys: dict[str, list[str]] = {}
            for k in f.keys():
                keys.setdefault(k.rpartition("/")[0], []).append(k)
            self._handles[path] = (f, keys)
        return self._handles[path]

    def load(self, clip_id: str) -> dict[str, torch.Tensor]:
        if clip_id not in self.where:
            raise KeyError(f"{self.folder}: clip {clip_id!r} is not cached")
        path = self.where[clip_id]
        f, keys = self._open(path)
        try:
            return {k.rpartition("/")[2]: f.get_tensor(k) for k in keys.get(clip_id, [])}
        except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError while reading the tensors
            raise _damaged(path, exc) from None

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
