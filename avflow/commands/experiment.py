"""`avflow experiment NAME`: train every arm of a controlled experiment on the world, evaluate, tabulate."""

from __future__ import annotations

import argparse
from pathlib import Path

from avflow.commands.options import check_folder, resolve_device

HELP = "run a controlled experiment (a shipped name or a YAML file): train arms x seeds, evaluate, write tables + plot"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from avflow import assets_dir

    shipped = ", ".join(sorted(p.stem for p in (assets_dir() / "experiments").glob("*.yaml")))
    parser.add_argument("name", help=f"a shipped experiment's name ({shipped}) or a YAML path")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per arm (default: the experiment's, 3)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per run (default: the size's)")
    parser.add_argument(
        "--size", choices=["tiny", "small"], default="tiny", help="world and model size (training; not with --model)"
    )
    parser.add_argument(
        "--out",
        default=None,
        help="output folder (default: runs/experiments/NAME_SIZE; with --model: NAME_model_M, M being 'default' or "
        "the model folder's name, e.g. guidance_model_default; NAME_models_A+B for several); a rerun there reuses the "
        "results made with the same settings and refuses those made with others",
    )
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu", help="where the runs train")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    parser.add_argument(
        "--model",
        nargs="+",
        default=None,
        help="run a guidance-only experiment on trained models instead of training: 'default' (the shipped default "
        "model), model folders or training run folders of the joint model (avflow train's out_dir); one model: seeds "
        "are sampling seeds; several (training seeds of one recipe): each "
        "is one seed",
    )
    parser.add_argument(
        "--prompts",
        default=None,
        help="with --model: the held-out prompt file (JSON: prompts with id, prompt, seed); every prompt must be "
        "world-style, naming a world object by a colour and a shape word ('a red ball bounces twice on the left'), "
        "since the guidance targets score only those; configs/NAME.json also names a shipped one, e.g. "
        "configs/bench_prompts.json (default: the shipped model_card_prompts.json)",
    )
    parser.add_argument(
        "--nfe",
        type=int,
        default=None,
        help="with --model: model evaluations per sample, every guidance branch and solver stage counted; at least "
        "one step of each arm (e.g. 6 for modality_text_cfg with the midpoint solver) (default: 2 x the model's "
        "steps x its solver's evaluations per step)",
    )
    parser.add_argument(
        "--solver",
        default=None,
        help="with --model: the fixed-step solver of every arm, euler, heun or midpoint (default: the model's)",
    )


def run(args: argparse.Namespace) -> int:
    from avflow.errors import ConfigError
    from avflow.experiments.configs import get_size, load_experiment
    from avflow.experiments.runner import run_experiment
    from avflow.train.distributed import env_ranks

    if env_ranks()[1] > 1:  # every process would run every arm and write the same results
        raise ConfigError("avflow experiment runs in one process (its arms train one after the other, with "
                          "--threads); run it without torchrun")  # fmt: skip
    for flag, value in (("--seeds", args.seeds), ("--steps", args.steps), ("--threads", args.threads)):
        if value is not None and value < 1:  # 0 was taken as "not given" (the default) or as one thread
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    exp = load_experiment(args.name)
    seeds = exp.seeds if args.seeds is None else args.seeds
    if args.model is None:
        if args.prompts is not None or args.nfe is not None or args.solver is not None:
            raise ConfigError("--prompts, --nfe and --solver go with --model (guidance on a trained model)")
        size = get_size(args.size)
        steps = size.steps if args.steps is None else args.steps
        out = check_folder(args.out or f"runs/experiments/{exp.name}_{args.size}", "--out")
        device = resolve_device(args.device)  # no GPU is an error now, not after the world data was made
        result = run_experiment(exp, args.size, size, out, seeds, steps, device, args.threads)
    else:
        result, out = run_trained(args, exp, seeds)
    print((out / "results.md").read_text())
    print(f"wrote {out / 'results.md'}, {out / 'results.json'}, {out / 'results.png'} ({result['seconds']:.0f} s)")
    return 0


def default_prompts() -> Path:
    """The held-out prompts of the model card, shipped in the package (configs/model_card_prompts.json)."""
    from avflow import assets_dir

    return assets_dir() / "configs" / "model_card_prompts.json"


def run_trained(args, exp, seeds: int):
    """`--model`: the experiment's guidance arms on one trained model, no training."""
    import torch

    from avflow.errors import ConfigError
    from avflow.experiments.trained import read_prompt_rows, resolve_prompts, run_on_model, run_on_models

    if args.steps is not None or args.device != "cpu":
        raise ConfigError("--steps and --device do not apply with --model (no training; the model samples on the CPU)")
    if args.size != "tiny":  # the world and model size of training runs: a trained model has its own
        raise ConfigError(f"--size {args.size} does not apply with --model (no training; the model has its own size)")
    if len(args.model) > 1 and args.seeds is not None:
        raise ConfigError("--seeds goes with one --model (sampling seeds); several models are one seed each")
    try:  # a missing file or a prompt the targets cannot score is an error now, not after the model sampled
        prompts = default_prompts() if args.prompts is None else resolve_prompts(args.prompts)
        read_prompt_rows(prompts)
    except ConfigError as exc:
        raise ConfigError(f"--prompts {exc}") from None
    models = [None if m == "default" else m for m in args.model]
    for model in models:
        if model is not None and not Path(model).is_dir():
            raise ConfigError(f"--model {model}: no such folder (or 'default' for the shipped model)")
    torch.set_num_threads(args.threads)
    name = "+".join("default" if m is None else Path(m).name for m in models)
    default = f"runs/experiments/{exp.name}_model{'s' if len(models) > 1 else ''}_{name}"
    out = check_folder(args.out or default, "--out")
    if len(models) > 1:
        return run_on_models(exp, models, prompts, out, args.nfe, solver=args.solver), out
    return run_on_model(exp, models[0], prompts, out, seeds, args.nfe, solver=args.solver), out
