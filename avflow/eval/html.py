"""`avflow eval --report DIR`: an HTML page with the summary table and one timeline per clip (PNG, drawn with Pillow).

A timeline shows, over the clip's duration: the visual events (flashes orange, cuts and full-frame flashes grey,
contacts cyan, with the side they are on), the audio onset detector's curve and its onsets (taller = newer sound),
the pairs matched at the measured offset (green lines), and the ILD at each matched onset (up = left louder; green
when the sound is on the visual side, red when not, grey when undecided).
"""

from __future__ import annotations

import html
import os
import re
import shutil
import tempfile
from pathlib import Path
from urllib.parse import quote

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from avflow.errors import OutputError
from avflow.eval.clip import ClipMeasures
from avflow.eval.report import FD_NOTE, frechet_rows, headline

WIDTH, HEIGHT, LEFT, RIGHT = 960, 300, 70, 20
ROWS = {"visual": (40, 100), "audio": (130, 190), "ild": (215, 275)}  # (top, bottom) px
COLOURS = {"flash": (245, 150, 40), "global": (170, 170, 170), "contact": (60, 200, 220), "truth": (200, 120, 255)}
GREEN, RED, GREY, INK, FAINT = (60, 170, 80), (220, 60, 60), (150, 150, 150), (30, 30, 30), (225, 225, 225)


def _x(t: float, duration: float) -> float:
    return LEFT + (WIDTH - LEFT - RIGHT) * float(np.clip(t / max(duration, 1e-9), 0.0, 1.0))


def draw_timeline(title: str, details: ClipMeasures) -> Image.Image:
    """One clip's timeline (see the module docstring)."""
    img = Image.new("RGB", (WIDTH, HEIGHT), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    dur = details.duration
    d.text((8, 6), title, fill=INK, font=font)
    for name, (top, bottom) in ROWS.items():
        d.rectangle([LEFT, top, WIDTH - RIGHT, bottom], outline=FAINT)
        d.text((6, (top + bottom) // 2 - 6), name, fill=INK, font=font)
    step = 0.5 if dur <= 5 else 1.0 if dur <= 12 else 5.0
    for t in np.arange(0.0, dur + 1e-9, step):
        x = _x(t, dur)
        d.line([x, HEIGHT - 22, x, HEIGHT - 18], fill=INK)
        d.text((x - 8, HEIGHT - 16), f"{t:g}s", fill=INK, font=font)
    ev, on, match = details.events, details.onsets, details.sync
    top, bottom = ROWS["visual"]
    if ev is not None:
        if ev.curve.size and ev.curve.max() > 0:
            fps = len(ev.curve) / dur
            for k, a in enumerate(ev.curve):
                if a > 0:
                    h = (bottom - top) * min(1.0, a / max(ev.curve.max(), 1e-9))
                    d.rectangle([_x(k / fps, dur), bottom - h, _x((k + 1) / fps, dur), bottom], fill=(250, 225, 190))
        for t, kind, az in zip(ev.times, ev.kinds, ev.azimuth):
            x = _x(t, dur)
            d.line([x, top + 12, x, bottom], fill=COLOURS.get(str(kind), INK), width=2)
            if np.isfinite(az):
                d.text((x - 3, top + 1), "L" if az < 0 else "R", fill=INK, font=font)
    top, bottom = ROWS["audio"]
    if on is not None:
        if on.curve_rise.size:
            scale = max(float(on.curve_rise.max()), 1e-9)
            xs = [_x(t, dur) for t in on.curve_times]
            ys = [bottom - (bottom - top) * min(1.0, r / scale) for r in on.curve_rise]
            d.line(list(zip(xs, ys)), fill=GREY, width=1)
        for t, nov in zip(on.times, on.novelty):
            x = _x(t, dur)
            d.line([x, bottom, x, bottom - (bottom - top) * (0.3 + 0.7 * nov)], fill=(40, 90, 220), width=2)
    if match is not None and ev is not None and on is not None:
        for v, a in match.pairs:
            d.line([_x(ev.times[v], dur), ROWS["visual"][1], _x(on.times[a], dur), ROWS["audio"][0]], fill=GREEN)
    for s in details.sides:  # events read away from a paired onset (energy rise, late attack): a grey link
        if s.anchor != "onset":
            d.line([_x(s.visual_time, dur), ROWS["visual"][1], _x(s.audio_time, dur), ROWS["audio"][0]], fill=GREY)
    top, bottom = ROWS["ild"]
    mid = (top + bottom) / 2
    d.line([LEFT, mid, WIDTH - RIGHT, mid], fill=FAINT)
    for s in details.sides:
        if not s.cue.ild_db.defined:
            continue
        x = _x(s.audio_time, dur)
        h = (bottom - top) / 2 * float(np.clip(s.cue.ild_db.value / 6.0, -1.0, 1.0))
        colour = GREY if s.agrees is None else GREEN if s.agrees else RED
        d.rectangle([x - 3, min(mid, mid - h), x + 3, max(mid, mid - h)], fill=colour)
    d.text((WIDTH - 200, ROWS["ild"][0] + 2), "ILD ±6 dB, up = left louder", fill=GREY, font=font)
    return img


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"


PLAIN_NAME = re.compile(r"[a-z0-9_-]{1,64}")


def png_name(index: int, cid: str) -> str:
    """A timeline's file name: the id itself where it is a short plain name (lower-case letters, digits, ``_`` and
    ``-``), else ``clip.<index>.png`` (ids with folders, dots, capitals or other characters, or long ones: ``sub/x``
    and ``sub__x`` were both ``sub__x.png``, and a long id passed the file-name limit). A plain name holds no dot and
    one case, so the two kinds never meet, even on a file system that ignores case."""
    return f"{cid}.png" if PLAIN_NAME.fullmatch(cid) else f"clip.{index:04d}.png"


OWN_PNG = re.compile(r"[a-z0-9_-]{1,64}\.png|clip\.[0-9]{4,}\.png")  # the names `png_name` gives


def _own_pngs(timelines: Path) -> list[Path]:
    """The files in ``timelines`` that a report wrote: plain files (no links) with a `png_name` name."""
    return [p for p in timelines.iterdir() if OWN_PNG.fullmatch(p.name) and p.is_file() and not p.is_symlink()]


def timelines_problem(timelines: Path) -> str | None:
    """Why ``timelines`` is not a report's own folder of timelines that `write_report` may replace, or None (it is
    missing, or a real folder holding only `png_name` PNGs): anything else in it is not the report's to delete."""
    if not timelines.exists() and not timelines.is_symlink():
        return None
    if timelines.is_symlink() or not timelines.is_dir():
        return f"{timelines} is not a report's timelines folder (a link or a file)"
    others = len(list(timelines.iterdir())) - len(_own_pngs(timelines))
    return f"{timelines} holds {others} file(s) or folder(s) that are not a report's timelines" if others else None


def _table(header: list[str], rows: list[list[str]]) -> str:
    """An HTML table of text cells (escaped)."""

    def cells(row: list[str], tag: str) -> str:
        return "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in row)

    return f"<table><tr>{cells(header, 'th')}</tr>" + "".join(f"<tr>{cells(r, 'td')}</tr>" for r in rows) + "</table>"


def _items(title: str, pairs: dict[str, str]) -> list[str]:
    """A heading and a list of ``key: text`` lines (escaped), or nothing for no pairs."""
    if not pairs:
        return []
    items = "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in pairs.items())
    return [f"<h2>{html.escape(title)}</h2><ul>{items}</ul>"]


def _reference_section(result: dict) -> list[str]:
    """With a reference folder: which it is, how many clips paired with it, the Fréchet distances with their set
    sizes and caveat, the clips measured without a reference and the references that could not be read."""
    if not result.get("ref_dir"):
        return []
    parts = [f"<h2>Reference</h2><p>{html.escape(str(result['ref_dir']))}: {result['n_paired']} of "
             f"{result['n_clips']} clips paired with a reference clip.</p>"]  # fmt: skip
    fds = frechet_rows(result)
    if fds:
        rows = [[k, _fmt(v), note] for k, v, note in fds]
        parts += [_table(["distance", "value", "note"], rows), f"<p class='why'>{html.escape(FD_NOTE)}</p>"]
    parts += _items("Clips without a reference", result.get("unpaired", {}))
    parts += _items("Unreadable references", result.get("ref_skipped", {}))
    return parts


def write_report(result: dict, out_dir: str | Path) -> Path:
    """``out_dir/index.html`` with the summary table, the reference set's measures and a timeline per clip
    (``out_dir/timelines/``, named by `png_name`); ``result`` is :func:`avflow.eval.report.evaluate`'s with
    ``keep_details=True``. The report is built in a hidden folder inside ``out_dir`` and moved in place when whole,
    replacing a previous report's ``index.html`` and ``timelines/`` (no stale timeline stays: its own PNGs are
    deleted, by name; a ``timelines/`` holding anything else is an OutputError up front, `timelines_problem`); a
    failure leaves ``out_dir`` as it was (and removes it when this call made it)."""
    out = Path(out_dir)
    made = out  # the outermost folder this call makes (removed again on a failure)
    while not made.parent.exists():
        made = made.parent
    made = None if out.exists() else made
    problem = timelines_problem(out / "timelines")
    if problem is not None:
        raise OutputError(f"{problem}; pick another report folder")
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".report-", dir=out))
    try:
        _build(result, work)
        if (out / "timelines").is_dir():  # only its own PNGs (`timelines_problem`), never rmtree
            for png in _own_pngs(out / "timelines"):
                png.unlink()
            (out / "timelines").rmdir()
        os.replace(work / "timelines", out / "timelines")
        os.replace(work / "index.html", out / "index.html")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if made is not None and not (out / "index.html").exists():
            shutil.rmtree(made, ignore_errors=True)
    return out / "index.html"


def _build(result: dict, out: Path) -> None:
    """Write the page and its timelines into ``out`` (see `write_report`)."""
    (out / "timelines").mkdir()
    rows = []
    for k, row in result["summary"].items():
        cells = [k, f"{int(row['n_defined'])}/{result['n_clips']}", _fmt(row.get("median"))]
        cells += [_fmt(row.get("median_abs"))] + [
            f"{row[c]:.0%}" if c in row else "–" for c in ("within_20ms", "within_62ms", "confident")
        ]
        rows.append(cells)
    parts = [
        "<!doctype html><meta charset='utf-8'><title>avflow eval</title>",
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 10px;text-align:right}"
        "td:first-child{text-align:left}.why{color:#777}</style>",
        f"<h1>avflow eval: {html.escape(str(result['pred_dir']))}</h1>",
        f"<p>{html.escape(headline(result))}. Offsets: + = audio late. Per metric: the clips where it is defined, the"
        " median, and for offsets the median |offset| and the fractions within ±20 and ±62 ms and with confidence"
        " ≥ 0.5.</p>",
        _table(["metric", "defined", "median", "median |x|", "±20 ms", "±62 ms", "confident"], rows),
    ]
    parts += _reference_section(result)
    parts += _items("Skipped (not measured)", result["skipped"])
    parts.append("<h2>Clips</h2>")
    sources = result.get("sources", {})
    for index, (cid, details) in enumerate(result.get("details", {}).items(), start=1):
        name = png_name(index, cid)
        values = result["clips"][cid]
        conf = result["confidence"].get(cid, {})
        m = details.sync_offset_ms
        offset = f"{m.value:+.1f} ms (confidence {m.confidence:.2f})" if m.defined else m.reason
        draw_timeline(f"{cid}   offset {offset}", details).save(out / "timelines" / name)
        shown = ", ".join(f"{k} = {v:.4g}" + (f" (confidence {conf[k]:.2f})" if k in conf else "")
                          for k, v in values.items())  # fmt: skip
        why = "; ".join(f"{k}: {r}" for k, r in result["undefined"][cid].items())
        source = f"<p class='why'>{html.escape(sources[cid])}</p>" if cid in sources else ""
        parts.append(f"<h3>{html.escape(cid)}</h3>{source}<p>{html.escape(shown)}</p>"
                     + (f"<p class='why'>undefined: {html.escape(why)}</p>" if why else "")
                     + f"<img src='timelines/{html.escape(quote(name))}' alt='{html.escape(cid)}' "
                       f"width='{WIDTH}'>")  # fmt: skip
    (out / "index.html").write_text("\n".join(parts) + "\n")
