"""Regenerate the model card's metrics: the shipped model on the world's test split vs the split's own ground truth.

For each of the first N test clips: generate from its caption (seed = clip index) with the shipped model, and score
the generated clip and the ground-truth clip with the same model-free protocol (`clip_av_metrics`: onsets vs the
visual events detected in the frames, ILD at each sound's onset vs its object's side, ballistic-fit residual). A metric
that is undefined on a clip (blank video, no object tracked) counts as not measurable there.

    OMP_NUM_THREADS=1 python scripts/model_card_metrics.py --world /tmp/avdef/world [--n 32] [--steps 25] [--json F]

The world is `avflow world make --n 1200 --out DIR --duration 2 --seed 0` (what scripts/train_default.py makes).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from avflow.config import to_dict
from avflow.eval.clip_metrics import clip_av_metrics
from avflow.pipelines.default_model import load_default_model
from avflow.world.dataset import load_clip

TARGET_SYNC_MS = 62.0
TARGET_FOLLOWS = 0.5
MIN_MEASURABLE = 0.5  # fraction of clips on which a metric must be defined for its target to count


def values(measures: dict) -> dict[str, float]:
    """A row of plain floats (NaN where undefined) from `clip_av_metrics`' measures."""
    return {k: m.get() for k, m in measures.items()}


def summarize(rows: list[dict]) -> dict[str, float]:
    sync = np.abs(np.array([r.get("sync_offset_ms", np.nan) for r in rows], dtype=float))
    follows = np.array([r.get("follows_object", np.nan) for r in rows], dtype=float)
    phys = np.array([r.get("phys_residual_px", np.nan) for r in rows], dtype=float)
    return {
        "median_abs_sync_ms": float(np.nanmedian(sync)) if np.isfinite(sync).any() else float("nan"),
        "sync_measurable": float(np.isfinite(sync).mean()),
        "follows_object": float(np.nanmean(follows)) if np.isfinite(follows).any() else float("nan"),
        "follows_measurable": float(np.isfinite(follows).mean()),
        "median_phys_residual_px": float(np.nanmedian(phys)) if np.isfinite(phys).any() else float("nan"),
        "phys_measurable": float(np.isfinite(phys).mean()),
        "clips": float(len(rows)),
    }


def verdicts(gen: dict, gt: dict) -> dict[str, str]:
    """A target counts as met only when its metric is measurable on at least MIN_MEASURABLE of the clips."""

    def met(ok: bool, measurable: float) -> str:
        if measurable < MIN_MEASURABLE:
            return f"not met (measurable on only {measurable:.0%} of clips)"
        return "met" if ok else "not met"

    return {
        "sync": met(gen["median_abs_sync_ms"] < TARGET_SYNC_MS, gen["sync_measurable"]),
        "follows_object": met(gen["follows_object"] > TARGET_FOLLOWS, gen["follows_measurable"]),
        "physics": met(gen["median_phys_residual_px"] <= 2 * gt["median_phys_residual_px"], gen["phys_measurable"]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", default="/tmp/avdef/world")
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--cfg", type=float, default=None)
    p.add_argument("--model", default=None, help="exported model folder (default: the shipped one)")
    p.add_argument("--json", default=None, help="write the per-clip rows and summaries here")
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = [json.loads(x) for x in (Path(args.world) / "test" / "manifest.jsonl").read_text().splitlines() if x]
    rows = rows[: args.n]
    pipe = load_default_model(args.model)
    sampling = pipe.sampling.override(steps=args.steps, cfg_strength=args.cfg)
    gen_rows, gt_rows = [], []
    start = time.time()
    for i, row in enumerate(rows):
        clip = load_clip(Path(args.world) / "test" / row["id"])
        gt_rows.append(values(clip_av_metrics(clip.audio, row["sample_rate"], clip.frames, row["fps"])))
        out = pipe.generate(row["caption"], seed=i, duration=row["duration"], sampling=sampling)
        gen_rows.append(values(clip_av_metrics(out.audio.numpy(), out.sample_rate, out.frames.numpy(), out.fps)))
        print(f"{i + 1}/{len(rows)} {row['id']}: gen {gen_rows[-1]} | gt {gt_rows[-1]}", flush=True)
    gen, gt = summarize(gen_rows), summarize(gt_rows)
    result = {"generated": gen, "ground_truth": gt, "verdicts": verdicts(gen, gt),
              "sampling": to_dict(sampling),
              "seconds": round(time.time() - start, 1)}  # fmt: skip
    print(f"{'metric':<26}{'generated':>12}{'ground truth':>14}")
    for key in gen:
        print(f"{key:<26}{gen[key]:>12.3f}{gt[key]:>14.3f}")
    print(json.dumps(result["verdicts"]))
    if args.json:
        Path(args.json).write_text(json.dumps({**result, "rows": {"generated": gen_rows, "ground_truth": gt_rows}}))


if __name__ == "__main__":
    main()
