"""Accuracy and cost of the sync offset and side measures (`avflow.eval.clip.measure_clip`) against issue 20's targets.

Sets with ground truth, measured from the frames and audio alone:
- a real-sound set (`scripts/make_real_sound_set.py`: real recordings, flashes and pop-ins at 16-30 fps, offsets
  uniform in ±250 ms; built into --real when that folder is missing; needs `make real-sound-deps`);
- world clips (`avflow world make`), whose audio is in sync (true offset 0);
- the same world clips written as mp4 (``world-mp4``: H.264 with 4:2:0 chroma and AAC, by the writer of `avflow world
  --preview`, `avflow.world.dataset.write_preview`, the format `avflow generate` and `avflow demo` write too), encoded
  into a temporary folder at each run (about 0.2 s a clip, not counted in the CPU column).

Targets: real set, where confidence ≥ 0.5: ≥ 95 % of offsets within ±20 ms, and confidence ≥ 0.5 on ≥ 90 % of
clips; every event's side right. World: median |offset| ≤ 10 ms and ≥ 95 % within ±20 ms (undefined counts as a
miss); the same as mp4, and there no offset beyond ±62 ms at confidence ≥ 0.5. ≤ 50 ms of CPU per clip second. The
baseline measured in the same run is one plain STFT of each clip's audio (n_fft 512, hop 128), a floor any audio
metric pays. Usage:

    python benchmarks/sync_accuracy.py --real data/real_sound --real-seed 1 --world data/world/test \
        [--before REV] [--csv DIR] [--sets real,world,world-mp4]

With ``--before REV`` the same clips are also measured by the offsets that `avflow eval` reported at commit REV (e.g.
9c29db9, before issue 20): ``sync_xcorr_ms`` (cross-correlation of audio onset strength and motion energy) and
``sync_vis_ms`` (onsets matched to the contacts of tracked objects). They run in a subprocess on that commit's
``avflow`` package (``git archive REV avflow``), so the numbers are the old code's, side by side in one run. The old
measures have no confidence: where they are finite they count as confident.

The script measures the ``avflow`` of the checkout it lives in (not whichever one is installed).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LEGACY = "--legacy-worker"  # internal: `--legacy-worker TREE FOLDER OUT LIMIT` measures with an old avflow in TREE
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, sys.argv[sys.argv.index(LEGACY) + 1] if LEGACY in sys.argv else str(ROOT))
from common import ArgumentParser, positive_int, print_table, run_main  # noqa: E402

SETS = ("real", "world", "world-mp4")
WORLD_MP4 = "world as mp4 (offset 0)"


def sets_type(text: str) -> list[str]:
    """argparse type of --sets: real, world, world-mp4, or several comma-separated."""
    names = text.split(",")
    if not names or any(n not in SETS for n in names):
        raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(SETS)}, comma-separated (real,world)")
    return names


def check_real(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """An existing --real folder is measured as it is: --real-seed / --real-n given for it must match the settings
    its set.json records (scripts/make_real_sound_set.py), else are refused; without a set.json, one note."""
    given = {k: v for k, v in (("seed", args.real_seed), ("n", args.real_n)) if v is not None}
    if not given:
        return
    record = args.real / "set.json"
    if not record.is_file():
        print(f"note: --real {args.real} exists (no set.json to check): measured as it is; --real-seed / --real-n "
              "only build a missing folder", file=sys.stderr)  # fmt: skip
        return
    try:
        made = json.loads(record.read_text())
    except (OSError, ValueError) as exc:
        parser.error(f"--real {args.real}: unreadable set.json ({exc})")
    differ = [f"--real-{k} {v} (the folder's: {made.get(k)})" for k, v in given.items() if made.get(k) != v]
    if differ:
        parser.error(f"--real {args.real} was made with other settings: {', '.join(differ)}")


def build_real(folder: Path, n: int, seed: int) -> None:
    script = ROOT / "scripts" / "make_real_sound_set.py"
    cmd = [sys.executable, str(script), "--out", str(folder), "--n", str(n), "--seed", str(seed)]
    done = subprocess.run(cmd, env=os.environ | {"PYTHONPATH": str(ROOT)})
    if done.returncode:  # the builder printed its own one-line reason (e.g. `make real-sound-deps` missing)
        sys.exit(f"sync_accuracy.py: error: building the real-sound set in {folder} failed (exit status "
                 f"{done.returncode}; its message is above)")


def stft_seconds(audio: np.ndarray) -> float:
    x = np.atleast_2d(audio)[0]
    t0 = time.process_time()
    np.fft.rfft(np.lib.stride_tricks.sliding_window_view(x, 512)[::128] * np.hanning(512), axis=1)
    return time.process_time() - t0


def encode_world(folder: Path, limit: int | None, out: Path) -> Path:
    """The first ``limit`` world clips of ``folder`` written into ``out`` as the previews are (`write_preview`: the
    frames as H.264, the sound as AAC), each with its json; returns ``out``."""
    import shutil

    from avflow.eval.report import find_clips
    from avflow.world.dataset import load_clip, write_preview

    for cid, stem in list(find_clips(folder).items())[:limit]:
        target = out / cid
        target.parent.mkdir(parents=True, exist_ok=True)
        write_preview(load_clip(stem), target)
        shutil.copyfile(stem.with_suffix(".json"), target.with_suffix(".json"))
    return out


def measure_folder(folder: Path, limit: int | None, truth_offset: bool) -> list[dict]:
    """Per clip: true and measured offset, error, confidence, sides (right / with a side), CPU seconds."""
    from avflow.eval.clip import measure_clip
    from avflow.eval.report import find_clips, load_eval_clip

    rows = []
    for cid, path in list(find_clips(folder).items())[:limit]:
        clip = load_eval_clip(path, cid)
        t0 = time.process_time()
        got = measure_clip(clip.audio, clip.sample_rate, clip.frames, clip.fps)
        cpu = time.process_time() - t0
        true_ms = float(clip.meta.get("offset_ms", 0.0)) if (truth_offset and clip.meta) else 0.0
        m = got.sync_offset_ms
        right = wrong = sided = 0
        for e in (clip.meta or {}).get("events", []):
            if e.get("side") is None:
                continue
            sided += 1
            near = [s for s in got.sides if abs(s.visual_time - e["time"]) < 0.5 / clip.fps]
            right += bool(near and near[0].cue.side == e["side"])
            wrong += bool(near and near[0].cue.side not in (None, e["side"]))
        rows.append({
            "clip": cid, "true_ms": true_ms, "measured_ms": m.value if m.defined else None,
            "error_ms": m.value - true_ms if m.defined else None, "confidence": m.confidence,
            "reason": m.reason, "sides_right": right, "sides_wrong": wrong, "sides": sided, "cpu_s": cpu,
            "seconds": clip.audio.shape[-1] / clip.sample_rate, "stft_s": stft_seconds(clip.audio),
        })  # fmt: skip
    return rows


def legacy_worker(folder: Path, out: Path, limit: int | None) -> None:
    """Run on an old ``avflow`` (see ``LEGACY``): per clip the two offsets its `avflow eval` reported, each with its
    CPU seconds, written to ``out`` as JSON."""
    from avflow.eval import physics, sync
    from avflow.eval.report import find_clips, load_eval_clip

    rows = {}
    for cid, path in list(find_clips(folder).items())[:limit]:
        clip = load_eval_clip(path, cid)
        t0 = time.process_time()
        xcorr = sync.xcorr_offset(clip.audio, clip.sample_rate, clip.frames, clip.fps)["offset_ms"]
        t1 = time.process_time()
        contacts = sync.visual_contacts(physics.track_objects(clip.frames), clip.fps)
        vis = sync.match_offset(sync.detect_onsets(clip.audio, clip.sample_rate), contacts)["offset_ms"]
        rows[cid] = {"xcorr_ms": xcorr, "xcorr_cpu_s": t1 - t0, "vis_ms": vis, "vis_cpu_s": time.process_time() - t1}
    out.write_text(json.dumps(rows))


def measure_before(rev: str, folder: Path, limit: int | None) -> dict[str, dict]:
    """:func:`legacy_worker` on ``git archive REV avflow``, in a subprocess."""
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "avflow"], check=True, capture_output=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
            archive.extractall(tmp)
        out = Path(tmp) / "rows.json"
        script, clips = str(Path(__file__).resolve()), str(folder.resolve())
        cmd = [sys.executable, script, LEGACY, tmp, clips, str(out), str(limit or 0)]
        subprocess.run(cmd, check=True, cwd=tmp)
        return json.loads(out.read_text())


def add_before(rows: list[dict], before: dict[str, dict]) -> None:
    """The old offsets and their errors as columns of the per-clip rows."""
    for r in rows:
        old = before[r["clip"]]
        for name in ("xcorr", "vis"):
            v = old[f"{name}_ms"]
            ok = v is not None and math.isfinite(v)
            r |= {f"before_{name}_ms": v if ok else None, f"before_{name}_error_ms": v - r["true_ms"] if ok else None,
                  f"before_{name}_cpu_s": old[f"{name}_cpu_s"]}  # fmt: skip


def summary(rows: list[dict], prefix: str = "") -> dict[str, float]:
    """Error statistics of one measure over the clips (undefined counts as a miss). ``prefix`` "before_xcorr_" /
    "before_vis_" reads the old measures' columns: they have no confidence (finite = confident) and no sides."""
    err = np.array([abs(e) if (e := r[f"{prefix}error_ms"]) is not None else np.inf for r in rows])
    conf = np.isfinite(err).astype(float) if prefix else np.array([r["confidence"] for r in rows])
    sure = conf >= 0.5
    dur = sum(r["seconds"] for r in rows)
    sided = sum(r["sides"] for r in rows)
    return {
        "clips": float(len(rows)),
        "defined": float(np.isfinite(err).mean()),
        "median_abs_error_ms": float(np.median(err)),
        "within_20ms": float(np.mean(err <= 20)),
        "within_62ms": float(np.mean(err <= 62)),
        "confident": float(sure.mean()),
        "confident_beyond_62ms": float(np.mean(sure & (err > 62))),
        "within_20ms_confident": float(np.mean(err[sure] <= 20)) if sure.any() else float("nan"),
        "sides_right": sum(r["sides_right"] for r in rows) / sided if sided and not prefix else float("nan"),
        "sides_wrong": sum(r["sides_wrong"] for r in rows) / sided if sided and not prefix else float("nan"),
        "cpu_ms_per_s": 1000 * sum(r[f"{prefix}cpu_s"] for r in rows) / dur,
        "stft_ms_per_s": 1000 * sum(r["stft_s"] for r in rows) / dur,
    }


MEASURES = {"": "after: sync_offset_ms", "before_xcorr_": "before: sync_xcorr_ms", "before_vis_": "before: sync_vis_ms"}


def main() -> None:
    if LEGACY in sys.argv:
        tree, folder, out, limit = sys.argv[sys.argv.index(LEGACY) + 1 :]
        legacy_worker(Path(folder), Path(out), int(limit) or None)
        return
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", type=Path, default=ROOT / "data" / "real_sound")
    parser.add_argument("--real-n", type=positive_int, default=None, help="clips of a --real set built here (100)")
    parser.add_argument("--real-seed", type=int, default=None,
                        help="builder seed of a --real set built here (1; development used 0 and 2)")  # fmt: skip
    parser.add_argument("--world", type=Path, default=None,
                        help="world test clips (default /world/test, skipped with a note if missing)")  # fmt: skip
    parser.add_argument("--limit", type=positive_int, default=None, help="at most this many clips per set")
    parser.add_argument("--before", default=None, metavar="REV", help="also measure with `avflow eval` of this commit")
    parser.add_argument("--csv", type=Path, default=None, help="write the per-clip tables here")
    parser.add_argument("--sets", type=sets_type, default=["real", "world"], help="which sets to measure: real, world, "
                        "world-mp4 (--world's clips written as mp4), comma-separated (default real,world)")  # fmt: skip
    args = parser.parse_args()
    worlds = {"world", "world-mp4"} & set(args.sets)
    if worlds and args.world is None:  # the default: `make bench` on a fresh clone has none
        args.world = ROOT / "data" / "world" / "test"
        if not args.world.is_dir():
            print(f"no world clips at {args.world}: skipped (make them with `avflow world make --out ...`)",
                  file=sys.stderr)  # fmt: skip
            args.sets = [s for s in args.sets if s not in worlds]
    elif worlds and not args.world.is_dir():
        parser.error(f"--world {args.world}: no such folder (make the clips with `avflow world make --out ...`, or "
                     "give --sets real)")  # fmt: skip
    if "real" in args.sets and args.real.is_dir():
        check_real(parser, args)
    if args.csv is not None:
        try:
            args.csv.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            parser.error(f"--csv {args.csv}: cannot make the folder ({exc.strerror or exc})")
    folders = {}
    if "real" in args.sets:
        if not args.real.is_dir():
            build_real(args.real, args.real_n or 100, 1 if args.real_seed is None else args.real_seed)
        folders["real-sound"] = args.real
    if "world" in args.sets:
        folders["world (offset 0)"] = args.world
    sets = {}
    with tempfile.TemporaryDirectory(prefix="world_mp4_") as tmp:
        if "world-mp4" in args.sets:
            folders[WORLD_MP4] = encode_world(args.world, args.limit, Path(tmp))
        for name, folder in folders.items():
            sets[name] = measure_folder(folder, args.limit, name == "real-sound")
            if args.before:
                add_before(sets[name], measure_before(args.before, folder, args.limit))
    table = []
    for name, rows in sets.items():
        for prefix, measure in MEASURES.items():
            if prefix and not args.before:
                continue
            s = summary(rows, prefix)
            table.append({"set": name, "measure": measure} | {k: round(v, 4) for k, v in s.items()})
        if args.csv:
            args.csv.mkdir(parents=True, exist_ok=True)
            with open(args.csv / f"{'world_mp4' if name == WORLD_MP4 else name.split()[0]}_per_clip.csv", "w",
                      newline="") as fh:  # fmt: skip
                writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in rows)
    print_table(table, "sync offset and sides from frames + audio; errors vs the true offset, CPU per clip second")
    checks = {}
    if "real-sound" in sets:
        real = summary(sets["real-sound"])
        checks |= {
            "real: >= 95 % within ±20 ms where confidence >= 0.5": real["within_20ms_confident"] >= 0.95,
            "real: confidence >= 0.5 on >= 90 % of clips": real["confident"] >= 0.9,
            "real: every event's side right": real["sides_right"] == 1.0,
            "CPU <= 50 ms per clip second (real)": real["cpu_ms_per_s"] <= 50,
        }
    for name, short in (("world (offset 0)", "world"), (WORLD_MP4, "world as mp4")):
        if name not in sets:
            continue
        world = summary(sets[name])
        checks |= {
            f"{short}: median |offset| <= 10 ms": world["median_abs_error_ms"] <= 10,
            f"{short}: >= 95 % within ±20 ms": world["within_20ms"] >= 0.95,
            f"CPU <= 50 ms per clip second ({short})": world["cpu_ms_per_s"] <= 50,
        }
        if name == WORLD_MP4:
            checks[f"{short}: no offset beyond ±62 ms at confidence >= 0.5"] = world["confident_beyond_62ms"] == 0
    for name, ok in checks.items():
        print(f"{'MET    ' if ok else 'NOT MET'}  {name}")


if __name__ == "__main__":
    run_main(main)
