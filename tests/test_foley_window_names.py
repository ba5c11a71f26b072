"""A bad window/overlap pair says the values under the names they were given: `--window 2 --overlap 1` from the command
line (it printed bare numbers: `got 2.0, 1.0`), `window_s`, `overlap_s` from the Python API (`plan_windows`)."""

from __future__ import annotations

import math

import pytest

from avflow.cli import main
from avflow.errors import ConfigError
from avflow.pipelines.foley_windows import check_windows, plan_windows


def test_the_command_line_says_the_options_as_typed(tmp_path, capsys):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")  # checked before any media is read
    for command in (["t2a", "rain", "-o", str(tmp_path / "w1.wav")], ["foley", str(video)]):
        argv = [*command, "--duration", "3", "--window", "2", "--overlap", "1"]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "need window >= 0.64 s and 0 <= overlap < window / 2, got --window 2 --overlap 1" in err, err
        assert "\n" not in err
    assert main(["t2a", "rain", "--window", "inf", "-o", str(tmp_path / "w1.wav")]) == 2
    assert "got --window inf --overlap 1 (a window's frames" in capsys.readouterr().err


def test_the_python_api_says_its_argument_names():
    with pytest.raises(ConfigError) as err:
        plan_windows(3.0, 2.0, 1.0, 31.25)
    assert str(err.value).endswith("got window_s 2, overlap_s 1")
    with pytest.raises(ConfigError, match=r"got window_s nan, overlap_s 1 "):
        plan_windows(3.0, math.nan, 1.0, 31.25)
    with pytest.raises(ConfigError, match=r"numbers of seconds, got --window '8' --overlap 1"):
        check_windows("8", 1.0)
