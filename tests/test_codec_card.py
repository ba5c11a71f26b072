"""scripts/codec_card.py: the training curve of a run's metrics.jsonl as a markdown table, and its wall time."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def codec_card():
    spec = importlib.util.spec_from_file_location("codec_card", REPO / "scripts" / "codec_card.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_log(folder: Path) -> None:
    """Steps 25..1100 every 25 (loss = 1000 / step, 10 s per line), validation every 250, a 30 min pause at 600."""
    lines, t = [], 1000.0
    for step in range(25, 1101, 25):
        t += 10.0 + (1800.0 if step == 600 else 0.0)
        lines.append({"time": t, "step": step, "loss": 1000.0 / step, "lr": 1e-3, "samples_per_s": 4.0})
        if step % 250 == 0:
            lines.append({"time": t, "step": step, "val_loss": 2000.0 / step})
    folder.mkdir()
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


def test_card_rows_and_wall_time(tmp_path, capsys):
    write_log(tmp_path / "run")
    assert codec_card().main([str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "| step | train loss | val_loss | lr | samples/s | elapsed |"
    rows = [line.split(" | ") for line in out[2:5]]
    assert [r[0] for r in rows] == ["| 500", "| 1000", "| 1100"]  # every 500 steps and the last
    mean_500 = sum(1000.0 / s for s in range(25, 501, 25)) / 20  # the loss averaged over the steps of the row
    assert float(rows[0][1]) == pytest.approx(mean_500, rel=1e-3)
    assert float(rows[1][2]) == pytest.approx(2.0)  # the validation at step 1000
    assert rows[2][5] == "0 h 37 min |"  # 43 lines after the first, 10 s each, and the 30 min pause
    assert out[-1] == (
        "Wall time 0 h 37 min from the first log line (step 25) to the last (step 1100); 0 h 07 min without the 1 "
        "gap(s) over 10 min between lines; longest gap 0 h 30 min (before step 600)."
    )


def test_missing_log_is_one_line(tmp_path):
    with pytest.raises(SystemExit, match="no such file"):
        codec_card().main([str(tmp_path)])
