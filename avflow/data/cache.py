"""Feature caches: per-clip latents and conditioning features in safetensors shards, with a manifest.

Layout of a cache folder:
  manifest.json                      format, `weights_checksum` of the codec/encoder weights, extractor name and
                                     extraction `settings` (e.g. mode, duration); a build with other ones is an error.
                                     Also the cache's `generation` (the shards it reads) and the cached ids `removed`
                                     from the table since (left out of `FeatureCache.ids`).
  shard_r{rank}_{k}.safetensors      tensors `{clip_id}/{stream}` (e.g. `abc/audio`, `abc/clip_f`); metadata holds
                                     the ids, the weights checksum, extractor, settings, generation, when it was
                                     written and a hash per clip of what made it (caption, source files' path, size
                                     and mtime). Written atomically, so a shard on disk is complete and extraction
                                     resumes by skipping the ids found in shards whose hash still matches; a clip
                                     extracted again (caption or file changed) is read from its newest shard. A
                                     damaged shard is a one-line error when read, and moved aside (its clips
                                     extracted again) by a build.
  failed.tsv (failed_r{rank}.tsv)    the clips the last build could not extract: id, file, reason.
An `--overwrite` build writes a new generation beside the old one, which stays the cache until every rank has
finished (`.overwrite_r{rank}.json` markers): then one manifest write switches to it and the old shards are deleted,
so an interrupted overwrite never leaves a mix; rerunning it resumes.
Extraction under torchrun: rank r takes ids[r::world_size]; ranks never write the same file.
"""

from __future__ import annotations

import contextlib
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

from avflow.errors import AvflowError, ConfigError, MediaError, MediaWarning, Note, first_line

FORMAT = "avflow-feature-cache-v1"
MANIFEST = "manifest.json"
SHARD_GLOB = "shard_*.safetensors"
MARKER_GLOB = ".overwrite_r*.json"
TOLERANCE_S = 0.05  # a clip at most this much shorter than the duration is padded (AAC's end, a last frame)

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
            warnings.warn(Note(
                f"{folder}: the cache's manifest does not record its extraction settings (an older avflow); assuming "
                f"they were {_describe(settings)}; if not, rebuild it with --overwrite"
            ), stacklevel=2)  # fmt: skip
    elif _normal(manifest["settings"]) != settings:
        raise ConfigError(
            f"{folder}: cache built with {_describe(_normal(manifest['settings']))}, this build uses "
            f"{_describe(settings)}; rerun with those settings, or rebuild it (avflow cache build ... --overwrite)"
        )
    return manifest


def source_files(record) -> list[Path]:
    """The media files a record's streams come from: its audio, its video, a world clip's mp4 preview."""
    world = getattr(record, "world", None)
    found = (getattr(record, "audio", None), getattr(record, "video", None),
             Path(world).with_suffix(".mp4") if world is not None else None)  # fmt: skip
    return [Path(p) for p in found if p is not None]


def record_hash(record) -> str:
    """A short hash of what makes a clip's streams: its caption, start and source files (absolute path, size,
    modification time; a missing one too), so a rebuild sees an edited caption or a replaced file."""
    stamps = []
    for path in source_files(record):
        try:
            st = path.stat()
            stamps.append([str(path.absolute()), st.st_size, st.st_mtime_ns])
        except OSError:
            stamps.append([str(path.absolute()), None, None])
    what = [getattr(record, "caption", None), getattr(record, "start", 0.0), stamps]
    return hashlib.sha256(json.dumps(what, default=str).encode()).hexdigest()[:16]


def _source_name(record) -> str:
    """The file a failed clip was read from, for failed.tsv."""
    files = source_files(record)
    return str(getattr(record, "video", None) or getattr(record, "audio", None) or (files[0] if files else ""))


def _generation(manifest: dict | None, checksum: str, extractor_name: str, settings: dict) -> str:
    """The generation a fresh build or an --overwrite writes: the same on every rank and on a rerun (which so
    resumes it), another one after each finished overwrite."""
    key = json.dumps([(manifest or {}).get("generation", ""), checksum, extractor_name, settings], sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class _Copy:
    path: Path | None  # None: dropped (its clip failed when extracted again; the old copy is stale)
    written: int  # time.time_ns() when its shard was written; 0 for a shard from an older avflow
    hash: str | None  # record_hash when it was extracted; None for a shard from an older avflow


def _json_field(meta: dict, key: str, default):
    try:
        value = json.loads(meta[key]) if key in meta else default
    except ValueError:
        return default
    return value if isinstance(value, type(default)) else default


def _latest_copies(shards: list[tuple[Path, list[str], dict]]) -> dict[str, _Copy]:
    """{id: its newest copy} over shards (path, ids, metadata): a clip extracted again (its caption or file changed)
    sits in a later shard than its old copy, or in its `dropped` list (a copy with no path) when that failed; among
    shards without a write time the first (sorted) wins."""
    latest: dict[str, _Copy] = {}
    for path, ids, meta in shards:
        written = _json_field(meta, "written", 0)
        hashes = _json_field(meta, "hashes", {})
        for i, where in [*((i, path) for i in ids), *((str(i), None) for i in _json_field(meta, "dropped", []))]:
            if i not in latest or written > latest[i].written:
                latest[i] = _Copy(where, written, hashes.get(i))
    return latest


def _write_json(path: Path, obj: dict) -> None:
    from avflow.weights import atomic_write

    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1).encode()))


def _scan_for_build(folder: Path) -> list[tuple[Path, list[str], dict]]:
    """Every readable shard's (path, ids, metadata); a damaged one is moved aside with a note."""
    found = []
    for path in sorted(folder.glob(SHARD_GLOB)):
        try:
            ids, meta, _ = _scan_shard(path)
        except FileNotFoundError:  # another rank moved it aside
            continue
        except DamagedShardError as exc:
            aside = path.with_name(path.name + ".damaged")
            try:
                path.rename(aside)
                warnings.warn(Note(f"{exc}: moved aside to {aside.name}; its clips are extracted again"), stacklevel=3)
            except OSError:
                pass
            continue
        found.append((path, ids, meta))
    return found


def _next_index(folder: Path, prefix: str) -> int:
    """One past the highest shard index of this rank's prefix (damaged ones moved aside keep theirs)."""
    top = -1
    for path in folder.glob(f"{prefix}*"):
        try:
            top = max(top, int(path.name.removeprefix(prefix).split(".")[0]))
        except ValueError:
            pass
    return top + 1


class _ShardWriter:
    """Buffers extracted clips and writes them as this rank's next shard; `on_first` runs after the first one (the
    manifest of a new cache: a build that wrote no shard leaves no manifest behind)."""

    def __init__(self, folder: Path, rank: int, meta: dict, on_first: Callable[[], None] | None):
        self.folder, self.prefix, self.meta, self.on_first = folder, f"shard_r{rank:04d}_", meta, on_first
        self.next_index, self.shards = _next_index(folder, self.prefix), 0
        self.buffer: dict[str, torch.Tensor] = {}
        self.hashes: dict[str, str] = {}
        self.dropped: list[str] = []

    def __len__(self) -> int:
        return len(self.hashes) + len(self.dropped)

    def add(self, clip_id: str, streams: dict[str, torch.Tensor], digest: str) -> None:
        for name, value in streams.items():
            self.buffer[f"{clip_id}/{name}"] = value.detach().float().cpu().contiguous()
        self.hashes[clip_id] = digest

    def drop(self, clip_id: str) -> None:
        """Leave a cached clip out from now on (extracting it again failed: its cached features are stale)."""
        self.dropped.append(clip_id)

    def flush(self) -> None:
        from avflow.weights import save_safetensors

        if not len(self):
            return
        meta = {**self.meta, "ids": json.dumps(list(self.hashes)), "hashes": json.dumps(self.hashes),
                "written": str(time.time_ns())}  # fmt: skip
        if self.dropped:
            meta["dropped"] = json.dumps(self.dropped)
        save_safetensors(self.buffer, self.folder / f"{self.prefix}{self.next_index:06d}.safetensors", metadata=meta)
        self.next_index, self.shards, self.buffer, self.hashes = self.next_index + 1, self.shards + 1, {}, {}
        self.dropped = []
        if self.shards == 1 and self.on_first is not None:
            self.on_first()


@dataclass
class BuildSummary:
    written: int = 0  # clips extracted in this run
    skipped: int = 0  # clips already in complete shards
    failed: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)
    shards: int = 0
    seconds: float = 0.0
    changed: int = 0  # of `written`: cached before, but their caption or source file changed since
    unknown: int = 0  # of `skipped`: cached by an older avflow, which kept no hash (a change cannot be seen)
    removed: int = 0  # cached clips no longer in the table (left out of the cache's ids)
    failed_list: Path | None = None  # failed.tsv: every failed clip with its file and reason

    def line(self) -> str:
        changed = f" ({self.changed} changed since cached)" if self.changed else ""
        listed = f" (listed in {self.failed_list})" if self.failed_list else ""
        return (
            f"{self.written} extracted{changed}, {self.skipped} already cached, {len(self.failed)} failed{listed}, "
            f"{self.shards} shards in {self.seconds:.1f} s"
        )


def _tsv_cell(value: str) -> str:
    return " ".join(str(value).split("\t")).replace("\n", " ").replace("\r", " ")


def _report_failures(folder: Path, summary: BuildSummary, records: list, rank: int, world_size: int,
                     replacing: bool) -> None:  # fmt: skip
    """Write every failed clip (id, file, reason) to failed.tsv (failed_r{rank}.tsv under torchrun) and name it in
    one note; a list from an earlier build goes when none failed. Every clip failed, none cached: an error."""
    from avflow.weights import atomic_write

    path = folder / ("failed.tsv" if world_size == 1 else f"failed_r{rank:04d}.tsv")
    if not summary.failed:
        path.unlink(missing_ok=True)
        return
    files = {str(r.id): _source_name(r) for r in records}
    rows = ["id\tfile\treason"] + [
        "\t".join(_tsv_cell(x) for x in (i, files.get(i, ""), reason)) for i, reason in summary.failed
    ]
    atomic_write(path, lambda f: f.write(("\n".join(rows) + "\n").encode()))
    summary.failed_list = path
    n, first = len(summary.failed), f"{summary.failed[0][0]}: {summary.failed[0][1]}"
    if not summary.written and not summary.skipped:
        raise ConfigError(
            f"{folder}: all {n} clips failed (first: {first}; all listed in {path}); "
            + ("the old cache is kept" if replacing else "nothing was extracted")
        )
    warnings.warn(MediaWarning(f"{folder}: {n} clips failed and were skipped (first: {first}); all listed in "
                               f"{path}"), stacklevel=3)  # fmt: skip


def _slice_hash(records: list, rank: int, world_size: int) -> str:
    h = hashlib.sha256()
    for r in records[rank::world_size]:
        h.update(f"{r.id}\0{record_hash(r)}\n".encode())
    return h.hexdigest()[:16]


def _finish_overwrite(folder: Path, manifest: dict, records: list, rank: int, world_size: int) -> bool:
    """Mark this rank's part of an --overwrite done; the rank that finds every part of these records done switches
    the manifest to the new generation (one atomic write), then deletes the old shards and the markers."""
    done = {"generation": manifest["generation"], "world_size": world_size}
    _write_json(folder / f".overwrite_r{rank:04d}.json", {**done, "slice": _slice_hash(records, rank, world_size)})
    for r in range(world_size):
        try:
            found = json.loads((folder / f".overwrite_r{r:04d}.json").read_text())
        except (OSError, ValueError):
            return False
        if found != {**done, "slice": _slice_hash(records, r, world_size)}:
            return False
    _write_json(folder / MANIFEST, manifest)
    for path in folder.glob(SHARD_GLOB):
        try:
            _, meta, _ = _scan_shard(path)
        except (FileNotFoundError, DamagedShardError):
            continue
        if meta.get("generation", "") != manifest["generation"]:
            path.unlink(missing_ok=True)
    for path in folder.glob(MARKER_GLOB):
        path.unlink(missing_ok=True)
    return True


def _drop_superseded(shards: list[tuple[Path, list[str], dict]], latest: dict[str, _Copy], again: set[str],
                     prefix: str) -> None:  # fmt: skip
    """Delete this rank's shards whose every clip has a newer copy (extracted again: `again`, or before); not one
    that drops clips (their older copies would count again)."""
    for path, ids, meta in shards:
        dead = all(i in again or latest[i].path != path for i in ids)
        if path.name.startswith(prefix) and dead and "dropped" not in meta:
            path.unlink(missing_ok=True)


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

    A cached clip is skipped while its `record_hash` (caption, source files) is unchanged, else extracted again
    (one from an older avflow has no hash: kept, with a note). Cached clips no longer in `records` are left out of
    the cache's ids (a note). `overwrite` extracts every clip again into a new generation of the cache; the old
    one stays the cache until every rank has finished, so a build that fails or is stopped leaves the old clips
    (rerun it with --overwrite to go on). Errors raised by the extractor for single clips (AvflowError, OSError,
    ValueError) are skipped, counted and listed in failed.tsv; when every clip fails and none is cached, that is a
    one-line error. The manifest of a new cache is written with its first shard, so a build that extracted nothing
    (all failed, Ctrl-C before the first shard) leaves none. A damaged shard is moved aside (`*.damaged`) with a
    note and its clips are extracted again. Ctrl-C writes the clips extracted so far before it stops the build.
    `stop_after` (tests) stops after that many shards, as a crash would.
    """
    start = time.perf_counter()
    folder, settings = Path(folder), _normal(settings)
    records = list(records)
    if not records:
        raise ConfigError(f"{folder}: no clips to extract (empty table?); nothing was built or deleted")
    old_manifest = check_manifest(folder, checksum, extractor_name, settings, overwrite)
    replacing = overwrite and old_manifest is not None
    if old_manifest is None or replacing:
        manifest = {"format": FORMAT, "weights_checksum": checksum, "extractor": extractor_name, "settings": settings,
                    "generation": _generation(old_manifest, checksum, extractor_name, settings)}  # fmt: skip
    else:
        manifest = dict(old_manifest)
    generation, old_generation = manifest.get("generation", ""), (old_manifest or {}).get("generation", "")
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    if replacing:
        (folder / f".overwrite_r{rank:04d}.json").unlink(missing_ok=True)
    shards = [  # of this build's generation (an older avflow's: of the old manifest's) and settings
        (path, ids, meta)
        for path, ids, meta in _scan_for_build(folder)
        if meta.get("generation", old_generation) == generation
        and _shard_matches(meta, manifest, checksum, extractor_name, settings)
    ]
    latest = _latest_copies(shards)
    table = {str(r.id) for r in records}
    manifest["removed"] = sorted(i for i, c in latest.items() if i not in table and c.path is not None)
    if old_manifest is not None and not replacing and manifest["removed"] != old_manifest.get("removed", []):
        _write_json(folder / MANIFEST, manifest)
    summary = BuildSummary(removed=len(manifest["removed"]))
    shard_meta = {"weights_checksum": checksum, "extractor": extractor_name, "settings": json.dumps(settings),
                  "generation": generation}  # fmt: skip
    new_cache = (lambda: _write_json(folder / MANIFEST, manifest)) if old_manifest is None else None
    writer = _ShardWriter(folder, rank, shard_meta, new_cache)
    mine, again, stopped = records[rank::world_size], set(), False
    try:
        for record in mine:
            clip_id, digest = str(record.id), record_hash(record)
            copy = latest.get(clip_id)
            copy = copy if copy is not None and copy.path is not None else None
            if copy is not None and copy.hash in (digest, None):
                summary.skipped += 1
                summary.unknown += copy.hash is None
                continue
            try:
                streams = extractor(record)
            except (AvflowError, OSError, ValueError) as exc:
                summary.failed.append((clip_id, first_line(exc)))
                if copy is not None:  # changed since cached: its old features must not stay in the cache
                    writer.drop(clip_id)
                continue
            writer.add(clip_id, streams, digest)
            summary.written += 1
            if copy is not None:
                summary.changed += 1
                again.add(clip_id)
            if len(writer) >= shard_size:
                writer.flush()
                if stop_after is not None and writer.shards >= stop_after:
                    stopped = True
                    break
    except KeyboardInterrupt:
        writer.flush()  # keep what was extracted: a rerun resumes after it
        if created and not writer.shards:  # nothing built: the folder this build made goes, if still empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    writer.flush()
    summary.shards, summary.seconds = writer.shards, time.perf_counter() - start
    _build_notes(folder, summary, rank)
    _report_failures(folder, summary, mine, rank, world_size, replacing)
    if replacing and not stopped:
        _finish_overwrite(folder, manifest, records, rank, world_size)
    elif again:
        _drop_superseded(shards, latest, again, writer.prefix)
    return summary


def _build_notes(folder: Path, summary: BuildSummary, rank: int) -> None:
    """Notes on clips left out (no longer in the table) and on clips whose change cannot be seen (no hash)."""
    if summary.removed and rank == 0:
        warnings.warn(Note(f"{folder}: {summary.removed} cached clips are no longer in the table: left out of the "
                           "cache (training does not see them; their features stay on disk until a rebuild with "
                           "--overwrite)"), stacklevel=3)  # fmt: skip
    if summary.unknown:
        warnings.warn(Note(f"{folder}: {summary.unknown} cached clips were built by an older avflow, which kept no "
                           "record of their captions and files: kept as they are (an edit since is not seen); "
                           "--overwrite extracts every clip again"), stacklevel=3)  # fmt: skip


class FeatureCache:
    """Read access to a cache folder: `ids`, `streams` ({stream: shape} over every clip of every shard; a clip may
    lack some, e.g. an audio-only clip has no `clip_f`), `stream_counts` ({stream: clips having it}),
    `load(id) -> {stream: Tensor}`.

    Reads only the shards' headers when opened, and only the shards of the manifest's generation (not those of an
    unfinished --overwrite); of a clip extracted twice, its newest copy; `left_out` are cached ids the last build's
    table no longer had (not in `ids`). With `expected_checksum`, a cache built from other weights raises
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
        shards, shapes = self._shards(manifest)
        removed = manifest.get("removed")
        removed = {str(i) for i in removed} if isinstance(removed, list) else set()
        copies = _latest_copies(shards)
        copies = {i: c for i, c in copies.items() if c.path is not None}  # not those dropped
        self.left_out = sorted(i for i in copies if i in removed)
        self.where: dict[str, Path] = {i: c.path for i, c in sorted(copies.items()) if i not in removed}
        self.streams: dict[str, tuple[int, ...]] = {}
        self.stream_counts: dict[str, int] = {}
        example: dict[str, str] = {}
        for path, _, _ in shards:
            for key, shape in shapes[path].items():
                clip_id, _, name = key.rpartition("/")
                if self.where.get(clip_id) != path:  # an older copy, or a clip left out
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

    def _shards(self, manifest: dict) -> tuple[list[tuple[Path, list[str], dict]], dict[Path, dict]]:
        """The shards of the manifest's generation, checked against it: [(path, ids, metadata)], {path: shapes}."""
        generation = manifest.get("generation", "")
        shards, shapes = [], {}
        for path in sorted(self.folder.glob(SHARD_GLOB)):
            ids, meta, found = _scan_shard(path, shapes=True)
            if meta.get("generation", generation) != generation:  # none: an older avflow's, the manifest's
                continue  # an unfinished --overwrite's, or a replaced build's not yet deleted
            shard_sum = meta.get("weights_checksum", "")
            if shard_sum != self.checksum:
                raise StaleCacheError(f"{path}: shard built with weights {shard_sum}, manifest says {self.checksum}")
            if not _shard_matches(meta, manifest, self.checksum, manifest.get("extractor", ""),
                                  manifest.get("settings")):  # fmt: skip
                raise StaleCacheError(
                    f"{path}: shard built with other extraction settings than the manifest's (an unfinished "
                    "--overwrite rebuild?); finish the rebuild (avflow cache build ... --overwrite)"
                )
            shards.append((path, ids, meta))
            shapes[path] = found
        return shards, shapes

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

    `encoders` is an `avflow.encoders.features.Encoders`, `vae` an `AudioVAE`, `mel` its `MelSpectrogram`;
    `lengths` the rows each video stream has for `duration` ({"clip_f": 64, "sync_f": 192} at 8 s), which a clip
    up to TOLERANCE_S short is padded to (its last rows repeated: the last frame, the last Synchformer segment; its
    audio with silence). A clip shorter than that fails (MediaError, so a build skips and lists it: its features
    would not match the other clips'); of a longer clip the first `duration` seconds are used. `longer` and
    `padded` list the ids of each kind extracted so far (`notes()` says them in a line).
    """

    def __init__(self, encoders, vae, mel, duration: float = 8.0, device: str | torch.device = "cpu",
                 lengths: dict[str, int] | None = None):  # fmt: skip
        self.encoders, self.vae, self.mel = encoders, vae.eval(), mel
        self.duration, self.device = duration, torch.device(device)
        self.lengths = dict(lengths or {})
        self.longer: list[str] = []
        self.padded: list[str] = []

    def notes(self) -> str:
        """What was done to clips of another length than `duration`, for the build's summary ("" if nothing)."""
        d, parts = self.duration, []
        if self.longer:
            parts.append(f"{len(self.longer)} clips longer than {d} s: their first {d} s used")
        if self.padded:
            parts.append(f"{len(self.padded)} clips up to {TOLERANCE_S} s shorter than {d} s: padded (audio with "
                         "silence, video with its last frame)")  # fmt: skip
        return "; ".join(parts)

    def _audio(self, source: Path) -> tuple[torch.Tensor, bool, bool]:
        """(1, samples) mono audio of exactly `duration`, whether it was padded, whether the file is longer."""
        from avflow.data.audio import read_audio

        sr = self.mel.sample_rate
        wave, _ = read_audio(source, sr, channels=1)  # (1, samples)
        n, have = round(self.duration * sr), wave.shape[1]
        if have < n - round(TOLERANCE_S * sr):
            raise MediaError(f"{source}: audio shorter than {self.duration} s ({have / sr:.2f} s)")
        if have < n:
            wave = torch.nn.functional.pad(wave, (0, n - have))
        return wave[:, :n], have < n, have > n + round(TOLERANCE_S * sr)

    def _video(self, video: Path, caption: str | None) -> tuple[dict[str, torch.Tensor], bool, bool]:
        """clip_f, sync_f (and text_f) of the first `duration` seconds, padded to `lengths`; whether they were
        padded, whether the video is longer."""
        from avflow.data.video import probe

        feats = self.encoders.encode_video(video, caption, self.duration)
        if feats.duration < self.duration - TOLERANCE_S:
            raise MediaError(f"{video}: video shorter than {self.duration} s ({feats.duration:.2f} s)")
        out, padded = {"clip_f": feats.clip_f[0], "sync_f": feats.sync_f[0]}, False
        for name, rows in self.lengths.items():
            x = out.get(name)
            if x is not None and len(x) != rows:
                padded |= len(x) < rows
                out[name] = _fit_rows(x, rows)
        if feats.text_f is not None:
            out["text_f"] = feats.text_f[0]
        return out, padded, probe(video).duration > self.duration + TOLERANCE_S

    @torch.no_grad()
    def __call__(self, record) -> dict[str, torch.Tensor]:
        world_video = record.world.with_suffix(".mp4") if getattr(record, "world", None) is not None else None
        video = record.video or (world_video if world_video is not None and world_video.is_file() else None)
        source = record.audio or video
        if source is None:
            raise AvflowError(f"clip {record.id}: no audio or video file")
        wave, padded, longer = self._audio(source)
        mel = self.mel(wave.to(self.device))  # (1, n_mels, frames)
        dist = self.vae.encode(mel)
        out = {"audio": dist.mean[0].transpose(0, 1), "audio_std": dist.std[0].transpose(0, 1)}  # (N, C)
        if video is not None:
            feats, video_padded, video_longer = self._video(video, record.caption)
            out.update(feats)
            padded, longer = padded or video_padded, longer or video_longer
        elif record.caption:
            out["text_f"] = self.encoders.encode_text([record.caption])[0]
        if padded:
            self.padded.append(str(record.id))
        if longer:
            self.longer.append(str(record.id))
        return out


def _fit_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    """`x` (T, D) cut or padded to `rows` rows; padding repeats its last rows (at most all of them)."""
    if len(x) >= rows:
        return x[:rows]
    missing = rows - len(x)
    if missing > len(x):
        raise MediaError(f"features of {len(x)} rows cannot be padded to {rows}")
    return torch.cat([x, x[len(x) - missing :]])
