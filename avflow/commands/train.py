"""`avflow train CONFIG.yaml|NAME [key=value ...]`: one process, or one rank under torchrun. NAME: a training recipe
shipped in the package (avflow/assets/configs), e.g. `toy` or `codecs/world_audio`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "train a model from a YAML config or a shipped recipe's name (works as is under torchrun --nproc_per_node=N)"
INTERMIXED = True  # `avflow train CONFIG --print-config optim.lr=1e-3`: options anywhere among the overrides


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config",
        help="YAML file mapping onto avflow.train.config.TrainConfig, or the name of a recipe shipped with avflow "
        "(toy, mmaudio_finetune, codecs/world_audio, ...; configs/toy.yaml also names the shipped toy where no such "
        "file exists); an existing file always wins",
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. optim.lr=3e-4")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def run(args: argparse.Namespace) -> int:
    from avflow.train.config import load_train_config

    path = resolve_config(args.config)  # an existing file, or a shipped recipe's name
    if args.print_config:
        return print_config(path, args.overrides)
    config = load_train_config(path, args.overrides)  # every config error surfaces here, before any work
    from avflow.commands.options import check_folder
    from avflow.errors import OutputError, on_every_rank
    from avflow.train.distributed import env_ranks
    from avflow.train.sampler import check_batch_split
    from avflow.train.trainer import train

    check_batch_split(config.train.batch_size, config.train.grad_accum, env_ranks()[1])
    try:
        check_folder(config.out_dir, "out_dir")  # a folder it can write in, before anything is built
    except OutputError as exc:  # every rank is given the same folder: rank 0 says it once
        raise on_every_rank(exc) from None
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


def print_config(path, overrides: list[str]) -> int:
    """Print the resolved config. One that names a file or folder not on this machine (e.g. a recipe whose data are
    not here yet: what a user runs --print-config to find out) is printed as written, the overrides applied, and its
    one-line error follows (exit 2), so the keys to override are on the page; any other error is that line alone."""
    from avflow.config import apply_overrides, dump_yaml, read_yaml
    from avflow.errors import ConfigError, MissingPathError
    from avflow.train.config import load_train_config
    from avflow.train.distributed import env_ranks

    if env_ranks()[0] != 0:  # under torchrun every rank resolves the same config: rank 0 prints it (and its error)
        load_train_config(path, overrides)
        return 0
    try:
        config = load_train_config(path, overrides)
    except MissingPathError:
        try:
            written = as_yaml_values(apply_overrides(read_yaml(path), list(overrides)))
        except ConfigError:
            written = None
        if written is not None:
            print(f"# as written ({path}, overrides applied): it does not resolve, see the error below")
            print(dump_yaml(written), end="")
        raise
    print(dump_yaml(config), end="")
    return 0


def as_yaml_values(data):
    """`data` with each command-line value (`train.steps=5`, kept as text until its field types it) replaced by
    the YAML value it reads as (5, a list, a mapping), so that the config printed as written loads back the same;
    an empty value and text that is not valid YAML stay text, as the typed load reads them."""
    from avflow.config import CliValue, parse_yaml
    from avflow.errors import ConfigError

    if isinstance(data, dict):
        return {k: as_yaml_values(v) for k, v in data.items()}
    if isinstance(data, list):
        return [as_yaml_values(v) for v in data]
    if not isinstance(data, CliValue) or not data.strip():
        return data
    try:
        return parse_yaml(str(data))
    except ConfigError:
        return data


def shipped_recipes() -> list[str]:
    """The training recipes shipped in the package (avflow/assets/configs) by name: `toy`, `codecs/world_audio`, ..."""
    from avflow import assets_dir

    root = assets_dir() / "configs"
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml"))


def resolve_config(config: str) -> Path:
    """`avflow train`'s CONFIG: an existing file as is; else a shipped recipe by name (`toy`, `toy.yaml`,
    `codecs/world_audio`, or the source repository's `configs/toy.yaml` run from anywhere); else a one-line
    ConfigError naming the shipped recipes."""
    import difflib

    from avflow import assets_dir
    from avflow.errors import ConfigError

    path = Path(config)
    if path.is_file():
        return path
    names = shipped_recipes()
    name = path.as_posix().removeprefix("configs/").removesuffix(".yaml")
    if name in names:
        return assets_dir() / "configs" / f"{name}.yaml"
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    groups: dict[str, list[str]] = {}  # folder ('' at the top) -> its recipes, so the one line stays short
    for n in names:
        folder, _, stem = n.rpartition("/")
        groups.setdefault(folder, []).append(stem)
    shipped = ", ".join([*groups.pop("", []), *(f"{len(stems)} under {f}/" for f, stems in groups.items())])
    what = "a folder, not a config file" if path.is_dir() else "no such config file"  # a recipe's name wins
    raise ConfigError(f"{config}: {what}, nor a shipped recipe ({hint}shipped: {shipped})")
