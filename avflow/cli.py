"""The `avflow` command line.

Each subcommand lives in `avflow/commands/<name>.py` and exposes `HELP` (one line),
`add_arguments(parser)` and `run(args) -> int`. Modules are imported only when their
command runs, so `avflow --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from avflow.errors import AvflowError

# name -> module implementing it
COMMANDS: dict[str, str] = {
    "info": "avflow.commands.info",
    "download": "avflow.commands.download",
    "train": "avflow.commands.train",
    "world": "avflow.commands.world",
    "eval": "avflow.commands.eval",
    "generate": "avflow.commands.generate",
    "demo": "avflow.commands.demo",
    "cache": "avflow.commands.cache",
    "ui": "avflow.commands.ui",
    "foley": "avflow.commands.foley",
    "t2a": "avflow.commands.t2a",
    "i2a": "avflow.commands.i2a",
    "experiment": "avflow.commands.experiment",
    "binaural": "avflow.commands.binaural",
}


def _top_parser() -> argparse.ArgumentParser:
    lines = []
    for name, module in COMMANDS.items():
        lines.append(f"  {name:<12} {importlib.import_module(module).HELP}")
    parser = argparse.ArgumentParser(
        prog="avflow",
        description="Synchronized audio-visual generation with flow matching.",
        epilog="commands:\n" + "\n".join(lines) + "\n\nRun `avflow COMMAND --help` for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("command", nargs="?", help="one of the commands below")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser = _top_parser()
        if argv and argv[0] == "--version":
            from avflow import __version__

            print(__version__)
            return 0
        if argv and argv[0] not in ("-h", "--help"):
            parser.print_usage(sys.stderr)
            print(f"avflow: error: unknown command {argv[0]!r} (choose from {', '.join(COMMANDS)})", file=sys.stderr)
            return 2
        parser.print_help()
        return 0
    name = argv[0]
    module = importlib.import_module(COMMANDS[name])
    parser = argparse.ArgumentParser(prog=f"avflow {name}", description=module.HELP)
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except AvflowError as exc:
        print(f"avflow {name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
