"""Training curves of a run for its card (docs/codecs.md): a markdown table every ~500 steps and the wall time.

    python scripts/codec_card.py runs/codec_video [--every 500]

Reads RUN/metrics.jsonl (written by the trainer: training lines with `loss`, `lr`, `samples_per_s`; validation lines
with `val_*`; sample lines with `sample/*`; every line has `step` and `time`). A row every `--every` steps and one at
the last step: the training loss averaged over the steps since the previous row, the latest validation and sample
values, the learning rate, the median throughput and the time elapsed since the first line. Below the table: the
wall time from the first to the last line, the same without gaps between lines longer than `--pause-min` minutes
(a run stopped and resumed), and the longest gap.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def read_log(path: Path) -> list[dict]:
    if not path.is_file():
        raise SystemExit(f"{path}: no such file (a run folder written by `avflow train` has one)")
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not any("loss" in r for r in lines):
        raise SystemExit(f"{path}: no training line with a loss")
    return lines


def _duration(seconds: float) -> str:
    minutes = int(round(seconds / 60))
    return f"{minutes // 60} h {minutes % 60:02d} min"


def curve_rows(lines: list[dict], every: int) -> list[dict]:
    """One row per `every` steps (and the last step) with the columns described in the module docstring."""
    train = [r for r in lines if "loss" in r]
    last = train[-1]["step"]
    ends = [s for s in range(every, last + 1, every)]
    ends += [last] if not ends or ends[-1] != last else []
    extra = sorted({k for r in lines for k in r if k.startswith(("val_", "sample/"))})
    t0, rows, prev = lines[0]["time"], [], 0
    for end in ends:
        window = [r for r in train if prev < r["step"] <= end]
        upto = [r for r in lines if r["step"] <= end]
        row = {"step": end, "train loss": float(np.mean([r["loss"] for r in window])) if window else None}
        for key in extra:
            seen = [r[key] for r in upto if key in r]
            row[key] = seen[-1] if seen else None
        row["lr"] = window[-1]["lr"] if window else None
        row["samples/s"] = float(np.median([r["samples_per_s"] for r in window])) if window else None
        row["elapsed"] = _duration(upto[-1]["time"] - t0)
        rows.append(row)
        prev = end
    return rows


def markdown(rows: list[dict]) -> str:
    cols = list(rows[0])

    def cell(v) -> str:
        return "–" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)

    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(cell(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(out)


def summary(lines: list[dict], pause_s: float) -> str:
    times = np.array([r["time"] for r in lines])
    gaps = np.diff(times)
    text = (
        f"Wall time {_duration(times[-1] - times[0])} from the first log line (step {lines[0]['step']}) to the last "
        f"(step {lines[-1]['step']})"
    )
    if gaps.size:
        k = int(np.argmax(gaps))
        text += (
            f"; {_duration(gaps[gaps <= pause_s].sum())} without the {int((gaps > pause_s).sum())} gap(s) over "
            f"{pause_s / 60:g} min between lines; longest gap {_duration(gaps[k])} (before step {lines[k + 1]['step']})"
        )
    return text + "."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="training output folder (has metrics.jsonl)")
    parser.add_argument("--every", type=int, default=500, help="steps between rows")
    parser.add_argument("--pause-min", type=float, default=10.0, help="gaps longer than this are pauses (minutes)")
    args = parser.parse_args(argv)
    if args.every < 1:
        parser.error("--every must be >= 1")
    lines = read_log(args.run / "metrics.jsonl")
    print(markdown(curve_rows(lines, args.every)))
    print()
    print(summary(lines, 60 * args.pause_min))
    return 0


if __name__ == "__main__":
    sys.exit(main())
