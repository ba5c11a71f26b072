"""Train the video-to-binaural v2 model (`avflow.models.binaural.BinauralFlow`) on a world folder and export it.

Stages (each skipped when its output exists, so a rerun resumes; training resumes from its checkpoints):
  0. world   with --make-world HEAD only: render `--world` (8000 clips, world seed 1: 6400 train, 800 val, 800
             test) with the default model's world settings (`train_default_v2.world_config`) and that head
  1. cache   per split (train, val) of `--world` (read only; e.g. the default model's runs/default_v2/world, made
             with the spherical head): codec latents of both ears and of the mono mix, video features
             (`avflow.train.binaural_cache`) into WORK/cache_{split}.safetensors (shared by every seed)
  2. train   `avflow train configs/binaural_v2.yaml` into WORK/seed{S}
  3. export  the EMA weights (fp16, config and the codecs' checksum in the metadata) to
             WORK/seed{S}/binaural.safetensors and, with --ship, to avflow/assets/binaural/model.safetensors
             (what `avflow binaural` loads)

    python scripts/train_binaural_v2.py --world runs/default_v2/world --work runs/binaural_v2 --seed 0 [--ship]

`--representation cues` trains on interaural cue streams instead of codec latents (`avflow.data.interaural_cues`;
configs/binaural_cues.yaml; no codecs read), e.g. on a world rendered with the KEMAR head (docs/binaural.md):
    python scripts/train_binaural_v2.py --representation cues --make-world kemar --world runs/binaural_cues/world \
        --work runs/binaural_cues --seed 0
and with the spatialiser's cue streams as a per-ear prior (`model.args.prior=spatialiser`; its own --work, as the
cache then holds the prior too):
    python scripts/train_binaural_v2.py --representation cues --make-world kemar --world runs/binaural_cues/world \
        --work runs/binaural_cues_prior --seed 0 model.args.prior=spatialiser
(add `model.args.residual=true` for a model of the difference from that prior; the same cache serves it).
`--config configs/binaural_cues_prior.yaml` trains that residual model with the events weighed in its loss:
    python scripts/train_binaural_v2.py --representation cues --config configs/binaural_cues_prior.yaml \
        --make-world kemar --world runs/binaural_cues/world --work runs/binaural_cues_prior --seed 0
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORLD_CLIPS, WORLD_SEED = 8000, 1  # --make-world: the world's size and run seed (the default model's world is seed 0)
CONFIGS = {"codec": REPO / "configs" / "binaural_v2.yaml", "cues": REPO / "configs" / "binaural_cues.yaml"}
# sampling settings an export records, per representation (None: `avflow.models.binaural.SAMPLING`); cue models:
# no guidance and the mean of 16 draws, chosen on a development split of the KEMAR world (cfg 1, 2, 3 at 16 steps;
# 1, 4, 8, 16 draws; docs/binaural.md)
EXPORT_SAMPLING = {"codec": None, "cues": {"steps": 16, "cfg_strength": 1.0}}
EXPORT_DRAWS = {"codec": 1, "cues": 16}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def make_world(world: Path, hrtf: str, workers: int) -> None:
    import dataclasses

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import train_default_v2

    from avflow.world.dataset import make_dataset

    # always through make_dataset: it keeps the clips already made and refuses, in one line, a world of other
    # settings (another head or seed) or size (skipping it when the world exists took any world)
    if hrtf == "kemar":
        from avflow.world.binaural import kemar_path

        kemar_path()  # one line if the `hrtf` extra (slab) is missing
    config = dataclasses.replace(train_default_v2.world_config(), hrtf=hrtf)
    start = time.time()
    sizes = make_dataset(world, WORLD_CLIPS, seed=WORLD_SEED, workers=workers, config=config)
    log(f"world ({hrtf} head): {sizes} clips in {world} ({time.time() - start:.0f} s)")


def prior_renderer(prior: str):
    """The renderer whose cue streams a model with `model.args.prior` is conditioned on (None for "none")."""
    if prior == "none":
        return None
    from avflow.pipelines.spatialise import spatialise

    return {"spatialiser": spatialise}[prior]


def model_args(config: Path, representation: str, overrides: list[str]) -> dict:
    """The config's model arguments with the overrides; a config of another representation is a `ConfigError`."""
    from avflow.config import apply_overrides, read_yaml
    from avflow.errors import ConfigError

    args = apply_overrides(read_yaml(config), overrides)["model"]["args"]
    if args.get("representation", "codec") != representation:
        raise ConfigError(f"{config}: a model of representation {args.get('representation', 'codec')!r}, not "
                          f"{representation!r} (--representation)")  # fmt: skip
    return args


def cache(world: Path, work: Path, limit: int, representation: str, config: Path, overrides: list[str],
          workers: int) -> None:  # fmt: skip
    from avflow.codecs.world import load_world_codecs
    from avflow.train.binaural_cache import cache_world_split, check_cache

    codecs = load_world_codecs() if representation == "codec" else None
    args = model_args(config, representation, overrides)
    bins, prior = int(args["bins"]), args.get("prior", "none")
    for split in ("train", "val"):
        out = work / f"cache_{split}.safetensors"
        if out.is_file():
            made = check_cache(out, codecs, representation, prior, world=world, split=split, limit=limit).get("bins")
            if made != str(bins):
                sys.exit(f"{out}: made with {made} spatial bins, the config asks {bins} (another --work)")
            continue
        start = time.time()
        cache_world_split(world, split, out, codecs, bins=bins, limit=limit, log=log, representation=representation,
                          prior=prior, render_prior=prior_renderer(prior), workers=workers)  # fmt: skip
        log(f"cache {split}: {out} ({time.time() - start:.0f} s)")


def train(work: Path, seed: int, overrides: list[str], config: Path) -> Path:
    run = work / f"seed{seed}"
    args = [f"out_dir={run}", f"train.seed={seed}", f"data.train.args.file={work / 'cache_train.safetensors'}",
            f"data.val.args.file={work / 'cache_val.safetensors'}", *overrides]  # fmt: skip
    from avflow.train.child import run_child

    run_child([sys.executable, "-m", "avflow.cli", "train", str(config), *args], run)
    return run


def export(work: Path, run: Path, ship: bool, representation: str) -> Path:
    from avflow.codecs.world import load_world_codecs
    from avflow.config import from_dict, read_yaml
    from avflow.models.binaural import MODEL_FILE, SAMPLING, BinauralConfig, BinauralFlow, save_binaural
    from avflow.train.binaural_cache import check_cache
    from avflow.weights import load_strict, read_state_dict

    codecs = load_world_codecs() if representation == "codec" else None
    model = BinauralFlow(from_dict(BinauralConfig, read_yaml(run / "config.yaml")["model"]["args"], "model.args"))
    if model.config.representation != representation:
        sys.exit(f"{run}: trained on {model.config.representation!r}, not {representation!r} (--representation)")
    check_cache(work / "cache_train.safetensors", codecs, representation, model.config.prior)
    emas = sorted(run.glob("ema_*.safetensors"))
    file = emas[0] if emas else run / "model.safetensors"
    load_strict(model, read_state_dict(file), str(file))
    out = run / "binaural.safetensors"
    own = EXPORT_SAMPLING[representation]
    save_binaural(model, out, codecs_checksum=codecs.checksum if codecs is not None else "",
                  sampling=SAMPLING.override(**own) if own else None, draws=EXPORT_DRAWS[representation])  # fmt: skip
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
    p.add_argument("--stage", choices=["all", "world", "cache", "train", "export"], default="all")
    p.add_argument("--make-world", choices=["sphere", "kemar"], default=None,
                   help="render --world first with this head (stage 0; its clips already there are kept)")  # fmt: skip
    p.add_argument("--workers", type=int, default=2, help="processes for --make-world and a cue cache")
    p.add_argument("--ship", action="store_true", help="also copy the export to avflow/assets/binaural/")
    p.add_argument("--representation", choices=sorted(CONFIGS), default="codec",
                   help="what the model generates: codec latents (configs/binaural_v2.yaml) or interaural cue "
                   "streams (configs/binaural_cues.yaml)")  # fmt: skip
    p.add_argument("--config", type=Path, default=None,
                   help="training config (default: the representation's, above; e.g. "
                   "configs/binaural_cues_prior.yaml with --representation cues)")  # fmt: skip
    p.add_argument("overrides", nargs="*", help="key=value overrides of the config")
    args = p.parse_args()
    if args.limit < 0:
        p.error(f"--limit must be >= 0 (0: all clips), got {args.limit}")
    config = args.config or CONFIGS[args.representation]
    if not config.is_file():
        p.error(f"--config {config}: no such file")
    if args.workers < 1:
        p.error(f"--workers must be at least 1, got {args.workers}")
    from avflow.errors import AvflowError

    if args.make_world is not None and args.stage in ("all", "world"):
        try:
            make_world(args.world, args.make_world, args.workers)
        except AvflowError as exc:  # a world of other settings or size there, the hrtf extra missing
            sys.exit(f"error: {exc}")
    if args.stage == "world":
        return
    if not (args.world / "train" / "manifest.jsonl").is_file():
        p.error(f"--world {args.world}: no train/manifest.jsonl (make a world with `avflow world make`)")
    args.work.mkdir(parents=True, exist_ok=True)
    try:
        if args.stage in ("all", "cache"):
            cache(args.world, args.work, args.limit, args.representation, config, args.overrides, args.workers)
        run = args.work / f"seed{args.seed}"
        if args.stage in ("all", "train"):
            model_args(config, args.representation, args.overrides)  # a config of another representation: one line
            train(args.work, args.seed, args.overrides, config)
        if args.stage in ("all", "export"):
            export(args.work, run, args.ship, args.representation)
    except AvflowError as exc:  # ConfigError, WeightsError, MediaError (a world's missing manifest), ...
        sys.exit(f"error: {exc}")
    except subprocess.CalledProcessError as exc:
        sys.exit(f"error: training failed (exit status {exc.returncode}; its output is above)")


if __name__ == "__main__":
    main()
