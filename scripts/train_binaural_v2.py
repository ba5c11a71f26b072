"""Train the video-to-binaural v2 model (`avflow.models.binaural.BinauralFlow`) on a world folder and export it.

Stages (each skipped when its output exists, so a rerun resumes; training resumes from its checkpoints):
  1. cache   per split (train, val) of `--world` (read only; e.g. the default model's runs/default_v2/world, made
             with the spherical head): codec latents of both ears and of the mono mix, video features
             (`avflow.train.binaural_cache`) into WORK/cache_{split}.safetensors (shared by every seed)
  2. train   `avflow train configs/binaural_v2.yaml` into WORK/seed{S}
  3. export  the EMA weights (fp16, config and the codecs' checksum in the metadata) to
             WORK/seed{S}/binaural.safetensors and, with --ship, to avflow/assets/binaural/model.safetensors
             (what `avflow binaural` loads)

    python scripts/train_binaural_v2.py --world runs/default_v2/world --work runs/binaural_v2 --seed 0 [--ship]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "binaural_v2.yaml"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cache(world: Path, work: Path, limit: int) -> None:
    from avflow.codecs.world import load_world_codecs
    from avflow.config import read_yaml
    from avflow.train.binaural_cache import cache_world_split, check_cache

    codecs = load_world_codecs()
    bins = int(read_yaml(CONFIG)["model"]["args"]["bins"])
    for split in ("train", "val"):
        out = work / f"cache_{split}.safetensors"
        if out.is_file():
            check_cache(out, codecs)
            continue
        start = time.time()
        cache_world_split(world, split, out, codecs, bins=bins, limit=limit, log=log)
        log(f"cache {split}: {out} ({time.time() - start:.0f} s)")


def train(work: Path, seed: int, overrides: list[str]) -> Path:
    run = work / f"seed{seed}"
    args = [f"out_dir={run}", f"train.seed={seed}", f"data.train.args.file={work / 'cache_train.safetensors'}",
            f"data.val.args.file={work / 'cache_val.safetensors'}", *overrides]  # fmt: skip
    subprocess.run([sys.executable, "-m", "avflow.cli", "train", str(CONFIG), *args], check=True)
    return run


def export(work: Path, run: Path, ship: bool) -> Path:
    from avflow.codecs.world import load_world_codecs
    from avflow.config import from_dict, read_yaml
    from avflow.models.binaural import MODEL_FILE, BinauralConfig, BinauralFlow, save_binaural
    from avflow.train.binaural_cache import check_cache
    from avflow.weights import load_strict, read_state_dict

    codecs = load_world_codecs()
    check_cache(work / "cache_train.safetensors", codecs)
    model = BinauralFlow(from_dict(BinauralConfig, read_yaml(run / "config.yaml")["model"]["args"], "model.args"))
    emas = sorted(run.glob("ema_*.safetensors"))
    file = emas[0] if emas else run / "model.safetensors"
    load_strict(model, read_state_dict(file), str(file))
    out = run / "binaural.safetensors"
    save_binaural(model, out, codecs_checksum=codecs.checksum)
    params = sum(p.numel() for p in model.parameters())
    log(f"exported {file.name}: {params / 1e6:.2f} M parameters, {out.stat().st_size / 1e6:.2f} MB -> {out}")
    if ship:
        MODEL_FILE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out, MODEL_FILE)
        log(f"shipped to {MODEL_FILE}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", type=Path, default=REPO / "runs" / "default_v2" / "world",
                   help="world folder with train/val manifests (read only)")  # fmt: skip
    p.add_argument("--work", type=Path, default=REPO / "runs" / "binaural_v2")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=0, help="clips per split in the cache (0: all)")
    p.add_argument("--stage", choices=["all", "cache", "train", "export"], default="all")
    p.add_argument("--ship", action="store_true", help="also copy the export to avflow/assets/binaural/")
    p.add_argument("overrides", nargs="*", help="key=value overrides of configs/binaural_v2.yaml")
    args = p.parse_args()
    if not (args.world / "train" / "manifest.jsonl").is_file():
        p.error(f"--world {args.world}: no train/manifest.jsonl (make a world with `avflow world make`)")
    args.work.mkdir(parents=True, exist_ok=True)
    if args.stage in ("all", "cache"):
        cache(args.world, args.work, args.limit)
    run = args.work / f"seed{args.seed}"
    if args.stage in ("all", "train"):
        train(args.work, args.seed, args.overrides)
    if args.stage in ("all", "export"):
        export(args.work, run, args.ship)


if __name__ == "__main__":
    main()
