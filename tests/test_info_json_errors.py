"""`avflow info --json`: one line a file, a file that cannot be read too."""

from __future__ import annotations

import json

import numpy as np
import soundfile as sf

from avflow.cli import main


def test_json_has_a_line_for_each_failed_file(tmp_path, capsys):
    good, bad = tmp_path / "a.wav", tmp_path / "b.wav"
    sf.write(good, np.zeros((800, 1), np.float32), 8000)
    bad.write_bytes(b"not media at all")
    assert main(["info", "--json", str(good), str(bad)]) == 2
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["path"] for line in lines] == [str(good), str(bad)]
    assert "error" not in lines[0] and lines[1]["error"] and set(lines[1]) == {"path", "error"}
    assert main(["info", "--json", str(bad)]) == 2
    assert json.loads(capsys.readouterr().out)["path"] == str(bad)
