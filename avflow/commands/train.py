"""`avflow train CONFIG.yaml [key=value ...]`: one process, or one rank under torchrun."""

from __future__ import annotations

import argparse
import sys

HELP = "train a model from a YAML config (works as is under torchrun --nproc_per_node=N)"
INTERMIXED = True  # `avflow train CONFIG --print-config optim.lr=1e-3`: options anywhere among the overrides


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML file mapping onto avflow.train.config.TrainConfig")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. optim.lr=3e-4")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def run(args: argparse.Namespace) -> int:
    from avflow.config import dump_yaml
    from avflow.train.config import load_train_config

    config = load_train_config(args.config, args.overrides)  # every config error surfaces here, before any work
    if args.print_config:
        print(dump_yaml(config), end="")
        return 0
    from avflow.commands.options import check_folder
    from avflow.train.distributed import env_ranks
    from avflow.train.trainer import train

    check_folder(config.out_dir, "out_dir")  # a folder it can write in, before anything is built
    result = train(config)
    if env_ranks()[0] != 0:  # under torchrun every rank has the same result: rank 0 reports it
        return 130 if result.interrupted else 0
    if result.interrupted:
        print(f"stopped at step {result.step} of {config.train.steps} and saved it ({result.checkpoint}); the same "
              "command goes on from there", file=sys.stderr)  # fmt: skip
        return 130
    if result.loss is None:
        print(f"{config.out_dir}: already trained to step {result.step} (train.steps {config.train.steps}); nothing "
              "to do (a larger train.steps goes on)")  # fmt: skip
    elif result.checkpoint is not None:
        print(f"step {result.step}: loss {result.loss:.5f}, {result.samples_per_s:.1f} samples/s, {result.checkpoint}")
    return 0
