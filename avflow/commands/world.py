"""`avflow world [make] --n N --out DIR`: write a procedural audio-visual dataset (train/val/test with manifests).

Writes DIR/dataset.json (seed and settings) and per split DIR/{train,val,test}/manifest.jsonl and per clip
{id}.wav (float32 stereo [left, right], sample-exact), {id}.npz (frames uint8 (T, H, W, 3), masks bool (T, K, H, W)),
{id}.json (ground truth: events, trajectories of object centres in px at frame starts k/fps, caption, config) and,
with --preview, {id}.mp4. Azimuth negative = left; ILD > 0 left louder; ITD > 0 left leads. The same --seed and
settings give identical files for any --workers. Every key, unit and known limitation: docs/world.md (in the avflow
source repository)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from avflow.commands.options import add_overwrite, check_folder
from avflow.errors import ConfigError

HELP = "make procedural audio-visual world datasets with known ground truth"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=["make"], default="make",
                        help="what to do (only `make` for now, so it may be left out)")  # fmt: skip
    parser.add_argument("--n", type=int, required=True, help="number of clips over all splits, about 80/10/10: "
                        "from 3 on val and test get max(1, round(0.1 n)) each and train the rest; below 3 all are "
                        "train (--n 2: train 2, val 0, test 0)")  # fmt: skip
    parser.add_argument("--out", required=True, help="output folder; gets train/, val/, test/ and dataset.json (the "
                        "settings). Clips already there from the same seed and settings are kept: a rerun resumes, a "
                        "bigger --n extends where no split gets smaller (split sizes as --n says: 14 -> 15 does not, "
                        "train 12 -> 11). A dataset of other settings, or one with clips beyond --n, is an error "
                        "unless --overwrite")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="dataset seed; splits use disjoint clip-seed ranges")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes")
    parser.add_argument("--preview", action="store_true", help="also write an mp4 preview per clip")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=(64, 64), help="frame size")
    parser.add_argument("--fps", type=int, default=16, help="frames per second")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per clip")
    parser.add_argument("--sample-rate", type=int, default=16000, help="audio samples per second")
    parser.add_argument("--hrtf", choices=["sphere", "kemar"], default="sphere", help="binaural model")
    add_overwrite(parser)


def run(args: argparse.Namespace) -> int:
    from avflow.world.binaural import kemar_path
    from avflow.world.dataset import make_dataset, preview_available
    from avflow.world.scene import WorldConfig

    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    check_folder(args.out, "--out")
    if args.preview and (args.size[0] % 2 or args.size[1] % 2):
        raise ConfigError(f"--preview writes h264, which needs an even --size; got {args.size[0]} {args.size[1]}")
    config = WorldConfig(height=args.size[0], width=args.size[1], fps=args.fps, duration=args.duration,
                         sample_rate=args.sample_rate, hrtf=args.hrtf)  # fmt: skip
    if args.hrtf == "kemar":
        kemar_path()  # a clear error now rather than one per worker
    preview = args.preview
    if preview and not preview_available():
        print("avflow world: avflow.data.media.write_video is not available; skipping mp4 previews", file=sys.stderr)
        preview = False
    done, made = [0], [0]
    previews_before = _previews(args.out) if preview else 0
    start = time.perf_counter()

    def progress(row: dict, new: bool) -> None:
        done[0] += 1
        made[0] += new
        if done[0] % 50 == 0 or done[0] == args.n:
            print(f"\r{done[0]}/{args.n} clips", end="", file=sys.stderr, flush=True)

    sizes = make_dataset(args.out, args.n, seed=args.seed, workers=args.workers, preview=preview, config=config,
                         progress=progress, overwrite=args.overwrite)  # fmt: skip
    elapsed = time.perf_counter() - start
    print(file=sys.stderr)
    splits = ", ".join(f"{k} {v}" for k, v in sizes.items())
    kept = sum(sizes.values()) - made[0]
    added = _previews(args.out) - previews_before - made[0] if preview else 0  # previews of clips kept
    print(f"wrote {made[0]} clips to {args.out}" + (f", kept the {kept} already there" if kept else "")
          + (f" and wrote the {added} mp4 previews they lacked" if added > 0 else "")
          + f" ({splits}) in {elapsed:.1f} s")  # fmt: skip
    return 0


def _previews(out: str) -> int:
    """The mp4 previews in a world dataset folder's splits (to say how many a run added to clips it kept)."""
    from avflow.world.dataset import SPLITS

    return sum(len(list((Path(out) / split).glob(f"{split}_*.mp4"))) for split in SPLITS)
