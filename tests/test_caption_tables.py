"""Caption tables (`avflow cache build --source captions --table FILE`): CSV quoting and line breaks, column counts
and header names, empty captions, BOMs and encodings, table suffixes."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from avflow.data.datasets import read_audiocaps, read_captions, read_vggsound
from avflow.errors import ConfigError, MediaWarning, Note


def media(tmp_path: Path, *names: str) -> Path:
    folder = tmp_path / "clips"
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"\0")
    return folder


def table(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def read_quietly(path: Path, folder: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_captions(path, folder)


def captions(records) -> list[tuple[str, str | None]]:
    return [(r.id, r.caption) for r in records]


def test_a_quoted_line_break_stays_in_the_caption_and_later_lines_keep_their_numbers(tmp_path):
    folder = media(tmp_path, "a.wav", "b.wav")
    path = table(tmp_path, "c.csv", 'file,caption\r\na.wav,"café ambience\nsecond line"\r\nb.wav,x,y\r\nb.wav,rain\r\n')
    records, report = read_quietly(path, folder)
    assert captions(records) == [("a", "café ambience\nsecond line"), ("b", "rain")]
    assert [line for line, _ in report.bad_rows] == [4]  # the row after a two-line row starts on line 4


def test_extra_columns_are_a_bad_row_not_part_of_the_caption(tmp_path):
    folder = media(tmp_path, "a.wav", "b.wav", "c.wav")
    path = table(tmp_path, "c.csv", 'a.wav,a beep,train\nb.wav,"a beep, train"\nc.wav,rain,\n')
    with pytest.warns(MediaWarning, match=r"line 1: 3 fields, expected `file,caption` \(quote a caption with a comma"):
        records, report = read_captions(path, folder)
    assert captions(records) == [("b", "a beep, train"), ("c", "rain")]  # an empty trailing cell is no column
    assert (report.rows, len(report.bad_rows)) == (3, 1)


def test_a_tab_in_a_tsv_caption_is_a_bad_row(tmp_path):
    folder = media(tmp_path, "a.wav", "b.wav")
    path = table(tmp_path, "c.tsv", 'a.wav\ta\tbeep\nb.wav\t"quoted" noise\n')
    with pytest.warns(MediaWarning, match="line 1: 3 fields.*cannot hold a tab"):
        records, _ = read_captions(path, folder)
    assert captions(records) == [("b", '"quoted" noise')]


def test_columns_a_header_names_are_ignored_with_one_note_and_the_caption_is_found_by_name(tmp_path):
    folder = media(tmp_path, "a.wav", "b.wav", "c.wav")
    path = table(tmp_path, "c.csv", "split,caption,video\ntrain,a beep,a.wav\nval,noise,b.wav\nval,x,c.wav,more\n")
    with pytest.warns(Note) as notes:
        records, report = read_captions(path, folder)
    assert captions(records) == [("a", "a beep"), ("b", "noise")]
    said = [str(n.message) for n in notes if not isinstance(n.message, MediaWarning)]
    assert len(said) == 1 and "column split ignored" in said[0]
    assert report.bad_rows == [(4, "4 fields, the header names 3 (quote a caption with a comma)")]


def test_a_video_caption_header_and_an_excel_bom_header_are_headers(tmp_path):
    folder = media(tmp_path, "a.mp4")
    for name, text in (("v.csv", "video,caption\na.mp4,a beep\n"), ("bom.csv", "\ufefffile,caption\na.mp4,a beep\n")):
        records, report = read_quietly(table(tmp_path, name, text), folder)
        assert captions(records) == [("a", "a beep")] and (report.rows, report.missing) == (1, [])


def test_an_empty_caption_is_a_clip_without_one(tmp_path):
    folder = media(tmp_path, "a.wav", "b.wav", "c.mp4", "d.wav")
    path = table(tmp_path, "c.csv", 'file,caption\na.wav,\nb.wav,""\nc.mp4,  \nd.wav\n')
    with pytest.warns(MediaWarning, match="line 5: expected `file,caption`, got 1 field"):
        records, report = read_captions(path, folder)
    assert captions(records) == [("a", None), ("b", None), ("c", None)] and report.kept == 3


@pytest.mark.parametrize("name", ["caps.json", "caps.jsonl", "caps"])
def test_a_table_of_another_kind_is_refused_naming_the_accepted_suffixes(tmp_path, name):
    path = table(tmp_path, name, '[{"file":"a.wav","caption":"x"}]')
    with pytest.raises(ConfigError, match=r"a caption table is a \.csv, \.tsv or \.txt file") as info:
        read_captions(path, media(tmp_path, "a.wav"))
    assert "\n" not in str(info.value)


def test_quotes_a_csv_cannot_hold(tmp_path):
    folder = media(tmp_path, "a.wav", "b.wav")
    misplaced = table(tmp_path, "m.csv", 'a.wav,"quoted" dog barks\nb.wav,rain\n')
    with pytest.warns(MediaWarning, match="line 1: bad quoting"):
        records, _ = read_captions(misplaced, folder)
    assert captions(records) == [("b", "rain")]  # not `quoted dog barks`
    unclosed = table(tmp_path, "u.csv", 'a.wav,dog\nb.wav,"rain\na.wav,x\n')
    with pytest.raises(ConfigError, match="line 2: a quote opened on this row is never closed"):
        read_captions(unclosed, folder)


def test_encodings(tmp_path):
    folder = media(tmp_path, "a.wav")
    utf16 = table(tmp_path, "u.txt", "file\tcaption\na.wav\tcafé\n".encode("utf-16"))  # Excel's "Unicode text"
    assert captions(read_quietly(utf16, folder)[0]) == [("a", "café")]
    latin1 = table(tmp_path, "l.csv", "a.wav,dog\na.wav,café\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"line 2: not UTF-8 text \(byte 0xe9\); save the table as UTF-8"):
        read_captions(latin1, folder)


def test_vggsound_and_audiocaps_tables_read_the_same_way(tmp_path):
    folder = media(tmp_path, "aaa_000010.mp4", "bbb_000000.mp4", "91.wav", "92.wav")
    vgg = table(tmp_path, "vgg.csv", 'aaa,10,"dog, barking",train\nbbb,0,dog,barking,train\n')
    with pytest.warns(MediaWarning, match="line 2: expected ytid,start,label"):
        records, _ = read_vggsound(vgg, folder)
    assert captions(records) == [("aaa_000010", "dog, barking")]
    caps = '\ufeffaudiocap_id,youtube_id,start_time,caption\n91,abc,0,"a\nb"\n92,xyz,0,a dog, barking\n'
    with pytest.warns(MediaWarning, match="line 4: expected 4 fields, got 5"):
        records, _ = read_audiocaps(table(tmp_path, "ac.csv", caps), folder)
    assert captions(records) == [("91", "a\nb")]


def test_cli_refuses_a_json_table_in_one_line(tmp_path, capsys):
    from avflow.cli import main

    weights = []
    for flag in ("--clip-weights", "--synchformer-weights", "--vae-weights"):
        (tmp_path / f"{flag[2:]}.pth").write_bytes(b"not really weights")
        weights += [flag, str(tmp_path / f"{flag[2:]}.pth")]
    path = table(tmp_path, "caps.json", '[{"file":"a.wav","caption":"x"}]')
    args = ["cache", "build", str(tmp_path / "out"), "--source", "captions", "--table", str(path)]
    assert main([*args, "--media", str(media(tmp_path, "a.wav")), *weights]) == 2
    err = capsys.readouterr().err.strip()
    assert "caps.json: a caption table is a .csv, .tsv or .txt file" in err and len(err.splitlines()) == 1
