"""Aggregate per-seed metrics into mean ± std tables (Markdown, JSON) and a bar plot drawn with PIL.

The rule for an effect: an arm differs from the baseline on a metric only if |mean difference| > 2 × the pooled
seed standard deviation `sqrt((std_a² + std_b²) / 2)` (sample std over seeds, ddof = 1), with ≥ 2 seeds per arm.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

RULE = "an effect counts only if |mean difference| > 2 x pooled seed std, sqrt((std_a^2 + std_b^2) / 2), ddof=1"


def summarize(values: list[float]) -> dict:
    """Mean, sample std (ddof = 1; NaN for one seed) and count over the finite values."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    mean = float(v.mean()) if v.size else math.nan
    std = float(v.std(ddof=1)) if v.size > 1 else math.nan
    return {"mean": mean, "std": std, "n": int(v.size), "values": [float(x) for x in v]}


def aggregate(per_seed: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, dict]]:
    """{arm: [metrics of seed 0, seed 1, ...]} -> {arm: {metric: summary}}."""
    out = {}
    for arm, runs in per_seed.items():
        keys = sorted({k for r in runs for k, v in r.items() if v is None or isinstance(v, int | float)})
        out[arm] = {k: summarize([r.get(k, math.nan) for r in runs]) for k in keys}
    return out


def effect(a: dict, b: dict) -> dict:
    """b − a for two summaries, the 2σ threshold and whether the difference counts."""
    diff = b["mean"] - a["mean"]
    pooled = math.sqrt((a["std"] ** 2 + b["std"] ** 2) / 2) if a["n"] > 1 and b["n"] > 1 else math.nan
    threshold = 2.0 * pooled
    counts = bool(math.isfinite(diff) and math.isfinite(threshold) and abs(diff) > threshold)
    return {"diff": diff, "threshold": threshold, "counts": counts}


def compare(table: dict[str, dict[str, dict]], baseline: str, metrics: list[str]) -> dict[str, dict[str, dict]]:
    """Every other arm against `baseline` on each metric both have."""
    out = {}
    for arm, row in table.items():
        if arm == baseline or baseline not in table:
            continue
        out[arm] = {m: effect(table[baseline][m], row[m]) for m in metrics if m in row and m in table[baseline]}
    return out


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return "n/a"
    return f"{x:.4g}"


def to_markdown(result: dict) -> str:
    """The experiment's table (mean ± std over seeds), the comparisons with the baseline, and unavailable arms."""
    table, metrics = result["table"], result["metrics"]
    lines = [f"## {result['name']}", "", result.get("description", ""), ""]
    if result.get("claim"):
        lines += [f"Claim: {result['claim']}", ""]
    lines += [f"Seeds: {result['seeds']}; size: {result['size']}; steps: {result['steps']}.", ""]
    lines.append("| arm | params | " + " | ".join(metrics) + " |")
    lines.append("|---|---:|" + "---:|" * len(metrics))
    for arm, row in table.items():
        cells = []
        for m in metrics:
            s = row.get(m)
            cells.append(
                "n/a" if s is None or not math.isfinite(s["mean"]) else f"{_fmt(s['mean'])} ± {_fmt(s['std'])}"
            )
        params = result.get("params", {}).get(arm)
        lines.append(f"| {arm} | {params if params is not None else '?'} | " + " | ".join(cells) + " |")
    for arm in result.get("unavailable", {}):
        lines.append(f"| {arm} | – | " + " | ".join(["not available"] * len(metrics)) + " |")
    if result.get("unavailable"):
        lines += ["", "Not available: " + "; ".join(f"`{a}`: {r}" for a, r in result["unavailable"].items())]
    lines += ["", f"Effects vs `{result['baseline']}` ({RULE}):", ""]
    lines.append("| arm | metric | difference | 2σ threshold | counts |")
    lines.append("|---|---|---:|---:|---|")
    for arm, row in result["effects"].items():
        for m, e in row.items():
            lines.append(
                f"| {arm} | {m} | {_fmt(e['diff'])} | {_fmt(e['threshold'])} | {'yes' if e['counts'] else 'no'} |"
            )
    for note in result.get("notes", []):
        lines += ["", note]
    return "\n".join(lines) + "\n"


def _json_safe(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    return x


def to_json(result: dict) -> str:
    """Strict JSON (NaN -> null)."""
    return json.dumps(_json_safe(result), indent=1, allow_nan=False) + "\n"


PALETTE = [(66, 114, 196), (221, 132, 82), (85, 168, 104), (196, 78, 82), (129, 114, 179), (147, 120, 96)]


def plot_png(result: dict, path: str | Path, panel: tuple[int, int] = (260, 220)) -> Path:
    """One panel per metric: a bar per arm at its mean with a ± std error bar (PIL only)."""
    from PIL import Image, ImageDraw

    table, metrics = result["table"], result["metrics"]
    arms = list(table)
    pw, ph = panel
    cols = max(1, min(3, len(metrics)))
    rows = max(1, math.ceil(len(metrics) / cols))
    legend_h = 18 * (len(arms) + len(result.get("unavailable", {}))) + 30
    img = Image.new("RGB", (pw * cols, ph * rows + legend_h), "white")
    draw = ImageDraw.Draw(img)
    for i, m in enumerate(metrics):
        x0, y0 = (i % cols) * pw, (i // cols) * ph
        draw.text((x0 + 8, y0 + 4), m, fill="black")
        stats = [table[a].get(m, {"mean": math.nan, "std": math.nan}) for a in arms]
        tops = [
            abs(s["mean"]) + (s["std"] if math.isfinite(s["std"]) else 0) for s in stats if math.isfinite(s["mean"])
        ]
        scale_max = max(tops, default=1.0) or 1.0
        left, right, top, bottom = x0 + 40, x0 + pw - 10, y0 + 24, y0 + ph - 20
        has_neg = any(math.isfinite(s["mean"]) and s["mean"] < 0 for s in stats)
        zero = (top + bottom) / 2 if has_neg else bottom
        span = (zero - top) / scale_max
        draw.line([(left, zero), (right, zero)], fill="black")
        draw.line([(left, top), (left, bottom)], fill="black")
        draw.text((x0 + 2, top - 4), f"{scale_max:.3g}", fill="gray")
        width = (right - left) / max(1, len(arms))
        for j, s in enumerate(stats):
            if not math.isfinite(s["mean"]):
                continue
            bx0, bx1 = left + j * width + 0.15 * width, left + (j + 1) * width - 0.15 * width
            y = zero - s["mean"] * span
            draw.rectangle([bx0, min(y, zero), bx1, max(y, zero)], fill=PALETTE[j % len(PALETTE)])
            if math.isfinite(s["std"]):
                cx, e = (bx0 + bx1) / 2, s["std"] * span
                draw.line([(cx, y - e), (cx, y + e)], fill="black", width=2)
                draw.line([(cx - 5, y - e), (cx + 5, y - e)], fill="black")
                draw.line([(cx - 5, y + e), (cx + 5, y + e)], fill="black")
    ly = ph * rows + 6
    draw.text((8, ly), f"{result['name']}: mean ± std over {result['seeds']} seeds", fill="black")
    for j, a in enumerate(arms):
        y = ly + 18 * (j + 1)
        draw.rectangle([8, y + 2, 20, y + 12], fill=PALETTE[j % len(PALETTE)])
        draw.text((26, y), a, fill="black")
    for k, a in enumerate(result.get("unavailable", {})):
        draw.text((26, ly + 18 * (len(arms) + k + 1)), f"{a}: not available", fill="gray")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG")
    return path
