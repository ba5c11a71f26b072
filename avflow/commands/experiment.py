"""`avflow experiment NAME`: train every arm of a controlled experiment on the world, evaluate, tabulate."""

from __future__ import annotations

import argparse

HELP = "run a controlled experiment (experiments/NAME.yaml): train arms x seeds, evaluate, write tables + plot"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="experiment name (t2v_vs_joint, fusion, alignment, guidance) or a YAML path")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per arm (default: the experiment's, 3)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per run (default: the size's)")
    parser.add_argument("--size", choices=["tiny", "small"], default="tiny", help="world and model size")
    parser.add_argument("--out", default=None, help="output folder (default: runs/experiments/NAME_SIZE)")
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu", help="where the runs train")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from avflow.errors import ConfigError
    from avflow.experiments.configs import get_size, load_experiment
    from avflow.experiments.runner import run_experiment

    exp = load_experiment(args.name)
    size = get_size(args.size)
    seeds = args.seeds or exp.seeds
    steps = args.steps or size.steps
    if seeds < 1 or steps < 1:
        raise ConfigError("--seeds and --steps must be >= 1")
    out = Path(args.out or f"runs/experiments/{exp.name}_{args.size}")
    result = run_experiment(exp, args.size, size, out, seeds, steps, args.device, args.threads)
    print((out / "results.md").read_text())
    print(f"wrote {out / 'results.md'}, {out / 'results.json'}, {out / 'results.png'} ({result['seconds']:.0f} s)")
    return 0
