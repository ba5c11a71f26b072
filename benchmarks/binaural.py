"""Video-to-binaural v2 on a test split rendered with the KEMAR HRTF (no baseline is built on that head; a model may
be trained on either): the dual-branch model (one export per training seed) against the baselines, per-event
measures, one- and two-object clips apart, and the measures' noise floor.

Tasks: 1 = silent video -> binaural; 2 = video + the true mono (L + R) / 2 -> binaural.
Methods (16 kHz, [left, right]):
- model: `BinauralPipeline` with each --weights file (a training seed), from the video (task 1) or with the mono; a
  cue-stream model (`--representation cues` of scripts/train_binaural_v2.py) places a mono in both tasks: in task 1
  the baselines' mono (the default model's v2a output), so there it is compared on the same sound;
- mono_copy, pan (`amplitude_pan` from the tracked object, anchored as the spatialiser), spatialiser (`spatialise`)
  of a mono: the true mono in task 2; in task 1 the mono downmix of the default joint model's v2a output for the
  video (the shipped `avflow/assets/default_model`, one draw per seed);
- model_video_clock (--model-video-clock): the model reading the video on the video's clock (`anchoring` off),
  where it reads it on the given mono's clock by default (`BinauralPipeline.anchoring`);
- spatialiser_video_clock: the spatialiser without its anchoring on the sound's onsets (`Anchoring(enabled=False)`:
  the tracked position on the video's clock, as before 2026-12-05), for the before/after in one run;
- noise_floor: the ground truth against a re-render of the same scene with another ambience seed;
- codec_ceiling: the ground truth through the binaural codec (encode, decode) with its cues carried onto the mono
  (`transfer_cues`, as the model's task-2 output is made): what a perfect generator of the codec's latents would get;
- cue_ceiling: the ground truth's interaural cue streams (`avflow.data.interaural_cues`) rendered onto the true
  mono: what a perfect generator of the cue streams would get.
Measures (`avflow.eval.binaural_events`): per-event ILD error dB, ITD error µs, side accuracy, follows-object, and in
task 2 the onset error of the output's mix against the given mono (ms). Per seed the mean over clips; then mean ± std
over seeds. The goal: the model beats every baseline on the four spatial measures by more than 2 seed std.

Real recordings (`--real DIR`, task 2 only): clips of `scripts/make_real_sound_set.py` (real sounds on known sides,
the audio up to 250 ms off the video), the true mono given to every method. Per event with a visual side, at its
sound's first onset (the clip's json): is the louder channel on that side (ILD of the energy the event adds over
[onset − 3 ms, onset + 50 ms)), and the side ILD and ITD give together (`avflow.eval.side.event_cues`, as `avflow
eval` reads sides). The "recording" row scores the clip's own stereo track: the measures' ceiling.

    python benchmarks/binaural.py --world-test data/binaural_kemar --make-test          # 48 one- + 48 two-object clips
    python benchmarks/binaural.py --world-test data/binaural_kemar --tasks 1 2 --json docs/binaural_metrics.json \
        --weights runs/binaural_v2/seed{0,1,2}/binaural.safetensors
    python scripts/make_real_sound_set.py --out data/real_sound --n 100 --seed 1     # then, task 2 on it:
    python benchmarks/binaural.py --real data/real_sound --json real.json \
        --weights runs/binaural_v2/seed{0,1,2}/binaural.safetensors      # without --weights: the baselines only
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ArgumentParser, check_output, non_negative_int, positive_int, print_table, run_main  # noqa: E402

from avflow.data import interaural_cues  # noqa: E402
from avflow.eval.binaural_events import MEASURES, event_measures  # noqa: E402
from avflow.eval.side import CueConfig, event_cues, ild_at  # noqa: E402
from avflow.models.binaural import CUE_STREAM, SAMPLING  # noqa: E402
from avflow.pipelines.binaural import BinauralPipeline, v2a_mono  # noqa: E402
from avflow.pipelines.cue_transfer import transfer_cues  # noqa: E402
from avflow.pipelines.spatialise import Anchoring, amplitude_pan, spatialise  # noqa: E402
from avflow.weights import atomic_write  # noqa: E402
from avflow.world.dataset import load_clip, make_clip, read_manifest, rerender_audio, write_clip  # noqa: E402

TEST_SEED = 9_000_000  # clip seeds TEST_SEED + i: disjoint from every `avflow world make` split of a run seed < 9
LOWER_IS_BETTER = {"ild_error_db": True, "itd_error_us": True, "side_accuracy": False, "follows_object": False,
                   "onset_error_ms": True}  # fmt: skip
VIDEO_CLOCK = Anchoring(enabled=False)  # the spatialiser before its anchoring on the sound's onsets


def make_test_split(out: Path, n_one: int, n_two: int) -> None:
    """`out/test`: n_one one-object and n_two two-object clips of the default world's format (64 x 64, 16 fps, 2 s,
    16 kHz) rendered with the KEMAR HRTF, with a manifest (`n_objects` per row)."""
    from avflow.world.dataset import with_overrides
    from avflow.world.scene import WorldConfig

    split = out / "test"
    split.mkdir(parents=True, exist_ok=True)
    base = WorldConfig(width=64, height=64, fps=16, duration=2.0, sample_rate=16000, hrtf="kemar")
    rows = []
    for i in range(n_one + n_two):
        k = 1 if i < n_one else 2
        cid = f"kemar_{k}obj_{i:03d}"
        clip = make_clip(TEST_SEED + i, with_overrides(base, min_objects=k, max_objects=k), cid)
        write_clip(clip, split / cid)
        rows.append({"id": cid, "duration": 2.0, "fps": 16, "sample_rate": 16000, "caption": clip.meta["caption"],
                     "n_events": len(clip.meta["events"]), "n_objects": k})  # fmt: skip
    (split / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(rows)} KEMAR clips to {split}", file=sys.stderr)


def frames_v2a_mono(joint, frames: np.ndarray, fps: float, n: int, seed: int) -> np.ndarray:
    """The default joint model's v2a sound for the frames (`v2a_mono` of a lossless temporary video), (n,)."""
    from avflow.data.media import write_video

    with tempfile.TemporaryDirectory() as tmp:
        return v2a_mono(write_video(Path(tmp) / "v.mp4", frames, fps, crf=0), n, seed, joint=joint)


def codec_roundtrip(codec, audio: np.ndarray) -> np.ndarray:
    """[left, right] (2, S) through the binaural codec: (2, S) float32."""
    wav = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None]  # (1, 2, S)
    with torch.no_grad():
        out = codec.decode(codec.encode(wav), length=wav.shape[-1])  # (1, 2, S)
    return out[0].numpy()


def run_clip(stem: Path, tasks: list[str], pipes: list, joint, seeds: list[int], results: dict, codec=None,
             clock_pipes: list | None = None) -> None:  # fmt: skip
    """Score every method on one clip into `results[task][group][method][measure][seed]` (a list over clips)."""
    clip = load_clip(stem)
    ref, fps, sr, meta = clip.audio, float(clip.meta["fps"]), int(clip.meta["sample_rate"]), clip.meta
    group = "one" if len(meta["objects"]) == 1 else "multi"

    def score(task: str, method: str, seed: int, audio: np.ndarray, mono: np.ndarray | None = None) -> None:
        m = event_measures(audio, ref, sr, clip.frames, fps, meta, mono=mono)
        cell = results.setdefault(task, {}).setdefault(group, {}).setdefault(method, {})
        for k, v in m.items():
            cell.setdefault(k, {}).setdefault(seed, []).append(v.value if v.defined else np.nan)

    floor = rerender_audio(meta, ambience_seed=int(meta["seed"]) + 1)
    true_mono = ref.mean(0)
    for task in tasks:
        score(task, "noise_floor", 0, floor, true_mono if task == "2" else None)
        if task == "2" and codec is not None:
            score(task, "codec_ceiling", 0, transfer_cues(true_mono, codec_roundtrip(codec, ref)), true_mono)
        if task == "2":
            cues = interaural_cues.encode(ref, CUE_STREAM)
            score(task, "cue_ceiling", 0, interaural_cues.decode(true_mono, cues, CUE_STREAM), true_mono)
        for s, pipe, clock_pipe in zip(seeds, pipes, clock_pipes or [None] * len(pipes)):
            mono = true_mono if task == "2" else frames_v2a_mono(joint, clip.frames, fps, ref.shape[1], s)
            given = mono if task == "2" else None
            placed = mono if pipe.needs_mono else given
            out = pipe.generate(clip.frames, fps, ref.shape[1], mono=placed, seed=s, sampling=pipe.sampling)
            score(task, "model", s, out, given)
            if clock_pipe is not None and placed is not None:
                other = clock_pipe.generate(clip.frames, fps, ref.shape[1], mono=placed, seed=s,
                                                sampling=pipe.sampling)  # fmt: skip
                score(task, "model_video_clock", s, other, given)
            score(task, "mono_copy", s, np.stack([mono, mono]), given)
            score(task, "pan", s, amplitude_pan(mono, sr, clip.frames, fps), given)
            score(task, "spatialiser", s, spatialise(mono, sr, clip.frames, fps), given)
            score(task, "spatialiser_video_clock", s, spatialise(mono, sr, clip.frames, fps, VIDEO_CLOCK), given)


LOUDER = CueConfig(window_s=0.05)  # the louder channel over [onset - 3 ms, onset + 50 ms)
REAL_COUNTS = ("louder_right", "louder_wrong", "side_right", "side_wrong", "events")


def real_event_sides(audio: np.ndarray, sample_rate: int, meta: dict) -> dict[str, int]:
    """Counts over the events with a visual side of a real-sound clip (its json `meta`): louder channel on that side
    or on the other (ILD > 0 = left louder), and the side of `event_cues` (read until the next event's sound at
    most) right or wrong; neither when undefined."""
    events = sorted(meta["events"], key=lambda e: e["audio_time"])
    starts = np.array([e["audio_time"] + e["onsets"][0] for e in events])
    ends = np.append(starts[1:], starts[-1] + 1.0) if len(starts) else starts
    sided = [i for i, e in enumerate(events) if e.get("side") in ("left", "right")]
    counts = dict.fromkeys(REAL_COUNTS, 0)
    cues = event_cues(audio, sample_rate, starts[sided], ends=ends[sided])
    for i, cue in zip(sided, cues):
        side = events[i]["side"]
        ild = ild_at(audio, sample_rate, float(starts[i]), LOUDER)
        if ild.defined and ild.value != 0:
            counts["louder_right" if (ild.value > 0) == (side == "left") else "louder_wrong"] += 1
        if cue.side is not None:
            counts["side_right" if cue.side == side else "side_wrong"] += 1
        counts["events"] += 1
    return counts


def run_real(folder: Path, limit: int, pipes: list, seeds: list[int], clock_pipes: list | None = None) -> dict:
    """Task 2 on real-sound clips: method -> seed -> summed counts (`REAL_COUNTS`), plus per-clip rows."""
    from avflow.data.audio import read_audio
    from avflow.data.video import video_frames

    stems = sorted(p.with_suffix("") for p in folder.glob("*.json") if p.with_suffix(".mp4").is_file())
    stems = stems[:limit] if limit > 0 else stems
    if not stems:
        sys.exit(f"--real {folder}: no real-sound clips (.mp4 with a .json beside it)")
    sr, totals, rows, start = 16000, {}, [], time.time()

    def add(method: str, seed: int, audio: np.ndarray, meta: dict, row: dict) -> None:
        counts = real_event_sides(audio, sr, meta)
        cell = totals.setdefault(method, {}).setdefault(seed, dict.fromkeys(REAL_COUNTS, 0))
        for k, v in counts.items():
            cell[k] += v
        row[f"{method}/{seed}"] = counts

    for i, stem in enumerate(stems):
        meta = json.loads(stem.with_suffix(".json").read_text())
        frames, fps, _ = video_frames(stem.with_suffix(".mp4"))
        track, _ = read_audio(stem.with_suffix(".mp4"), sample_rate=sr, channels=2)
        ref = track.numpy().astype(np.float32)  # (2, S)
        mono = ref.mean(0)
        row = {"clip": stem.name}
        add("recording", 0, ref, meta, row)
        add("mono_copy", 0, np.stack([mono, mono]), meta, row)
        add("pan", 0, amplitude_pan(mono, sr, frames, fps), meta, row)
        add("spatialiser", 0, spatialise(mono, sr, frames, fps), meta, row)
        add("spatialiser_video_clock", 0, spatialise(mono, sr, frames, fps, VIDEO_CLOCK), meta, row)
        for s, pipe in zip(seeds, pipes):
            add("model", s, pipe.generate(frames, fps, ref.shape[1], mono=mono, seed=s, sampling=pipe.sampling), meta,
                row)  # fmt: skip
        for s, pipe in zip(seeds, clock_pipes or []):
            add("model_video_clock", s, pipe.generate(frames, fps, ref.shape[1], mono=mono, seed=s,
                                                      sampling=pipe.sampling), meta, row)  # fmt: skip
        rows.append(row)
        print(f"real {i + 1}/{len(stems)} clips ({time.time() - start:.0f} s)", file=sys.stderr)
    return {"clips": len(stems), "totals": totals, "per_clip": rows}


def real_table(real: dict) -> list[dict]:
    """One row per method: counts summed over clips, per seed; the model's rates as mean ± std over seeds."""
    out = []
    for method, per_seed in real["totals"].items():
        rates = {k: [c[k] / c["events"] if c["events"] else np.nan for c in per_seed.values()]
                 for k in REAL_COUNTS[:4]}  # fmt: skip
        row = {"method": method, "seeds": len(per_seed), "events": next(iter(per_seed.values()))["events"]}
        for k, v in rates.items():
            row[k] = f"{100 * np.mean(v):.1f}±{100 * np.std(v):.1f} %" if len(v) > 1 else f"{100 * v[0]:.1f} %"
        out.append(row)
    return out


def summarise(results: dict) -> dict:
    """task -> group -> method -> measure -> {mean, std, seeds, clips, per_seed}: mean over clips per seed (listed in
    `per_seed`, in the order of --weights), then over seeds."""
    out: dict = {}
    for task, groups in results.items():
        for group, methods in groups.items():
            for method, measures in methods.items():
                for k, per_seed in measures.items():
                    means = [float(np.nanmean(v)) for v in per_seed.values() if np.isfinite(v).any()]
                    clips = int(np.mean([np.isfinite(v).sum() for v in per_seed.values()]))
                    out.setdefault(task, {}).setdefault(group, {}).setdefault(method, {})[k] = {
                        "mean": float(np.mean(means)) if means else float("nan"),
                        "std": float(np.std(means)) if means else float("nan"), "seeds": len(means), "clips": clips,
                        "per_seed": means,
                    }  # fmt: skip
    return out


def verdict(table: dict) -> dict:
    """Per task and group: does the model beat each baseline on each spatial measure by more than 2 seed std
    (the larger of the two methods' stds)? A baseline whose measure is undefined on every clip (a mono copy has no
    side) is beaten where the model's is defined."""
    out: dict = {}
    for task, groups in table.items():
        for group, methods in groups.items():
            model = methods["model"]
            for base in ("mono_copy", "pan", "spatialiser"):
                for k in MEASURES:
                    a, b = model[k], methods[base][k]
                    if np.isnan(b["mean"]):
                        out.setdefault(task, {}).setdefault(group, {}).setdefault(base, {})[k] = bool(
                            np.isfinite(a["mean"]))
                        continue
                    margin = 2 * max(a["std"], b["std"])
                    better = (b["mean"] - a["mean"] if LOWER_IS_BETTER[k] else a["mean"] - b["mean"]) > margin
                    out.setdefault(task, {}).setdefault(group, {}).setdefault(base, {})[k] = bool(better)
    return out


def write_json(path: Path, data: dict) -> None:
    """`data` as indented JSON, written atomically (the project's `atomic_write`)."""
    atomic_write(path, lambda f: f.write((json.dumps(data, indent=1) + "\n").encode()))


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world-test", type=Path, default=None, help="folder with test/ (KEMAR-rendered clips)")
    parser.add_argument("--real", type=Path, default=None, help="real-sound clips (scripts/make_real_sound_set.py)")
    parser.add_argument("--real-limit", type=non_negative_int, default=0, help="real-sound clips (0: all)")
    parser.add_argument("--make-test", action="store_true", help="render the KEMAR test split into --world-test")
    parser.add_argument("--n-one", type=non_negative_int, default=48, help="one-object clips (--make-test)")
    parser.add_argument("--n-two", type=non_negative_int, default=48, help="two-object clips (--make-test)")
    parser.add_argument("--weights", type=Path, nargs="*", default=[], help="one binaural export per training seed")
    parser.add_argument("--tasks", nargs="+", choices=["1", "2"], default=["1", "2"])
    parser.add_argument("--limit", type=non_negative_int, default=0, help="test clips (0: all)")
    parser.add_argument("--steps", type=positive_int, default=None,
                        help="model sampling steps (default: the export's own)")  # fmt: skip
    parser.add_argument("--cfg", type=float, default=None, help="model cfg_strength (default: the export's own)")
    parser.add_argument("--draws", type=int, default=None,
                        help="a cue model's draws averaged per output (default: the export's own)")  # fmt: skip
    parser.add_argument("--model-video-clock", action="store_true",
                        help="add each model reading the video on the video's clock (no anchoring on the mono)")
    parser.add_argument("--threads", type=positive_int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="write the tables here")
    args = parser.parse_args()
    check_output(parser, args.json)
    torch.set_num_threads(args.threads)
    if args.world_test is None and args.real is None:
        parser.error("give --world-test (KEMAR world clips) and/or --real (real-sound clips)")
    if args.real is not None and not args.real.is_dir():
        parser.error(f"--real {args.real}: not a folder")
    if args.make_test and args.world_test is None:
        parser.error("--make-test needs --world-test")
    if args.make_test:
        from avflow.world.binaural import kemar_path

        kemar_path()  # one line if the `hrtf` extra (slab) is missing
        make_test_split(args.world_test, args.n_one, args.n_two)
        if not args.weights:
            return
    missing = [w for w in args.weights if not w.is_file()]
    if missing:
        parser.error(f"--weights: give one existing export per seed (missing: {', '.join(map(str, missing))})")
    if not args.weights and args.world_test is not None:
        parser.error("--weights: give one export per seed for the world test (--real alone runs the baselines)")
    pipes = [BinauralPipeline.from_assets(w) for w in args.weights]  # each with the sampling its export records
    if args.draws is not None and (args.draws < 1 or any(p.model.config.representation != "cues" for p in pipes)):
        parser.error(f"--draws: a count >= 1, for cue models only (got {args.draws})")
    for pipe in pipes:
        pipe.sampling = pipe.sampling.override(steps=args.steps, cfg_strength=args.cfg)
        pipe.draws = pipe.draws if args.draws is None else args.draws
    sampling = pipes[0].sampling if pipes else SAMPLING
    clock_pipes = [copy.copy(p) for p in pipes] if args.model_video_clock else None
    for pipe in clock_pipes or []:
        pipe.anchoring = VIDEO_CLOCK
    seeds = list(range(len(pipes)))
    real = None
    if args.real is not None:
        real = run_real(args.real, args.real_limit, pipes, seeds, clock_pipes)
        print_table(real_table(real), f"task 2 on real recordings ({real['clips']} clips of {args.real}): per event "
                    "with a visual side, louder channel / ILD+ITD side on it (right) or on the other (wrong)")
        if args.world_test is None:
            if args.json:
                write_json(args.json, {"real": real, "real_table": real_table(real)})
            return
    rows = read_manifest(args.world_test, "test")
    rows = rows[: args.limit] if args.limit > 0 else rows
    joint = None
    if "1" in args.tasks:
        from avflow.pipelines.default_model import load_default_model

        joint = load_default_model()
    from avflow.codecs.world import load_world_codecs

    codec = load_world_codecs().audio
    results: dict = {}
    start = time.time()
    for i, row in enumerate(rows):
        run_clip(args.world_test / "test" / row["id"], args.tasks, pipes, joint, seeds, results, codec, clock_pipes)
        print(f"{i + 1}/{len(rows)} clips ({time.time() - start:.0f} s)", file=sys.stderr)
    table = summarise(results)
    wins = verdict(table)
    for task in args.tasks:
        for group in ("one", "multi"):
            methods = table.get(task, {}).get(group, {})
            if not methods:
                continue
            keys = [*MEASURES, *(["onset_error_ms"] if task == "2" else [])]
            print_table([{"method": name} | {k: f"{m[k]['mean']:.3f}±{m[k]['std']:.3f}" for k in keys if k in m}
                         for name, m in methods.items()],
                        f"task {task}, {group}-object clips (n = {methods['model'][MEASURES[0]]['clips']}), "
                        f"{len(seeds)} seeds")  # fmt: skip
            goal = all(all(v.values()) for v in wins[task][group].values())
            print(f"goal (model beats every baseline by > 2 seed std on {', '.join(MEASURES)}): "
                  f"{'MET' if goal else 'NOT MET'}")  # fmt: skip
    if args.json:
        out = {"clips": len(rows), "seeds": len(seeds), "weights": [str(w) for w in args.weights],
               "sampling": {"steps": sampling.steps, "cfg_strength": sampling.cfg_strength,
                            "draws": pipes[0].draws if pipes else 1}, "metrics": table,
               "model_better_than": wins, "seconds": time.time() - start}  # fmt: skip
        if real is not None:
            out |= {"real": real, "real_table": real_table(real)}
        write_json(args.json, out)



if __name__ == "__main__":
    run_main(main)
