"""Dataset readers: media folders with caption tables (VGGSound, AudioCaps, generic), world datasets, feature caches.

Readers return `(records, report)`: one `ClipRecord` per usable row; bad rows and missing files are reported,
skipped and counted in the `ReadReport` (never a crash). A missing table or folder is a one-line ConfigError.
"""

from __future__ import annotations

import csv
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from avflow.data.cache import FeatureCache
from avflow.data.file_kinds import VIDEO_FILE_SUFFIXES
from avflow.errors import AvflowError, ConfigError, MediaWarning

VIDEO_EXTS = VIDEO_FILE_SUFFIXES
AUDIO_EXTS = (".wav", ".flac", ".mp3", ".ogg")
CONDITION_STREAMS = ("clip_f", "sync_f", "text_f")


@dataclass
class ClipRecord:
    id: str
    caption: str | None = None
    video: Path | None = None
    audio: Path | None = None
    world: Path | None = None  # world clip stem (`{stem}.wav/.npz/.json`)
    start: float = 0.0
    split: str | None = None


@dataclass
class ReadReport:
    source: str
    rows: int = 0
    kept: int = 0
    bad_rows: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)
    missing: list[tuple[str, str]] = field(default_factory=list)  # (clip id, what was looked for)

    def summary(self) -> str:
        s = f"{self.source}: {self.kept}/{self.rows} rows kept, {len(self.bad_rows)} bad rows, "
        s += f"{len(self.missing)} missing files"
        if self.bad_rows:
            s += f" (first bad row: line {self.bad_rows[0][0]}: {self.bad_rows[0][1]})"
        if self.missing:
            s += f" (first missing: {self.missing[0][1]})"
        return s

    def warn(self) -> ReadReport:
        if self.bad_rows or self.missing:
            warnings.warn(MediaWarning(self.summary()), stacklevel=3)
        return self


def _open_table(path: Path) -> list[list[str]]:
    if not path.is_file():
        raise ConfigError(f"{path}: caption table not found")
    text = path.read_text(encoding="utf-8", errors="replace")
    delimiter = "\t" if path.suffix.lower() == ".tsv" or ("\t" in text.split("\n", 1)[0]) else ","
    if delimiter == "\t":  # tab-separated: no quoting, so a caption starting with `"` is kept as written
        return [line.split("\t") if line else [] for line in text.splitlines()]
    return list(csv.reader(text.splitlines(), delimiter=delimiter))  # CSV: quoted fields may hold commas


def _check_dir(folder: Path) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: media folder not found")
    return folder


def _find(folder: Path, stems: list[str], exts: tuple[str, ...]) -> Path | None:
    for stem in stems:
        for ext in exts:
            p = folder / f"{stem}{ext}"
            if p.is_file():
                return p
    return None


def _number(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise ValueError(f"negative or NaN start {text!r}")
    return value


def read_vggsound(table: str | Path, media_dir: str | Path, split: str | None = None):
    """VGGSound CSV rows `ytid,start,label,split` (no header); files `{ytid}_{start:06d}.mp4` (or `{ytid}_{start}`)."""
    table, media = Path(table), _check_dir(media_dir)
    report, records = ReadReport(str(table)), []
    for line, row in enumerate(_open_table(table), 1):
        if not row or row[0].strip().lower() in ("ytid", "# ytid"):
            continue
        report.rows += 1
        try:
            if len(row) < 3:
                raise ValueError(f"expected ytid,start,label[,split], got {len(row)} fields")
            ytid, start, label = row[0].strip(), int(_number(row[1])), row[2].strip()
            row_split = row[3].strip() if len(row) > 3 else None
            if not ytid or not label:
                raise ValueError("empty ytid or label")
        except ValueError as exc:
            report.bad_rows.append((line, str(exc)))
            continue
        if split is not None and row_split != split:
            report.rows -= 1
            continue
        stems = [f"{ytid}_{start:06d}", f"{ytid}_{start}", ytid]
        video = _find(media, stems, VIDEO_EXTS)
        if video is None:
            report.missing.append((f"{ytid}_{start:06d}", str(media / f"{stems[0]}.mp4")))
            continue
        records.append(ClipRecord(f"{ytid}_{start:06d}", label, video=video, start=0.0, split=row_split))
    report.kept = len(records)
    return records, report.warn()


def read_audiocaps(table: str | Path, media_dir: str | Path):
    """AudioCaps CSV with header `audiocap_id,youtube_id,start_time,caption`; audio files named by audiocap_id,
    `{youtube_id}_{start_time}`, `Y{youtube_id}` or youtube_id (wav/flac/mp3/ogg, or a video)."""
    table, media = Path(table), _check_dir(media_dir)
    report, records = ReadReport(str(table)), []
    rows = _open_table(table)
    header = [h.strip().lower() for h in rows[0]] if rows else []
    need = ("audiocap_id", "youtube_id", "start_time", "caption")
    if any(n not in header for n in need):
        raise ConfigError(f"{table}: expected an AudioCaps header {','.join(need)}, got {','.join(header)}")
    col = {n: header.index(n) for n in need}
    for line, row in enumerate(rows[1:], 2):
        if not row:
            continue
        report.rows += 1
        try:
            if len(row) < len(header):
                raise ValueError(f"expected {len(header)} fields, got {len(row)}")
            cap_id, ytid = row[col["audiocap_id"]].strip(), row[col["youtube_id"]].strip()
            start, caption = int(_number(row[col["start_time"]])), row[col["caption"]].strip()
            if not cap_id or not ytid or not caption:
                raise ValueError("empty id or caption")
        except ValueError as exc:
            report.bad_rows.append((line, str(exc)))
            continue
        path = _find(media, [cap_id, f"{ytid}_{start}", f"Y{ytid}", ytid], AUDIO_EXTS + VIDEO_EXTS)
        if path is None:
            report.missing.append((cap_id, str(media / f"{cap_id}.wav")))
            continue
        is_video = path.suffix.lower() in VIDEO_EXTS
        records.append(ClipRecord(cap_id, caption, video=path if is_video else None, audio=path))
    report.kept = len(records)
    return records, report.warn()


def read_captions(table: str | Path, media_dir: str | Path):
    """A generic text-audio (or video) set: rows `file_or_id<TAB or ,>caption`, an optional header line."""
    table, media = Path(table), _check_dir(media_dir)
    report, records = ReadReport(str(table)), []
    seen: dict[str, int] = {}  # clip id -> line
    for line, row in enumerate(_open_table(table), 1):
        if not row or (line == 1 and row[0].strip().lower() in ("id", "file", "path", "filename", "name")):
            continue
        report.rows += 1
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            report.bad_rows.append((line, f"expected `file<sep>caption`, got {len(row)} fields or empty values"))
            continue
        name, caption = row[0].strip(), ",".join(row[1:]).strip()
        direct = media / name
        path = direct if direct.suffix and direct.is_file() else _find(media, [name], AUDIO_EXTS + VIDEO_EXTS)
        if path is None:
            report.missing.append((Path(name).stem, str(direct)))
            continue
        clip_id = Path(name).stem
        if clip_id in seen:  # ids are file names without folder and extension: one would silently replace the other
            report.bad_rows.append((line, f"{name}: clip id {clip_id!r} already used on line {seen[clip_id]}"))
            continue
        seen[clip_id] = line
        is_video = path.suffix.lower() in VIDEO_EXTS
        records.append(ClipRecord(clip_id, caption, video=path if is_video else None, audio=path))
    report.kept = len(records)
    return records, report.warn()


def read_world(root: str | Path, split: str = "train"):
    """A world dataset split (`root/split/manifest.jsonl`); each record's `world` is the clip stem."""
    folder = Path(root) / split
    manifest = folder / "manifest.jsonl"
    if not manifest.is_file():
        raise ConfigError(f"{manifest}: world manifest not found")
    report, records = ReadReport(str(manifest)), []
    for line, text in enumerate(manifest.read_text().splitlines(), 1):
        if not text.strip():
            continue
        report.rows += 1
        try:
            entry = json.loads(text)
            clip_id = str(entry["id"])
        except (ValueError, KeyError, TypeError) as exc:
            report.bad_rows.append((line, f"bad manifest line ({type(exc).__name__}: {exc})"))
            continue
        stem = folder / clip_id
        missing = [s for s in (".wav", ".npz", ".json") if not stem.with_suffix(s).is_file()]
        if missing:
            report.missing.append((clip_id, str(stem.with_suffix(missing[0]))))
            continue
        records.append(
            ClipRecord(clip_id, entry.get("caption"), world=stem, audio=stem.with_suffix(".wav"), split=split)
        )
    report.kept = len(records)
    return records, report.warn()


class AudioClips(Dataset):
    """Raw mono waveforms of fixed length from records (pads or crops); unreadable files give `ok = False`."""

    def __init__(self, records: list[ClipRecord], sample_rate: int = 16000, duration: float = 8.0):
        self.records, self.sample_rate, self.samples = records, sample_rate, round(sample_rate * duration)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        from avflow.data.audio import read_audio

        r = self.records[i]
        wave, ok = torch.zeros(self.samples), True
        try:
            audio, _ = read_audio(r.audio or r.video, self.sample_rate, channels=1)
            n = min(self.samples, audio.shape[1])
            wave[:n] = audio[0, :n]
        except (AvflowError, OSError, RuntimeError):
            ok = False
        return {"id": r.id, "audio": wave, "caption": r.caption or "", "ok": ok}


class CachedFeatures(Dataset):
    """Items `{"streams": {"audio": (N, C)}, "cond": {clip_f, sync_f, text_f, ...}}` from a feature cache."""

    def __init__(
        self, cache: FeatureCache | str | Path, ids: list[str] | None = None, streams: tuple[str, ...] = ("audio",)
    ):
        self.cache = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
        self.ids = list(ids) if ids is not None else self.cache.ids
        missing = [i for i in self.ids if i not in self.cache]
        if missing:
            raise ConfigError(
                f"{self.cache.folder}: {len(missing)} requested ids are not cached (first {missing[0]!r})"
            )
        self.stream_names = streams

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        item = self.cache.load(self.ids[i])
        streams = {k: v for k, v in item.items() if k in self.stream_names}
        return {"streams": streams, "cond": {k: v for k, v in item.items() if k not in self.stream_names}}


def loader(dataset: Dataset, batch_size: int, workers: int = 2, shuffle: bool = True, seed: int = 0):
    """A DataLoader with worker processes, pinned memory on CUDA and persistent workers."""
    from torch.utils.data import DataLoader

    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
        drop_last=True,
        generator=torch.Generator().manual_seed(seed),
    )
