"""The `avflow` command line.

Each subcommand lives in `avflow/commands/<name>.py` and exposes `HELP` (one line),
`add_arguments(parser)` and `run(args) -> int`. Command modules and their parsers import nothing heavy (torch, PyAV,
numpy come in with `run`), so `avflow --help` and argument errors answer in well under a second
(`benchmarks/cli_startup.py` measures it). Every error is one line. Before a command runs, freed memory is set to
stay in the process heap (`avflow.heap`: fewer page faults; AVFLOW_KEEP_FREED_MEMORY=0 keeps glibc's defaults), and
idle OpenMP threads to sleep rather than spin (`avflow.threads`; OMP_WAIT_POLICY in the environment wins).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
import time
import warnings

from avflow.errors import AvflowError, Note
from avflow.heap import keep_freed_memory
from avflow.threads import wait_passively

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


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written; each option's default appended to its help unless the help states it already or
    there is none to show (None, a flag that is off)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        hidden = default is None or default is False or default is argparse.SUPPRESS  # 0 and 0.0 are shown
        if "default" in text or hidden or not action.option_strings:
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else "%(default)s"
        return f"{text} (default: {shown})" if text else f"default: {shown}"


class Parser(argparse.ArgumentParser):
    """Argument errors in one line, naming the command's --help; help with defaults (sub-commands too)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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
    parser = Parser(prog=f"avflow {name}", description=_description(module))
    module.add_arguments(parser)
    try:
        # a command whose positionals run on (`train CONFIG key=value ...`) takes its options between them too
        parse = parser.parse_intermixed_args if getattr(module, "INTERMIXED", False) else parser.parse_args
        args = parse(argv[1:])
    except SystemExit as exc:  # --help, or an argument error already printed in one line
        return int(exc.code or 0)
    rank = torchrun_rank()
    restore = _stop_at_once_on_ctrl_c() if torchrun_world_size() > 1 else None
    try:
        wait_passively()  # idle OpenMP threads sleep rather than spin (avflow/threads.py), set before torch loads
        keep_freed_memory()  # freed tensors' pages reused, not faulted in again (avflow/heap.py)
        with warnings.catch_warnings():  # restores the warnings' printer afterwards
            warnings.showwarning = _note_printer(name, warnings.showwarning, rank)
            return int(module.run(args) or 0)
    except AvflowError as exc:
        # the same on every rank (its settings, a file rank 0 read for all): rank 0 says it once; else it may be
        # this rank's own (its data, its device): the rank that hit it says it, named
        if rank == 0 or not exc.every_rank:
            print(f"avflow {name}: error: {'' if exc.every_rank else rank_prefix(rank)}{exc}", file=sys.stderr)
        elif torchrun_world_size() > 1:  # torchrun stops every rank once one exits: give rank 0 time to say it
            time.sleep(EVERY_RANK_GRACE_S)
        return 2
    except BrokenPipeError:  # the reader of the output went away (`avflow info clip.mp4 | head -3`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's last flush at exit finds no pipe
        return 141  # as a command stopped by SIGPIPE
    except OSError as exc:  # a disk that is full, a folder that cannot be written
        print(f"avflow {name}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if torchrun_world_size() > 1:
            _exit_interrupted()
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if restore is not None:
            restore()


def torchrun_world_size() -> int:
    """The number of processes torchrun started (its WORLD_SIZE variable), 1 outside it."""
    world = os.environ.get("WORLD_SIZE", "1")
    return int(world) if world.isdigit() else 1


def _exit_interrupted() -> None:
    """Ctrl-C under torchrun: say `interrupted` and end this process at once. Nothing is torn down: DDP's reducer
    and the process group, freed as Python unwinds, wait on peers that may be blocked in a collective (a rank hung
    30 s, until torchrun killed it, 1 run in 3); and nothing needs saving, since checkpoints are written atomically
    (a manifest after each, one cut short is skipped on resume)."""
    try:
        print("interrupted", file=sys.stderr, flush=True)
        sys.stdout.flush()
    finally:
        os._exit(130)


def _stop_at_once_on_ctrl_c():
    """Under torchrun, SIGINT ends the process through `_exit_interrupted` rather than as a KeyboardInterrupt that
    unwinds (set from the main thread only, where Python runs signal handlers; a forked child, e.g. a data loader's
    worker, gets the KeyboardInterrupt it handles); a function that puts the previous handler back, or None."""
    if threading.current_thread() is not threading.main_thread():
        return None
    pid = os.getpid()

    def handle(signum, frame):
        if os.getpid() != pid:
            raise KeyboardInterrupt
        _exit_interrupted()

    previous = signal.signal(signal.SIGINT, handle)
    return lambda: signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)


EVERY_RANK_GRACE_S = 5.0  # a rank other than 0 that meets an every-rank error waits this long before it exits


def torchrun_rank() -> int:
    """This process's rank under torchrun (its RANK variable), 0 outside it. Read here without torch, which
    `avflow --help` and argument errors never import."""
    rank = os.environ.get("RANK", "0")
    return int(rank) if rank.isdigit() else 0


def rank_prefix(rank: int) -> str:
    """"[rank N] " for a process other than rank 0 (whose lines read as a single process's)."""
    return f"[rank {rank}] " if rank else ""


def _note_printer(name: str, show, rank: int = 0):
    """`warnings.showwarning` that prints a `Note` (input handled rather than refused: a damaged packet skipped, the
    network taken from a training checkpoint) as one line, "avflow COMMAND: note: ...", on rank 0 only under
    torchrun (every rank resumes the same checkpoint; one says how); other warnings as Python prints them."""

    def printer(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, Note):
            if rank == 0:
                print(f"avflow {name}: note: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    return printer


def _description(module) -> str:
    """The command's one-line HELP, then the rest of its module docstring (what it writes, what it checks)."""
    doc = (module.__doc__ or "").strip().split("\n\n", 1)
    return module.HELP + ("\n\n" + doc[1] if len(doc) > 1 else "")


if __name__ == "__main__":
    sys.exit(main())
