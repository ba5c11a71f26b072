"""Caption tables whose file names are in another Unicode normal form than the files on disk (a table written on macOS
spells "é" as "e" + U+0301, NFD; the file may be NFC): the names look the same, so they are matched after NFC
normalization on both sides (they were counted as missing files)."""

from __future__ import annotations

import unicodedata
import warnings
from pathlib import Path

from avflow.data.datasets import read_captions

NFC = unicodedata.normalize("NFC", "café")
NFD = unicodedata.normalize("NFD", "café")


def read(tmp_path: Path, table_text: str, *files: str):
    folder = tmp_path / "clips"
    for name in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"\0")
    table = tmp_path / "captions.csv"
    table.write_text(table_text, encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_captions(table, folder)


def test_a_name_in_another_normal_form_finds_its_file(tmp_path):
    assert NFC != NFD
    records, report = read(tmp_path / "a", f"{NFD}.wav,an espresso machine\n", f"{NFC}.wav")
    assert [(r.audio.name, r.caption) for r in records] == [(f"{NFC}.wav", "an espresso machine")]
    assert report.missing == []
    records, report = read(tmp_path / "b", f"{NFC}.wav,rain\n", f"{NFD}.wav")  # the other way round
    assert [r.audio.name for r in records] == [f"{NFD}.wav"] and report.missing == []


def test_folders_and_names_without_extension_are_matched_too(tmp_path):
    records, report = read(tmp_path, f"{NFD}/{NFD}_1,a\n{NFD}_2,b\n", f"{NFC}/{NFC}_1.flac", f"{NFC}_2.mp4")
    assert sorted(r.audio.relative_to(tmp_path / "clips").as_posix() for r in records) == [
        f"{NFC}/{NFC}_1.flac",
        f"{NFC}_2.mp4",
    ]
    assert report.missing == [] and records[1].video is not None


def test_one_file_named_in_both_forms_is_one_clip_and_a_missing_file_is_still_missing(tmp_path):
    records, report = read(tmp_path, f"{NFC}.wav,a\n{NFD}.wav,b\nnot_there.wav,c\n", f"{NFC}.wav")
    assert [r.caption for r in records] == ["a"]
    assert [line for line, _ in report.bad_rows] == [2] and "already used on line 1" in report.bad_rows[0][1]
    assert [clip for clip, _ in report.missing] == ["not_there"]
