"""Issue 26's bench probe: does a fresh audio-video interaction learn on the shipped default model's towers?

    python scripts/bench_probe.py --work runs/default_v2 --out runs/bench_probe/full_attention \
        --fusion full_attention --fusion-options '{"heads": 2, "layers": 4}' --alignment avsync --steps 600 --at 300

The bench this tests (AVFullDiT's recipe: towers from trained models, the interaction learnt on top) would give every
fusion and alignment arm the same trained towers: the shipped model's video and audio towers, its interaction
replaced by the arm's, fresh and zero-initialised (so step 0 computes the towers alone); --start names other trained
weights of the same architecture (e.g. WORK/joint_42000.safetensors, grown4's). Each run:
1. fine-tunes with `configs/default_joint_v2_grow.yaml` (the default model's task and data: WORK's latent caches from
   `scripts/train_default_v2.py --stage cache`) for --steps, from the shipped weights with `init.new=[fusion.]`;
   --steps 0 trains nothing and measures the towers alone;
2. exports the EMA (sigma_rel 0.05, fp16) at the end and at each --at step (from that step's checkpoint, within the
   same cosine schedule) as a model folder OUT/model_STEP (the shipped config.json with the arm's interaction);
3. scores each folder with `scripts/model_card_metrics.py` on held-out prompts (default: configs/bench_prompts.json,
   48 prompts made with `--make-prompts --held-out-base 8796093022208 --singles 32 --twos 16`), one seed per prompt,
   the model's own sampling (CFG 3.5, 25 Euler steps): OUT/model_STEP.json and .log.
Issue 26's criterion for an arm that learns: object >= 60 % and median sync <= 62 ms (and <= half the chance level).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "avflow" / "assets" / "default_model"
CONFIG = REPO / "configs" / "default_joint_v2_grow.yaml"
PROMPTS = REPO / "configs" / "bench_prompts.json"
SIGMA_REL = 0.05  # the EMA exported, as the default model ships


def arm_config(fusion: str, options: dict, alignment: str) -> dict:
    """The shipped config.json with the arm's interaction."""
    config = json.loads((SHIPPED / "config.json").read_text())
    config["joint"].update(fusion=fusion, fusion_options=options, alignment=alignment)
    return config


def fresh_state(config: dict, start: Path = SHIPPED / "joint.safetensors") -> dict:
    """Step 0: the start weights with the interaction replaced by the arm's fresh one (zero-initialised outputs)."""
    import torch

    from avflow.config import from_dict
    from avflow.models.joint import JointConfig, JointModel
    from avflow.weights import read_state_dict

    torch.manual_seed(0)
    model = JointModel(from_dict(JointConfig, config["joint"], "joint"))
    own = model.state_dict()
    towers = {k: v for k, v in read_state_dict(start).items() if not k.startswith("fusion.")}
    return towers | {k: v for k, v in own.items() if k.startswith("fusion.")}


def ema_state(run: Path, step: int | None) -> dict:
    """The run's EMA at sigma_rel 0.05: its final file, or the average kept in the checkpoint of `step`."""
    from avflow.train.checkpoint import checkpoint_path, load_checkpoint
    from avflow.weights import read_state_dict

    if step is None:
        return read_state_dict(run / f"ema_{SIGMA_REL}.safetensors")
    ema = load_checkpoint(checkpoint_path(run / "checkpoints", step))["ema"]
    return ema["averages"][list(ema["sigma_rels"]).index(SIGMA_REL)]


def export(state: dict, config: dict, folder: Path) -> Path:
    from avflow.weights import atomic_write, save_safetensors

    folder.mkdir(parents=True, exist_ok=True)
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}  # fp16, as the model ships
    save_safetensors(half, folder / "joint.safetensors")
    atomic_write(folder / "config.json", lambda f: f.write((json.dumps(config, indent=2) + "\n").encode()))
    return folder


def train(args, out: Path) -> None:
    work = args.work
    overrides = [
        f"out_dir={out}", f"init.weights={args.start}", "init.rename={}", "init.new=[fusion.]",
        "init.zero=[]", f"model.args.fusion={args.fusion}", f"model.args.fusion_options={json.dumps(args.options)}",
        f"model.args.alignment={args.alignment}", f"train.steps={args.steps}", "schedule.warmup_steps=50",
        "log.val_every=150", "checkpoint.every=150", "checkpoint.keep_last=100",
        f"data.train.args.file={work / 'cache_train.safetensors'}",
        f"data.val.args.file={work / 'cache_val.safetensors'}",
    ]  # fmt: skip
    from avflow.train.child import run_child

    run_child([sys.executable, "-m", "avflow.cli", "train", str(CONFIG), *overrides], out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=REPO / "runs" / "default_v2", help="holds cache_{train,val}")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--start",
        type=Path,
        default=SHIPPED / "joint.safetensors",
        help="the trained weights whose towers every arm starts from (default: the shipped model's)",
    )
    p.add_argument("--fusion", required=True)
    p.add_argument("--fusion-options", dest="options", type=json.loads, default={})
    p.add_argument("--alignment", default="none")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--at", type=int, nargs="*", default=[], help="also measure the EMA at these checkpoint steps")
    p.add_argument("--prompts", type=Path, default=PROMPTS)
    args = p.parse_args()
    if args.steps and not all((args.work / f"cache_{s}.safetensors").is_file() for s in ("train", "val")):
        raise SystemExit(f"{args.work}: no latent caches; run python scripts/train_default_v2.py --stage cache first")
    if any(s % 150 or not 0 < s < args.steps for s in args.at):
        raise SystemExit(f"--at: checkpoint steps are multiples of 150 below --steps ({args.steps}), got {args.at}")
    config = arm_config(args.fusion, args.options, args.alignment)
    folders = []
    if args.steps == 0:
        folders.append(export(fresh_state(config, args.start), config, args.out / "model_0"))
    else:
        try:
            train(args, args.out)
        except subprocess.CalledProcessError as exc:  # the trainer printed its own one-line error
            raise SystemExit(f"error: training failed (exit status {exc.returncode}; its output is above)") from None
        for step in [*args.at, None]:
            name = f"model_{step or args.steps}"
            folders.append(export(ema_state(args.out, step), config, args.out / name))
    for folder in folders:
        cmd = [sys.executable, str(REPO / "scripts" / "model_card_metrics.py"), "--model", str(folder), "--prompts",
               str(args.prompts), "--io-clips", "0", "--threads", "2", "--json", f"{folder}.json"]  # fmt: skip
        with open(f"{folder}.log", "w") as log:
            subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
        print(f"measured {folder} -> {folder}.json")


if __name__ == "__main__":
    main()
