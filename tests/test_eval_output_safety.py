"""`avflow eval --json / --report` never replace or delete an input clip, a file of its own the report did not write,
or each other, and empty paths are errors: all refused in one line before any clip is measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_eval_folders import _wav

from avflow.cli import main as cli_main
from avflow.errors import OutputError
from avflow.eval import report


@pytest.fixture
def unmeasured(monkeypatch):
    """Fails the test if a clip is measured (the refusals come first)."""

    def evaluate(*args, **kwargs):
        raise AssertionError("clips were measured before the refusal")

    monkeypatch.setattr(report, "evaluate", evaluate)


def _refused(argv: list[str], capsys, match: str) -> None:
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err


def test_the_json_never_replaces_a_clip_or_its_sidecar(tmp_path, capsys, unmeasured):
    folder = tmp_path / "clips"
    _wav(folder / "c.wav")
    (folder / "c.json").write_text('{"note": "mine"}')
    for suffix in (".npz", ".wav", ".json"):  # a world clip: its json is the ground truth
        (folder / f"w{suffix}").write_text("{}" if suffix == ".json" else "x")
    for out in ("c.json", "w.json"):
        _refused(["eval", str(folder), "--json", str(folder / out), "-y", "--quiet"], capsys, "an input file")
    _refused(["eval", str(folder / "c.wav"), "--json", str(folder / "c.json"), "-y"], capsys, "an input file")
    assert json.loads((folder / "c.json").read_text()) == {"note": "mine"} and (folder / "w.json").read_text() == "{}"


def test_a_report_folder_apart_from_the_clips_only(tmp_path, capsys, unmeasured):
    folder = tmp_path / "clips"
    _wav(folder / "a.wav")
    _wav(folder / "timelines" / "b.wav")
    (folder / "index.html").write_text("x")
    for where, how in ((folder, "is the CLIPS"), (folder / "sub", "is in the CLIPS"), (tmp_path, "holds the CLIPS")):
        _refused(["eval", str(folder), "--report", str(where), "-y"], capsys, how)
    other = _wav(tmp_path / "other" / "a.wav").parent
    _refused(["eval", str(other), "--ref", str(folder), "--report", str(folder / "r"), "-y"], capsys, "is in the --ref")
    assert (folder / "timelines" / "b.wav").is_file() and (folder / "index.html").read_text() == "x"


def test_a_report_replaces_only_its_own_timelines(tmp_path, capsys, unmeasured):
    out = tmp_path / "report"
    (out / "timelines").mkdir(parents=True)
    (out / "index.html").write_text("old")
    (out / "timelines" / "old.png").write_bytes(b"png")
    (out / "timelines" / "b.mp4").write_bytes(b"mine")
    _refused(["eval", str(_wav(tmp_path / "a.wav")), "--report", str(out), "-y"], capsys, "not a report's timelines")
    assert (out / "timelines" / "b.mp4").read_bytes() == b"mine"


def test_write_report_deletes_no_file_it_did_not_write(tmp_path):
    from avflow.eval import html

    out = tmp_path / "report"
    (out / "timelines" / "keep").mkdir(parents=True)
    (out / "timelines" / "old.png").write_bytes(b"png")
    result = report.evaluate(_wav(tmp_path / "a.wav"), keep_details=True)
    with pytest.raises(OutputError, match="not a report's timelines"):
        html.write_report(result, out)
    assert (out / "timelines" / "keep").is_dir() and (out / "timelines" / "old.png").is_file()


@pytest.mark.parametrize(
    "json_at, report_at",
    [("o.json", "o.json"), ("r/timelines/o.json", "r"), ("o.json", "o.json/r")],
)
def test_the_json_and_the_report_are_apart(tmp_path, capsys, unmeasured, json_at, report_at):
    clip = _wav(tmp_path / "a.wav")
    _refused(["eval", str(clip), "--json", str(tmp_path / json_at), "--report", str(tmp_path / report_at)], capsys,
             "overlap")  # fmt: skip


@pytest.mark.parametrize("argv, what", [
    (["", "--quiet"], "CLIPS: empty path"),
    (["a.wav", "--report", ""], "--report: empty path"),
    (["a.wav", "--json", ""], "--json: empty path"),
    (["a.wav", "--ref", ""], "--ref: empty path"),
])  # fmt: skip
def test_empty_paths_are_errors(tmp_path, monkeypatch, capsys, unmeasured, argv, what):
    monkeypatch.chdir(tmp_path)
    _wav(Path("a.wav"))
    _refused(["eval", *argv], capsys, what)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav"]
