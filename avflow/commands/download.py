"""`avflow download MODEL`: fetch, verify and convert the weights a model needs."""

from __future__ import annotations

import argparse

from avflow import hub

HELP = "download, verify (MD5/SHA) and convert to safetensors the weights a model needs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", choices=sorted(hub.MODELS), help="model to fetch")
    parser.add_argument("--list", action="store_true", help="list models, their files and what is cached")


def run(args: argparse.Namespace) -> int:
    if args.list or args.model is None:
        for name, stems in hub.MODELS.items():
            print(name)
            for stem in stems:
                state = "cached" if hub.converted_path(hub.ASSETS[stem]).exists() else "missing"
                print(f"  {hub.ASSETS[stem].name:<40} {state}")
        print(f"cache: {hub.home()}")
        return 0
    paths = hub.fetch_model(args.model, allow_download=True)
    for stem, path in paths.items():
        print(f"{stem:<32} {path}")
    print(f"{args.model}: ready (works offline from now on)")
    return 0
