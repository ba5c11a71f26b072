"""Dataset readers: media folders with caption tables (VGGSound, AudioCaps, generic), world datasets, feature caches.

Readers return `(records, report)`: one `ClipRecord` per usable row; bad rows and missing files are reported,
skipped and counted in the `ReadReport` (never a crash). A missing table or folder is a one-line ConfigError.
"""

from __future__ import annotations

import csv
import io
import json
import unicodedata
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from avflow.data.cache import FeatureCache
from avflow.data.file_kinds import VIDEO_FILE_SUFFIXES
from avflow.errors import AvflowError, ConfigError, MediaWarning, MissingPathError, Note

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


TABLE_SUFFIXES = (".csv", ".tsv", ".txt")  # caption tables; a `.txt` is read like a `.csv` (tab-separated if its
# first line has a tab, as Excel's "Unicode text" export is)


QUOTING_HINT = 'quote a whole caption, doubling a quote inside it ("")'


@dataclass(frozen=True, kw_only=True)
class TableRow:
    """One row of a caption table: the line it starts on (a quoted field may span lines), its cells, and why it
    could not be parsed (`error`, cells then empty)."""

    line: int
    cells: list[str]
    error: str | None = None


def _decode_table(path: Path) -> str:
    """The table's text: UTF-8 (a leading BOM, as Excel writes, dropped) or UTF-16 with a BOM; other bytes are a
    one-line error naming the line rather than captions with replacement characters."""
    data = path.read_bytes()
    encoding = "utf-16" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: line {line}: not {encoding.removesuffix('-sig').upper()} text (byte 0x{data[exc.start]:02x}); "
            "save the table as UTF-8"
        ) from None


def _open_table(path: Path) -> tuple[list[TableRow], str]:
    """The rows of a CSV/TSV table that hold something, and its delimiter.

    A `.tsv` (or a table whose first line has a tab) has no quoting: captions keep their `"`. In a CSV a quoted
    field may hold commas, doubled quotes and line breaks; a quote misplaced is a row with an `error`, a quote never
    closed (it would swallow the rest of the table) a one-line ConfigError.
    """
    if not path.is_file():
        raise MissingPathError(f"{path}: caption table not found")
    if path.suffix.lower() not in TABLE_SUFFIXES:
        got = f"not {path.suffix}" if path.suffix else "no suffix"
        accepted = f"{', '.join(TABLE_SUFFIXES[:-1])} or {TABLE_SUFFIXES[-1]}"
        raise ConfigError(f"{path}: a caption table is a {accepted} file (CSV or tab-separated), {got}")
    text = _decode_table(path)
    first = text.split("\n", 1)[0]
    tabs = path.suffix.lower() == ".tsv" or "\t" in first
    delimiter = "\t" if tabs else ","
    options = {"quoting": csv.QUOTE_NONE} if tabs else {"strict": True}
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, **options)
    rows, end = [], 0
    while True:
        start = end + 1
        try:
            cells = next(reader)
        except StopIteration:
            return rows, delimiter
        except csv.Error as exc:
            if "end of data" in str(exc):
                raise ConfigError(f"{path}: line {start}: a quote opened on this row is never closed") from None
            rows.append(TableRow(line=start, cells=[], error=f"bad quoting ({exc}): {QUOTING_HINT}"))
        else:
            if any(c.strip() for c in cells):
                rows.append(TableRow(line=start, cells=cells))
        end = reader.line_num


def _check_dir(folder: Path) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingPathError(f"{folder}: media folder not found")
    return folder


def _find(folder: Path, stems: list[str], exts: tuple[str, ...]) -> Path | None:
    for stem in stems:
        for ext in exts:
            p = folder / f"{stem}{ext}"
            if p.is_file():
                return p
    return None


class MediaNames:
    """The files of a media folder by the names a table gives them, matched after NFC normalization where a name as
    written is not there: a table written on macOS spells an accented letter decomposed (NFD) while the file on disk
    may be composed (NFC), or the other way round, and the two names look the same. A folder is listed once, when a
    name in it is first not found as written."""

    def __init__(self, root: Path):
        self.root = root
        self._listings: dict[Path, dict[str, Path]] = {}

    def file(self, name: str) -> Path | None:
        """The file `name` (relative to the root; it may hold folders) names, else None."""
        path, parts = self.root, Path(name).parts
        for part in parts:
            path = self._entry(path, part)
            if path is None:
                return None
        return path if parts and path.is_file() else None

    def first(self, stem: str, exts: tuple[str, ...]) -> Path | None:
        """The first of `stem` + each of `exts` that names a file, else None."""
        return next((p for ext in exts if (p := self.file(stem + ext)) is not None), None)

    def _entry(self, folder: Path, part: str) -> Path | None:
        direct = folder / part
        if direct.exists():
            return direct
        if folder not in self._listings:
            try:
                self._listings[folder] = {_nfc(p.name): p for p in folder.iterdir()}
            except OSError:  # not a folder, or unreadable: nothing in it is found
                self._listings[folder] = {}
        return self._listings[folder].get(_nfc(part))


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _number(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise ValueError(f"negative or NaN start {text!r}")
    return value


def _extra_cells(cells: list[str], width: int) -> bool:
    """Whether a row has something past its table's `width` columns (empty trailing cells, as spreadsheets pad
    rows with, are not)."""
    return any(c.strip() for c in cells[width:])


def read_vggsound(table: str | Path, media_dir: str | Path, split: str | None = None):
    """VGGSound CSV rows `ytid,start,label,split` (no header); files `{ytid}_{start:06d}.mp4` (or `{ytid}_{start}`)."""
    table, media = Path(table), _check_dir(media_dir)
    report, records = ReadReport(str(table)), []
    rows, _ = _open_table(table)
    for line, row, error in ((r.line, r.cells, r.error) for r in rows):
        if not error and row[0].strip().lower() in ("ytid", "# ytid"):
            continue
        report.rows += 1
        try:
            if error:
                raise ValueError(error)
            if len(row) < 3 or _extra_cells(row, 4):
                raise ValueError(
                    f"expected ytid,start,label[,split], got {len(row)} fields (quote a label with a comma)"
                )
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
    rows, _ = _open_table(table)
    header = [h.strip().lower() for h in rows[0].cells] if rows else []
    need = ("audiocap_id", "youtube_id", "start_time", "caption")
    if any(n not in header for n in need):
        raise ConfigError(f"{table}: expected an AudioCaps header {','.join(need)}, got {','.join(header)}")
    col = {n: header.index(n) for n in need}
    for line, row, error in ((r.line, r.cells, r.error) for r in rows[1:]):
        report.rows += 1
        try:
            if error:
                raise ValueError(error)
            if len(row) < len(header) or _extra_cells(row, len(header)):
                raise ValueError(f"expected {len(header)} fields, got {len(row)} (quote a caption with a comma)")
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


FILE_COLUMNS = ("id", "file", "path", "filename", "file_name", "name", "video", "audio", "clip")
CAPTION_COLUMNS = ("caption", "captions", "text", "description")


@dataclass(frozen=True, kw_only=True)
class CaptionColumns:
    """Where a captions table keeps each row's file and caption; `width` columns are named (header) or expected."""

    file: int = 0
    caption: int = 1
    width: int = 2
    ignored: tuple[str, ...] = ()  # other columns a header names


def caption_columns(cells: list[str]) -> CaptionColumns | None:
    """The columns a header row names, or None for a data row. A header starts with a file column name
    (`file`, `path`, `video`, ...) or names a `caption` column; the caption is its `caption`/`text`/`description`
    column (else the second), the file its first file column (else the first other)."""
    names = [c.strip().lower() for c in cells]
    if names[0] not in FILE_COLUMNS and not any(n in ("caption", "captions") for n in names):
        return None
    caption = next((i for i, n in enumerate(names) if n in CAPTION_COLUMNS), 1)
    file = next((i for i, n in enumerate(names) if n in FILE_COLUMNS and i != caption), 0 if caption else 1)
    named = [i for i, n in enumerate(names) if n]
    width = max(file + 1, caption + 1, named[-1] + 1 if named else 0)
    ignored = tuple(cells[i].strip() for i in named if i not in (file, caption))
    return CaptionColumns(file=file, caption=caption, width=width, ignored=ignored)


def _caption_row_problem(cells: list[str], columns: CaptionColumns, delimiter: str, header: bool) -> str | None:
    """Why a captions row cannot be used (too few or too many cells, no file name), or None."""
    sep = "<TAB>" if delimiter == "\t" else delimiter
    if len(cells) <= max(columns.file, columns.caption):
        return f"expected `file{sep}caption`, got {len(cells)} field{'s' * (len(cells) != 1)}"
    if _extra_cells(cells, columns.width):
        hint = "a tab-separated caption cannot hold a tab" if delimiter == "\t" else "quote a caption with a comma"
        table = f"the header names {columns.width}" if header else f"expected `file{sep}caption`"
        return f"{len(cells)} fields, {table} ({hint})"
    if not cells[columns.file].strip():
        return "empty file name"
    return None


def read_captions(table: str | Path, media_dir: str | Path, *, unique_ids: bool = True):
    """A generic text-audio (or video) set: rows `file_or_id<TAB or ,>caption`, an optional header line
    (`file,caption[,other columns]`: see `caption_columns`). An empty caption is a clip without one (None: no text
    feature, the learned empty condition); a caption is kept as written (a quoted one may span lines).
    `unique_ids`: a row whose clip id (file name without folder and extension) an earlier row has is a bad row, as a
    cache keyed by id needs; False keeps both (`dog/001.mp4` and `cat/001.mp4`), for a file that stores rows."""
    table, media = Path(table), _check_dir(media_dir)
    report, records = ReadReport(str(table)), []
    rows, delimiter = _open_table(table)
    header = caption_columns(rows[0].cells) if rows and not rows[0].error else None
    columns = header or CaptionColumns()
    if header is not None and header.ignored:
        names = ", ".join(header.ignored)
        warnings.warn(Note(f"{table}: column{'s' * (len(header.ignored) > 1)} {names} ignored (only the file "
                           "and caption columns are read)"), stacklevel=2)  # fmt: skip
    seen: dict[str, int] = {}  # clip id (NFC) -> line
    names = MediaNames(media)
    for row in rows[header is not None :]:
        report.rows += 1
        problem = row.error or _caption_row_problem(row.cells, columns, delimiter, header is not None)
        if problem:
            report.bad_rows.append((row.line, problem))
            continue
        name, caption = row.cells[columns.file].strip(), row.cells[columns.caption].strip() or None
        path = (names.file(name) if Path(name).suffix else None) or names.first(name, AUDIO_EXTS + VIDEO_EXTS)
        if path is None:
            report.missing.append((Path(name).stem, str(media / name)))
            continue
        clip_id = Path(name).stem
        if unique_ids and _nfc(clip_id) in seen:  # ids are file names without folder and extension: one would
            # replace the other in a cache keyed by id
            report.bad_rows.append((row.line, f"{name}: clip id {clip_id!r} already used on line "
                                              f"{seen[_nfc(clip_id)]}"))  # fmt: skip
            continue
        seen[_nfc(clip_id)] = row.line
        is_video = path.suffix.lower() in VIDEO_EXTS
        records.append(ClipRecord(clip_id, caption, video=path if is_video else None, audio=path))
    report.kept = len(records)
    return records, report.warn()


def read_world(root: str | Path, split: str = "train"):
    """A world dataset split (`root/split/manifest.jsonl`); each record's `world` is the clip stem."""
    folder = Path(root) / split
    manifest = folder / "manifest.jsonl"
    if not manifest.is_file():
        raise MissingPathError(f"{manifest}: world manifest not found")
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
