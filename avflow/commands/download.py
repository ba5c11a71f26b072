"""`avflow download MODEL`: fetch, verify and convert the weights a model needs."""

from __future__ import annotations

import argparse
from pathlib import Path

from avflow import hub

HELP = "download, verify (MD5/SHA) and convert to safetensors the weights a model needs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", choices=sorted(hub.MODELS), help="model to fetch")
    parser.add_argument("--list", action="store_true", help="list models, their files and what is cached")
    parser.add_argument("--from", dest="source", type=Path, default=None, metavar="DIR",
                        help="take the files from this folder where they are there (an MMAudio checkout's weights/ "
                             "and ext_weights/, a Hugging Face cache), MD5-checked as downloads are; download the "
                             "rest")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    if args.list or args.model is None:
        for name, stems in hub.MODELS.items():
            print(name)
            for stem in stems:
                print(f"  {hub.ASSETS[stem].name:<40} {hub.cache_state(hub.ASSETS[stem])}")
        print(f"cache: {hub.home()}")
        return 0
    if args.source is not None and not args.source.is_dir():
        from avflow.errors import ConfigError

        raise ConfigError(f"--from {args.source}: " + ("is a file; give the folder that holds the weights"
                                                       if args.source.exists() else "no such folder"))  # fmt: skip

    from avflow.commands.options import check_folder

    check_folder(hub.home(), "the weight cache (AVFLOW_HOME)")  # before any file is checked or fetched

    def report(stem: str, path: Path, how: str) -> None:
        print(f"{stem:<32} {path}" + (f" ({how})" if how else ""))

    hub.fetch_model(args.model, allow_download=True, local=args.source, report=report)
    print(f"{args.model}: ready (works offline from now on)")
    return 0
