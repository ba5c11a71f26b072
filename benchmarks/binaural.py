"""Video-to-binaural on the world's test split: the dual-branch flow model against three baselines, over seeds.

Methods (all 16 kHz, [left, right]):
- model: `BinauralPipeline` (shipped weights, Euler steps, CFG) from the silent video;
- mono_copy: the oracle mono mix (L + R) / 2 copied to both ears;
- pan: the oracle mono, constant-power amplitude panned to the detected source position;
- mono+spatialiser: the oracle mono rendered by `avflow.pipelines.spatialise` (ITD + head shadow). No mono generator
  is trained for the world, so the ground-truth mono mix stands in for "mono generation": an oracle, favouring it;
- codec_roundtrip: the ground truth through the feature codec (the ceiling of the model's audio representation).
Metrics: avflow.eval (ΔILD dB, ΔITD µs, IPD error rad, STFT and ENV distances, follows-object, |sync| ms against
frame contacts). Prints sampling seconds per clip (the baseline in the same run: the spatialiser's seconds per clip)
and writes the metric table as JSON.

    .venv/bin/python benchmarks/binaural.py --data data/world_binaural --seeds 3 --json docs/binaural_metrics.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table  # noqa: E402

from avflow.config import to_dict  # noqa: E402
from avflow.eval.report import EvalClip, clip_metrics  # noqa: E402
from avflow.models.binaural import MODEL_FILE, SAMPLING  # noqa: E402
from avflow.pipelines.binaural import BinauralPipeline  # noqa: E402
from avflow.pipelines.spatialise import amplitude_pan, spatialise  # noqa: E402
from avflow.train.binaural_world import clip_ids  # noqa: E402
from avflow.world.dataset import load_clip  # noqa: E402

METRICS = {
    "delta_ild_db": "ΔILD dB ↓",
    "delta_itd_us": "ΔITD µs ↓",
    "ipd_error_rad": "IPD err rad ↓",
    "stft_dist": "STFT ↓",
    "env_dist": "ENV ↓",
    "follows_object": "follows ↑",
    "sync_offset_abs_ms": "|sync| ms ↓",
}
SPATIAL = ("delta_ild_db", "delta_itd_us", "ipd_error_rad", "follows_object")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="world dataset folder (uses its test split)")
    parser.add_argument("--model", default=str(MODEL_FILE))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--limit", type=int, default=0, help="test clips (0: all)")
    parser.add_argument("--steps", type=int, default=None, help="Euler steps (default: the model's)")
    parser.add_argument("--cfg", type=float, default=None, help="cfg_strength (default: the model's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="write the table here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    pipe = BinauralPipeline.from_assets(args.model, sampling=SAMPLING.override(steps=args.steps, cfg_strength=args.cfg))
    stems = clip_ids(args.data, "test", args.limit)
    per_seed: dict[str, list[dict[str, list[float]]]] = {}
    seconds = {"model": [], "mono+spatialiser": []}
    for seed in range(args.seeds):
        for index, stem in enumerate(stems):
            clip = load_clip(stem)
            ref, fps, sr = clip.audio, clip.meta["fps"], clip.meta["sample_rate"]
            mono = ref.mean(0)
            t0 = time.perf_counter()
            preds = {"model": pipe.generate(clip.frames, fps, ref.shape[1], seed=seed * 100003 + index)}
            seconds["model"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            preds["mono+spatialiser"] = spatialise(mono, sr, clip.frames, fps)
            seconds["mono+spatialiser"].append(time.perf_counter() - t0)
            preds["pan"] = amplitude_pan(mono, sr, clip.frames, fps)
            preds["mono_copy"] = np.stack([mono, mono])
            with torch.no_grad():
                z = pipe.codec.encode(torch.from_numpy(ref)[None])
                preds["codec_roundtrip"] = pipe.codec.decode(z, ref.shape[1])[0].numpy()
            ref_clip = EvalClip(stem.name, ref, sr, clip.frames, fps, clip.meta)
            for name, audio in preds.items():
                if seed > 0 and name != "model":  # deterministic methods: one pass is every seed
                    continue
                m = clip_metrics(EvalClip(stem.name, audio, sr, clip.frames, fps, clip.meta), ref_clip)
                runs = per_seed.setdefault(name, [])
                while len(runs) <= seed:
                    runs.append({k: [] for k in METRICS})
                for k in METRICS:
                    runs[seed][k].append(m.get(k, float("nan")))
        print(f"seed {seed} done", file=sys.stderr)

    table, rows = {}, []
    for name, runs in per_seed.items():
        # per-seed means over clips; a metric undefined on every clip (follows-object of identical ears) counts as 0
        means = {k: [float(np.nanmean(r[k])) if np.isfinite(r[k]).any() else 0.0 for r in runs] for k in METRICS}
        table[name] = {
            k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "seeds": len(v)} for k, v in means.items()
        }
        rows.append({"method": name} | {METRICS[k]: f"{table[name][k]['mean']:.3f}±{table[name][k]['std']:.3f}"
                                        for k in METRICS})  # fmt: skip
    print_table(rows, f"world test split: {len(stems)} clips x {args.seeds} seeds (model) / 1 pass (deterministic)")
    ref = table["model"]
    verdict = {}
    for base in ("mono_copy", "pan", "mono+spatialiser"):
        better = {k: (ref[k]["mean"] > table[base][k]["mean"]) if k == "follows_object"
                  else (ref[k]["mean"] < table[base][k]["mean"]) for k in SPATIAL}  # fmt: skip
        verdict[base] = better
    sync_ok = all(ref["sync_offset_abs_ms"]["mean"] <= table[b]["sync_offset_abs_ms"]["mean"] + 5.0 for b in verdict)
    goal = all(all(v.values()) for v in verdict.values()) and sync_ok
    title = f"seconds per clip (CPU, {args.threads} thread(s), {pipe.sampling.steps} steps + CFG + decode)"
    print_table([{"method": k, "seconds/clip": f"{np.mean(v):.3f}"} for k, v in seconds.items()], title)
    print(f"goal (model beats all three baselines on {', '.join(SPATIAL)}; |sync| within 5 ms): "
          f"{'MET' if goal else 'NOT MET'}")  # fmt: skip
    for base, v in verdict.items():
        print(f"  vs {base}: " + ", ".join(f"{k} {'better' if b else 'worse'}" for k, b in v.items()))
    if args.json:
        out = {"clips": len(stems), "seeds": args.seeds, "sampling": to_dict(pipe.sampling),
               "seconds_per_clip": {k: float(np.mean(v)) for k, v in seconds.items()}, "metrics": table,
               "model_better_than": verdict, "sync_within_5ms": sync_ok, "goal_met": goal}  # fmt: skip
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
